"""The embedded speech synthesiser: hibari (a Kokoro-82M-distilled English voice, int8 ONNX)."""

from __future__ import annotations

import numpy as np

from avatar.errors import ConfigError, ModelError
from avatar.media import normalize_loudness
from avatar.types import AudioArray, VoiceSpec

SENTENCE_GAP_SECONDS = 0.18
EDGE_SILENCE_SECONDS = 0.12


class HibariSynthesizer:
    """hibari loaded once. Only its bundled voice works offline; others are refused at start-up."""

    sample_rate = 24_000

    def __init__(self, *, threads: int = 1, voice: str = "heart", seed: int = 0) -> None:
        try:
            from hibari import Hibari
            from hibari.voices import VOICES
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ModelError("hibari-tts is not installed; run `make install`.") from exc
        self._voices = VOICES
        self._check_voice(voice)
        self.voice = voice
        self.name = f"hibari:{voice}"
        self.seed = seed
        self._tts = Hibari(voice=voice, threads=threads)

    def _check_voice(self, voice: str) -> None:
        if voice not in self._voices:
            raise ConfigError(f"hibari has no voice {voice!r}; its voices are {', '.join(self._voices)}.")
        if not self._voices[voice].get("bundled"):
            raise ConfigError(
                f"hibari voice {voice!r} is downloaded on first use and this server loads nothing at run time; "
                f"use the bundled voice 'heart' (persona.toml: voice = \"heart\")."
            )

    def prepare_voice(self, voice: VoiceSpec) -> None:
        if voice.voice and voice.voice != self.voice:
            raise ConfigError(
                f"Persona {voice.key!r} asks for hibari voice {voice.voice!r}, but the loaded voice is "
                f"{self.voice!r}. Set the persona's voice to {self.voice!r}."
            )

    def synthesize(self, text: str, voice: VoiceSpec) -> AudioArray:
        gap = np.zeros(int(SENTENCE_GAP_SECONDS * self.sample_rate), np.float32)
        edge = np.zeros(int(EDGE_SILENCE_SECONDS * self.sample_rate), np.float32)
        parts: list[AudioArray] = [edge]
        for sentence in self._tts.stream(text, speed=voice.speed, seed=self.seed):
            if sentence.size:
                parts.extend([sentence.astype(np.float32), gap])
        if len(parts) == 1:
            return np.zeros(0, np.float32)
        parts[-1] = edge
        return normalize_loudness(np.concatenate(parts))

    @property
    def phonemizer(self) -> object:
        """The loaded ``hibari.Hibari`` (its G2P and symbol table), for engines that speak its phonemes."""
        return self._tts

    def warmup(self) -> None:
        self._tts("Hello there.", seed=self.seed)

    def close(self) -> None:
        del self._tts
