"""Choosing a device and a number format for a model from the 'auto' settings."""

from __future__ import annotations

from avatar.errors import ConfigError


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_device(setting: str, what: str) -> str:
    """'auto' → cuda when a GPU is visible, else cpu; 'cuda' without a GPU is a configuration error."""
    if setting == "auto":
        return "cuda" if cuda_available() else "cpu"
    if setting == "cuda" and not cuda_available():
        raise ConfigError(f"{what}=cuda, but no CUDA GPU is visible to this process. Set it to auto or cpu.")
    return setting


def whisper_compute_type(setting: str, device: str) -> str:
    """CTranslate2 compute type: float16 on CUDA, int8 on the CPU, unless set."""
    if setting != "auto":
        return setting
    return "float16" if device == "cuda" else "int8"
