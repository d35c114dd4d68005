"""The start-up GPU memory check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from avatar.catalog import GB
from avatar.config import Settings
from avatar.errors import ConfigError
from avatar.gpu import CUDA_CONTEXT_BYTES, check_gpu_memory, estimate_gpu_needs

# The production set-up of docs/production.md: every model on one 24 GB GPU.
PRODUCTION = {
    "asr_model": "whisper-large-v3-turbo",
    "llm_model": "qwen2.5-3b-instruct",
    "tts_backend": "xtts",
    "tts_model": "xtts-v2",
    "face_backend": "ditto",
}


class With:
    """Settings plus values for settings this version may not define yet (read with getattr)."""

    def __init__(self, settings: Settings, **extra: Any) -> None:
        self._settings = settings
        self._extra = extra

    def __getattr__(self, name: str) -> Any:
        return self._extra[name] if name in self._extra else getattr(self._settings, name)


def no_gpu_query() -> tuple[int, int]:
    raise AssertionError("the GPU must not be queried when no model is on it")


def gb(value: float) -> tuple[int, int]:
    return int(value * GB), int(24 * GB)


def test_nothing_on_cuda_is_a_no_op(settings: Settings):
    assert check_gpu_memory(settings, cuda_available=False, mem_get_info=no_gpu_query) == []
    on_cpu = settings.replace(asr_device="cpu", llm_device="cpu")
    assert check_gpu_memory(on_cpu, cuda_available=True, mem_get_info=no_gpu_query) == []


def test_catalog_models_are_estimated_from_the_catalog(settings: Settings):
    needs = {n.kind: n for n in estimate_gpu_needs(settings.replace(**PRODUCTION), cuda_available=True)}
    assert set(needs) == {"asr", "llm", "tts", "face"}
    assert all(n.basis == "catalog" for n in needs.values())
    assert needs["asr"].bytes == int(2.0 * GB) and needs["llm"].bytes == int(7.2 * GB)
    assert needs["tts"].bytes == int(3.0 * GB) and needs["face"].bytes == int(5.0 * GB)


def test_the_reference_setup_fits_on_a_24_gb_card(settings: Settings):
    needs = check_gpu_memory(settings.replace(**PRODUCTION), cuda_available=True, mem_get_info=lambda: gb(23.0))
    assert sum(n.bytes for n in needs) + CUDA_CONTEXT_BYTES < 20 * GB


def test_a_7b_model_in_bf16_is_refused_with_numbers_and_a_fix(settings: Settings):
    big = settings.replace(**{**PRODUCTION, "llm_model": "qwen2.5-7b-instruct"})
    with pytest.raises(ConfigError) as caught:
        check_gpu_memory(big, cuda_available=True, mem_get_info=lambda: gb(23.0))
    message = caught.value.message
    assert "need about 27.5 GB" in message and "23.0 GB free of 24.0 GB" in message
    assert "llm qwen2.5-7b-instruct 16.5 GB" in message and "AVATAR_LLM_QUANTIZATION=4bit" in message
    four_bit = With(big, llm_quantization="4bit")
    needs = check_gpu_memory(four_bit, cuda_available=True, mem_get_info=lambda: gb(23.0))
    assert next(n for n in needs if n.kind == "llm").bytes == int(5.8 * GB)


def test_models_outside_the_catalog_are_estimated_from_their_files(settings: Settings, tmp_path: Path):
    llm = tmp_path / "my-llm"
    llm.mkdir()
    (llm / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    (llm / "model.safetensors").write_bytes(b"\0" * 4_000_000)  # 1 M float32 parameters
    asr = tmp_path / "my-whisper"
    asr.mkdir()
    (asr / "model.bin").write_bytes(b"\0" * 3_000_000)
    (asr / "vocabulary.json").write_text("[]")
    custom = settings.replace(models_dir=tmp_path, llm_model="my-llm", asr_model="my-whisper", llm_device="cuda")
    needs = {n.kind: n for n in estimate_gpu_needs(custom, cuda_available=True)}
    assert needs["llm"].basis == "files" and needs["llm"].bytes == 2_000_000 + int(1.0 * GB)  # bf16 on CUDA
    assert needs["asr"].bytes == 3_000_000 + int(0.4 * GB)


def test_a_missing_model_folder_is_left_to_the_backend_to_report(settings: Settings, tmp_path: Path):
    absent = settings.replace(models_dir=tmp_path, asr_model="nothing-here", llm_model="nor-here")
    assert estimate_gpu_needs(absent, cuda_available=True) == []


@pytest.mark.gpu
def test_with_the_real_gpu(settings: Settings):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    free, _total = torch.cuda.mem_get_info()
    small = settings.replace(**{**PRODUCTION, "llm_model": "qwen2.5-1.5b-instruct"})
    if free > 20 * GB:
        assert check_gpu_memory(small)
    else:
        with pytest.raises(ConfigError, match="free of"):
            check_gpu_memory(small)
