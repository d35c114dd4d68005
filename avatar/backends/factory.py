"""Which engine serves each role, chosen by Settings. Engines are imported only when chosen."""

from __future__ import annotations

import functools
from collections.abc import Callable

from avatar.backends.faults import Fault, FaultyModel, parse_faults
from avatar.catalog import llm_backend_for
from avatar.config import Settings
from avatar.errors import ConfigError
from avatar.registry import ModelSpec
from avatar.types import Backend


def _asr(s: Settings) -> Backend:
    from avatar.backends.whisper import WhisperOptions, WhisperRecognizer

    options = WhisperOptions(
        device=s.asr_device,
        compute_type=s.asr_compute_type,
        threads=s.asr_threads or s.cpu_threads,
        vad=s.asr_vad,
        beam_size=s.asr_beam_size,
        word_timestamps=s.asr_word_timestamps,
        short_window=s.asr_short_window,
    )
    return WhisperRecognizer(s.model_path(s.asr_model), options)


def _llm(s: Settings) -> Backend:
    if llm_backend_for(s) == "llamacpp":
        if s.llm_device == "cuda":
            raise ConfigError(
                "AVATAR_LLM_DEVICE=cuda: the llama.cpp backend runs on the CPU. For a GPU use a transformers "
                "model with AVATAR_LLM_BACKEND=transformers (docs/models.md, 'Production models')."
            )
        from avatar.backends.llamacpp_llm import LlamaCppChat, LlamaCppOptions

        chat = LlamaCppChat
        if s.llamacpp_runtime == "xllamacpp":
            from avatar.backends.xllamacpp_llm import XLlamaCppChat as chat  # type: ignore[assignment]

        return chat(
            s.model_path(s.llm_model),
            LlamaCppOptions(
                threads=s.llm_threads or s.cpu_threads,
                alone_threads=s.llm_alone_threads or s.cpu_threads,
                context_tokens=s.llm_context_tokens,
                temperature=s.llm_temperature,
                seed=s.llm_seed,
                warm_system_prompt=_default_system_prompt(s),
            ),
        )
    from avatar.backends.transformers_llm import LLMOptions, TransformersChat

    options = LLMOptions(
        device=s.llm_device,
        dtype=s.llm_dtype,
        threads=s.cpu_threads,
        temperature=s.llm_temperature,
        quantization=s.llm_quantization,
    )
    return TransformersChat(s.model_path(s.llm_model), options)


def _default_system_prompt(s: Settings) -> str:
    """The default persona's prompt (the one most turns start with), or "" when it cannot be read: the
    runtime reports a bad persona folder itself."""
    from avatar.personas import load_persona
    from avatar.prompt import static_system

    try:
        return static_system(load_persona(s.assets_dir / "personas" / s.default_persona))
    except ConfigError:
        return ""


def _tts(s: Settings) -> Backend:
    if s.tts_backend == "xtts":
        from avatar.backends.xtts import XttsOptions, XttsSynthesizer

        options = XttsOptions(device=s.tts_device, threads=s.cpu_threads)
        return XttsSynthesizer(s.model_path(s.tts_model), options=options)
    from avatar.backends.embedded_voices import EmbeddedVoices
    from avatar.embedded import KOKORO

    # One thread each: Kokoro is ~50x slower than hibari, and more threads only take cores from the LLM
    # and the face, which run beside it in a streamed turn.
    return EmbeddedVoices(s.model_path(KOKORO.folder), threads=1)


def _face(s: Settings) -> Backend:
    if s.face_backend == "ditto":
        from avatar.backends.ditto import DittoAnimator

        return DittoAnimator.from_settings(s)
    from avatar.backends.face_puppet import PuppetAnimator

    # One thread: measured as fast as two (bench/PROFILE.md), and it leaves a core to the LLM while an
    # overlapped turn draws sentence k during the generation of sentence k+1.
    return PuppetAnimator(s.model_path(s.face_model), size=s.video_size, fps=s.fps, threads=1)


def model_specs(settings: Settings, kinds: tuple[str, ...] = ("asr", "llm", "tts", "face")) -> list[ModelSpec]:
    """The registry's load list for ``kinds`` (a CLI command that needs only ASR loads only ASR)."""
    builders: dict[str, tuple[str, Callable[[Settings], Backend]]] = {
        "asr": (settings.asr_backend, _asr),
        "llm": (llm_backend_for(settings), _llm),
        "tts": (settings.tts_backend, _tts),
        "face": (settings.face_backend, _face),
    }
    faults = parse_faults(settings.faults)  # a mistake in AVATAR_FAULTS stops start-up here
    return [
        ModelSpec(kind, builders[kind][0], functools.partial(_build, builders[kind][1], settings, faults.get(kind)))
        for kind in kinds
    ]


def _build(builder: Callable[[Settings], Backend], settings: Settings, fault: Fault | None) -> Backend:
    model = builder(settings)
    return model if fault is None else FaultyModel(model, fault)
