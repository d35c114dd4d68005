"""Coqui XTTS-v2 speech (package coqui-tts, ``import TTS``), in the voice cloned from a persona's sample.

The speaker conditioning (GPT latents + speaker embedding) is computed once per persona by
``prepare_voice`` and cached; requests only run the GPT and the HiFi-GAN decoder. ``stream`` exposes
XTTS's streaming inference: audio arrives in chunks while the GPT is still generating.

XTTS-v2 weights are released under the Coqui Public Model License 1.0.0: non-commercial use only.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatar.backends import torch_thread
from avatar.backends.device import resolve_device
from avatar.catalog import check_files, resolve_model_dir
from avatar.errors import ConfigError, InvalidAudioError, ModelError
from avatar.media import decode_audio, normalize_loudness
from avatar.types import AudioArray, VoiceSpec

log = logging.getLogger(__name__)

REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")
CONDITIONING_RATE = 22_050  # XTTS computes its latents from 22.05 kHz audio
SENTENCE_GAP_SECONDS = 0.15
MIN_SAMPLE_SECONDS = 1.0
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")


@dataclass(frozen=True)
class XttsOptions:
    """``stream_chunk_size``: GPT tokens per streamed chunk (20 ≈ 0.9 s of audio; smaller starts sooner)."""

    device: str = "auto"
    threads: int = 2
    stream_chunk_size: int = 20


@dataclass(frozen=True)
class SpeakerConditioning:
    """What XTTS needs to speak in one voice, computed once."""

    gpt_latents: Any  # torch.Tensor (1, T, d)
    speaker_embedding: Any  # torch.Tensor (1, 512, 1)
    source: str  # the sample file (with its size and mtime) or the built-in speaker's name


class XttsSynthesizer:
    """XTTS-v2 loaded once. Voices are prepared (cloned) per persona and cached by ``VoiceSpec.key``.

    On the CPU every torch call runs on the process's torch thread (see ``torch_thread``).
    """

    sample_rate = 24_000

    def __init__(self, model_dir: Path, device: str = "auto", *, options: XttsOptions | None = None) -> None:
        options = options or XttsOptions(device=device)
        model_dir = resolve_model_dir(model_dir)
        check_files(model_dir, REQUIRED_FILES, "Coqui XTTS-v2 model")
        xtts_config_cls, xtts_cls = _import_coqui()
        import torch

        self._torch = torch
        self.options = options
        self.device = resolve_device(options.device, "AVATAR_TTS_DEVICE")
        self.name = f"xtts:{model_dir.name}"
        self._config, self._model = torch_thread.run_for(self.device, self._load, model_dir, xtts_config_cls, xtts_cls)
        self.languages: tuple[str, ...] = tuple(self._config.languages)
        self._voices: dict[str, SpeakerConditioning] = {}
        self._lock = threading.Lock()
        self.conditioning_runs = 0  # how many times speaker conditioning was computed (cache misses)

    def _load(self, model_dir: Path, config_cls: Any, model_cls: Any) -> tuple[Any, Any]:
        if self.device == "cpu":
            self._torch.set_num_threads(self.options.threads)  # OpenMP's setting is per thread: set it here
        try:
            config = config_cls()
            config.load_json(str(model_dir / "config.json"))
            model = model_cls(config)
            model.load_checkpoint(config, checkpoint_dir=str(model_dir), eval=True, use_deepspeed=False)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise ModelError(f"Coqui TTS could not load XTTS from {model_dir}: {exc}") from exc
        return config, model.to(self.device)

    # ---------------------------------------------------------------------------------- voices

    @property
    def prepared_voices(self) -> tuple[str, ...]:
        return tuple(self._voices)

    @property
    def builtin_speakers(self) -> tuple[str, ...]:
        manager = getattr(self._model, "speaker_manager", None)
        return tuple(manager.speakers) if manager is not None else ()

    def prepare_voice(self, voice: VoiceSpec) -> None:
        """Compute and cache the voice's speaker conditioning; a second call for the same voice (same
        sample file, unchanged) does nothing. Call it for every persona at start-up."""
        self.language_code(voice.language)  # a persona in an unsupported language fails at start-up
        torch_thread.run_for(self.device, self._prepare_voice, voice, self._source(voice))

    def _prepare_voice(self, voice: VoiceSpec, source: str) -> None:
        with self._lock:
            cached = self._voices.get(voice.key)
            if cached is not None and cached.source == source:
                return
            self._voices[voice.key] = self._condition(voice, source)
            self.conditioning_runs += 1

    def _voice(self, voice: VoiceSpec) -> SpeakerConditioning:
        cached = self._voices.get(voice.key)
        if cached is None:  # a persona added after start-up: clone it once, now
            log.warning("voice %r was not prepared at start-up; preparing it now", voice.key)
            self.prepare_voice(voice)
            cached = self._voices[voice.key]
        return cached

    def _source(self, voice: VoiceSpec) -> str:
        if voice.sample:
            path = Path(voice.sample)
            try:
                stat = path.stat()
            except OSError:
                raise ConfigError(f"Persona {voice.key!r}: voice sample {path} does not exist.") from None
            return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if voice.voice and voice.voice in self.builtin_speakers:
            return f"speaker:{voice.voice}"
        known = ", ".join(self.builtin_speakers[:5]) or "none in this model"
        raise ConfigError(
            f'Persona {voice.key!r} has no voice sample for XTTS to clone. Add voice_sample = "voice.wav" '
            f"(6-30 s of clean speech) to its persona.toml, or name a built-in XTTS speaker ({known}, ...)."
        )

    def _condition(self, voice: VoiceSpec, source: str) -> SpeakerConditioning:
        if source.startswith("speaker:"):
            stored = self._model.speaker_manager.speakers[voice.voice]
            return SpeakerConditioning(stored["gpt_cond_latent"], stored["speaker_embedding"], source)
        assert voice.sample is not None
        config = self._config
        try:
            audio = decode_audio(voice.sample, CONDITIONING_RATE, max_seconds=None)
        except InvalidAudioError as exc:
            raise ConfigError(
                f"Persona {voice.key!r}: voice sample {voice.sample} cannot be read: {exc.message}"
            ) from exc
        audio = audio[: int(config.max_ref_len * CONDITIONING_RATE)]
        if audio.size < MIN_SAMPLE_SECONDS * CONDITIONING_RATE:
            raise ConfigError(
                f"Persona {voice.key!r}: voice sample {voice.sample} is {audio.size / CONDITIONING_RATE:.1f} s long; "
                "XTTS needs at least 1 s (6-30 s of clean speech clones best)."
            )
        if config.sound_norm_refs:
            audio = audio / max(float(np.abs(audio).max()), 1e-6) * 0.75
        wav = self._torch.from_numpy(np.ascontiguousarray(audio))[None].to(self.device)
        with self._torch.inference_mode():
            latents = self._model.get_gpt_cond_latents(
                wav, CONDITIONING_RATE, length=config.gpt_cond_len, chunk_length=config.gpt_cond_chunk_len
            )
            embedding = self._model.get_speaker_embedding(wav, CONDITIONING_RATE)
        return SpeakerConditioning(latents, embedding, source)

    def language_code(self, language: str) -> str:
        """XTTS's code for a persona language ('en-US' → 'en', 'zh' → 'zh-cn'); ConfigError if unsupported."""
        code = language.lower().replace("_", "-")
        code = "zh-cn" if code.split("-")[0] == "zh" else code.split("-")[0]
        if code not in self.languages:
            raise ConfigError(f"XTTS does not speak {language!r}; it speaks {', '.join(self.languages)}.")
        return code

    # ---------------------------------------------------------------------------------- speech

    def _sampling(self, voice: VoiceSpec) -> dict[str, Any]:
        c = self._config
        return {
            "temperature": c.temperature,
            "length_penalty": c.length_penalty,
            "repetition_penalty": c.repetition_penalty,
            "top_k": c.top_k,
            "top_p": c.top_p,
            "speed": voice.speed,
        }

    def synthesize(self, text: str, voice: VoiceSpec) -> AudioArray:
        """Speak ``text`` at 24 kHz, sentence by sentence, with short pauses between sentences."""
        return torch_thread.run_for(self.device, self._synthesize, text, voice)

    def _synthesize(self, text: str, voice: VoiceSpec) -> AudioArray:
        conditioning = self._voice(voice)
        language = self.language_code(voice.language)
        gap = np.zeros(int(SENTENCE_GAP_SECONDS * self.sample_rate), np.float32)
        parts: list[AudioArray] = []
        for piece in self.split_text(text, language):
            try:
                out = self._model.inference(
                    piece, language, conditioning.gpt_latents, conditioning.speaker_embedding, **self._sampling(voice)
                )
            except Exception as exc:
                raise ModelError(f"XTTS failed to speak {piece[:40]!r}: {exc}") from exc
            parts.extend([np.asarray(out["wav"], dtype=np.float32).reshape(-1), gap])
        if not parts:
            return np.zeros(0, np.float32)
        return normalize_loudness(np.concatenate([gap, *parts]))

    def stream(self, text: str, voice: VoiceSpec) -> Iterator[AudioArray]:
        """Speak ``text`` as 24 kHz chunks, yielded while the GPT is still generating the rest. Closing
        the iterator stops generation. Chunks are not loudness-normalised (the level is not known ahead)."""
        conditioning = self._voice(voice)
        language = self.language_code(voice.language)
        gap = np.zeros(int(SENTENCE_GAP_SECONDS * self.sample_rate), np.float32)
        for index, piece in enumerate(self.split_text(text, language)):
            if index:
                yield gap
            chunks = self._model.inference_stream(
                piece,
                language,
                conditioning.gpt_latents,
                conditioning.speaker_embedding,
                stream_chunk_size=self.options.stream_chunk_size,
                **self._sampling(voice),
            )
            try:
                while (chunk := torch_thread.run_for(self.device, _next_samples, chunks)) is not None:
                    yield chunk
            finally:
                torch_thread.run_for(self.device, chunks.close)

    def split_text(self, text: str, language: str) -> list[str]:
        """Sentences, each within XTTS's per-language character limit (longer ones split at commas,
        then at spaces), so no input is truncated."""
        limit = int(self._model.tokenizer.char_limits.get(language.split("-")[0], 250))
        pieces: list[str] = []
        for sentence in _SENTENCE_END.split(text.strip()):
            pieces.extend(_wrap(sentence.strip(), limit))
        return [p for p in pieces if any(ch.isalnum() for ch in p)]

    def warmup(self) -> None:
        torch_thread.run_for(self.device, self._warmup)

    def _warmup(self) -> None:
        # Runs the speaker encoder, the GPT and the decoder once, in a voice conditioned on a synthetic
        # tone (not cached: personas are prepared by prepare_voice).
        t = np.arange(2 * CONDITIONING_RATE, dtype=np.float32) / CONDITIONING_RATE
        tone = (0.1 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        wav = self._torch.from_numpy(tone)[None].to(self.device)
        with self._torch.inference_mode():
            latents = self._model.get_gpt_cond_latents(wav, CONDITIONING_RATE, length=2, chunk_length=2)
            embedding = self._model.get_speaker_embedding(wav, CONDITIONING_RATE)
            language = "en" if "en" in self.languages else self.languages[0]
            self._model.inference("Hello.", language, latents, embedding, **self._sampling(VoiceSpec("warmup")))

    def close(self) -> None:
        self._voices.clear()
        del self._model
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


def _next_samples(chunks: Iterator[Any]) -> AudioArray | None:
    """The next chunk of a streaming inference as float32 samples; None once it has ended."""
    chunk = next(chunks, None)
    return None if chunk is None else chunk.detach().cpu().numpy().astype(np.float32).reshape(-1)


def _wrap(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence] if sentence else []
    parts: list[str] = []
    for clause in re.split(r"(?<=[,;:])\s+", sentence):  # prefer breaking at a comma
        parts.extend([clause] if len(clause) <= limit else clause.split())
    out: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current} {part}".strip()
        if len(candidate) > limit and current:
            out.append(current)
            candidate = part
        current = candidate
    if current:
        out.append(current)
    return out


def _import_coqui() -> tuple[Any, Any]:
    """XttsConfig and Xtts from coqui-tts, or a ModelError saying what to install."""
    try:
        import torchaudio  # noqa: F401 - coqui-tts imports it; fail here with a clear message
    except OSError as exc:
        raise ModelError(
            "torchaudio is installed but its compiled part cannot load (PyPI's torchaudio wheels are CUDA "
            f"builds of a matching torch): {exc}. Install the torchaudio that matches your torch, or on a "
            "CPU-only machine remove torchaudio/lib/*.so (XTTS needs only its pure-Python parts); see "
            "docs/production.md."
        ) from exc
    except ImportError:
        pass  # reported below by coqui-tts's own import
    try:
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts
    except ImportError as exc:
        raise ModelError(
            f"XTTS needs coqui-tts: install the xtts extra (pip install 'avatar[xtts]'). Import failed: {exc}"
        ) from exc
    return XttsConfig, Xtts
