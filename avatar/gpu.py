"""Start-up check: do the models configured for the GPU fit in the GPU memory that is free?

Each model's need comes from the catalog when it is a known production model, else from the size of
its weight files (converted to the serving dtype) plus working memory. ``check_gpu_memory`` refuses
with the numbers and a fix instead of letting a request die of CUDA out-of-memory later. Call it
before loading the models; it does nothing when no model is configured for CUDA.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar.backends.device import cuda_available as _cuda_available
from avatar.catalog import GB, CatalogModel, ditto_checkpoints_dir, find, llm_backend_for, resolve_model_dir
from avatar.embedded import folder_size
from avatar.errors import ConfigError

CUDA_CONTEXT_BYTES = int(1.0 * GB)  # the CUDA contexts of torch, CTranslate2 (and TensorRT) together
MARGIN_BYTES = int(0.5 * GB)  # fragmentation and the allocator's caching
WORKING_BYTES = {"asr": 0.4 * GB, "llm": 1.0 * GB, "tts": 1.0 * GB, "face": 2.5 * GB}
BYTES_PER_PARAM = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "4bit": 0.55, "8bit": 1.05}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".engine", ".onnx")


@dataclass(frozen=True)
class GpuNeed:
    """The estimated GPU memory of one configured model."""

    kind: str
    name: str
    bytes: int
    basis: str  # "catalog" or "files"


def estimate_gpu_needs(settings: Any, *, cuda_available: bool | None = None) -> list[GpuNeed]:
    """The GPU memory each model configured for CUDA will take (models on the CPU are left out)."""
    cuda = _cuda_available() if cuda_available is None else cuda_available

    def on_cuda(setting: str) -> bool:
        return setting == "cuda" or (setting == "auto" and cuda)

    needs: list[GpuNeed | None] = []
    if on_cuda(settings.asr_device):
        needs.append(_asr_need(settings))
    if on_cuda(settings.llm_device) and llm_backend_for(settings) == "transformers":  # llama.cpp: CPU only
        needs.append(_llm_need(settings))
    if settings.tts_backend == "xtts" and on_cuda(settings.tts_device):
        needs.append(_folder_need("tts", resolve_model_dir(settings.model_path(settings.tts_model))))
    if settings.face_backend == "ditto":
        needs.append(_ditto_need(settings))
    return [need for need in needs if need is not None]


def check_gpu_memory(
    settings: Any,
    *,
    mem_get_info: Callable[[], tuple[int, int]] | None = None,
    cuda_available: bool | None = None,
) -> list[GpuNeed]:
    """Raise ConfigError when the configured GPU models need more memory than is free; return the
    estimates otherwise. ``mem_get_info`` defaults to ``torch.cuda.mem_get_info`` (free, total bytes)."""
    needs = estimate_gpu_needs(settings, cuda_available=cuda_available)
    if not needs:
        return needs
    if mem_get_info is None:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "The configuration puts models on the GPU (" + ", ".join(n.kind for n in needs) + "), but no CUDA "
                "GPU is visible. Set AVATAR_ASR_DEVICE/AVATAR_LLM_DEVICE to cpu, or use the embedded backends."
            )
        mem_get_info = torch.cuda.mem_get_info
    free, total = mem_get_info()
    wanted = sum(n.bytes for n in needs) + CUDA_CONTEXT_BYTES
    if wanted + MARGIN_BYTES <= free:
        return needs
    parts = ", ".join(f"{n.kind} {n.name} {_gb(n.bytes)}" for n in needs)
    raise ConfigError(
        f"Not enough free GPU memory for the configured models: they need about {_gb(wanted)} "
        f"({parts}, CUDA contexts {_gb(CUDA_CONTEXT_BYTES)}) plus a {_gb(MARGIN_BYTES)} margin, but the GPU "
        f"has {_gb(free)} free of {_gb(total)}. Fix: {_advice(settings, needs)}; or free the GPU from other "
        "processes (nvidia-smi). docs/production.md lists what fits in 24 GB."
    )


def _gb(value: float) -> str:
    return f"{value / GB:.1f} GB"


def _advice(settings: Any, needs: list[GpuNeed]) -> str:
    tips = []
    llm = next((n for n in needs if n.kind == "llm"), None)
    if llm is not None and llm.bytes > 8 * GB and settings.llm_quantization == "none":
        tips.append("load the LLM in 4-bit (AVATAR_LLM_QUANTIZATION=4bit, needs the gpu extra)")
    if llm is not None:
        tips.append("use a smaller LLM (AVATAR_LLM_MODEL=qwen2.5-1.5b-instruct)")
    if any(n.kind == "asr" for n in needs):
        tips.append("run speech recognition on the CPU (AVATAR_ASR_DEVICE=cpu)")
    return "; ".join(tips) or "use the embedded CPU backends (AVATAR_TTS_BACKEND=hibari, AVATAR_FACE_BACKEND=puppet)"


def _catalog_need(kind: str, model: CatalogModel, *, quantization: str = "none") -> GpuNeed:
    gb = model.gpu_gb_4bit if quantization == "4bit" and model.gpu_gb_4bit else model.gpu_gb
    if quantization == "8bit" and model.gpu_gb_4bit:
        gb = (model.gpu_gb + model.gpu_gb_4bit) / 2
    return GpuNeed(kind, model.name, int(gb * GB), "catalog")


def _asr_need(settings: Any) -> GpuNeed | None:
    return _folder_need("asr", resolve_model_dir(settings.model_path(settings.asr_model)))


def _folder_need(kind: str, folder: Path) -> GpuNeed | None:
    model = find(folder.name)
    if model is not None and model.kind == kind:
        return _catalog_need(kind, model)
    weights = _weight_bytes(folder)
    if not weights:
        return None  # nothing there: the backend's own start-up check names the missing files
    return GpuNeed(kind, folder.name, int(weights + WORKING_BYTES[kind]), "files")


def _llm_need(settings: Any) -> GpuNeed | None:
    folder = resolve_model_dir(settings.model_path(settings.llm_model))
    quantization = settings.llm_quantization
    model = find(folder.name)
    if model is not None and model.kind == "llm":
        return _catalog_need("llm", model, quantization=quantization)
    weights = _weight_bytes(folder)
    if not weights:
        return None
    stored = BYTES_PER_PARAM.get(_stored_dtype(folder), 2.0)
    target_name = quantization if quantization != "none" else settings.llm_dtype
    target = BYTES_PER_PARAM.get(target_name, 2.0)  # 'auto' on CUDA is bf16/fp16
    return GpuNeed("llm", folder.name, int(weights / stored * target + WORKING_BYTES["llm"]), "files")


def _ditto_need(settings: Any) -> GpuNeed | None:
    engine = settings.ditto_engine
    model = find("ditto-talkinghead-pytorch" if engine == "pytorch" else "ditto-talkinghead")
    data_root = settings.ditto_data_root
    if not data_root and model is not None:
        return _catalog_need("face", model)
    folder = ditto_checkpoints_dir(settings) / data_root
    weights = _weight_bytes(folder)
    return GpuNeed("face", f"ditto:{folder.name}", int(weights + WORKING_BYTES["face"]), "files") if weights else None


def _weight_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    is_ctranslate2 = any((folder / name).is_file() for name in ("vocabulary.json", "vocabulary.txt"))
    if is_ctranslate2 and (folder / "model.bin").is_file():
        return folder_size(folder / "model.bin")  # CTranslate2
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def _stored_dtype(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return "bfloat16"
    return str(config.get("dtype") or config.get("torch_dtype") or "bfloat16")
