"""The embedded speech engines behind one synthesiser: each persona's voice goes to the engine that
speaks it (hibari for ``heart``, Kokoro-82M for its voices). Both are loaded at start-up, so choosing a
voice per persona or per request costs nothing then."""

from __future__ import annotations

import threading
from pathlib import Path

from avatar.backends.hibari_tts import HibariSynthesizer
from avatar.backends.kokoro_tts import KokoroSynthesizer
from avatar.errors import ConfigError
from avatar.types import AudioArray, Speech, SpeechSynthesizer, VoiceSpec
from avatar.voices import DEFAULT_VOICE, EMBEDDED_VOICES, KOKORO_VOICES, Voice

SAMPLE_TEXT = "Hello! This is how I sound. I would be glad to speak for your photo."


class EmbeddedVoices:
    """hibari and Kokoro, chosen per call by ``VoiceSpec.voice`` (a name of ``avatar.voices``)."""

    sample_rate = 24_000

    def __init__(self, kokoro_folder: Path, *, threads: int = 1) -> None:
        self.hibari = HibariSynthesizer(threads=threads)
        self.kokoro = KokoroSynthesizer(
            kokoro_folder, voices=KOKORO_VOICES, threads=threads, phonemizer=self.hibari.phonemizer
        )
        if self.hibari.sample_rate != self.sample_rate or self.kokoro.sample_rate != self.sample_rate:
            raise ConfigError("The embedded voices must share one sample rate.")  # pragma: no cover
        self.voices = EMBEDDED_VOICES
        self.name = f"{self.hibari.name}+{self.kokoro.name}"
        self._samples: dict[str, AudioArray] = {}
        self._lock = threading.Lock()

    def voice(self, spec: VoiceSpec) -> Voice:
        name = spec.voice or DEFAULT_VOICE
        for voice in self.voices:
            if voice.name == name:
                return voice
        raise ConfigError(
            f"Persona {spec.key!r} asks for voice {name!r}; the embedded voices are "
            f'{", ".join(v.name for v in self.voices)} (persona.toml: voice = "...").'
        )

    def _engine(self, spec: VoiceSpec) -> tuple[SpeechSynthesizer, VoiceSpec]:
        voice = self.voice(spec)
        engine: SpeechSynthesizer = self.hibari if voice.engine == "hibari" else self.kokoro
        return engine, VoiceSpec(spec.key, spec.language, voice.name, spec.sample, spec.speed)

    def prepare_voice(self, voice: VoiceSpec) -> None:
        engine, spec = self._engine(voice)
        engine.prepare_voice(spec)

    def quick_start(self, voice: VoiceSpec) -> bool:
        """Whether ``voice``'s engine is slow to start (Kokoro): the reply's first piece is cut shorter."""
        engine, spec = self._engine(voice)
        says = getattr(engine, "quick_start", None)
        return bool(says(spec)) if says is not None else False

    def synthesize(self, text: str, voice: VoiceSpec) -> AudioArray:
        engine, spec = self._engine(voice)
        return engine.synthesize(text, spec)

    def synthesize_timed(self, text: str, voice: VoiceSpec) -> Speech:
        """The audio and, where the engine knows them, its phones with their times."""
        engine, spec = self._engine(voice)
        timed = getattr(engine, "synthesize_timed", None)  # hibari gains its own timings in another change
        return timed(text, spec) if timed is not None else Speech(engine.synthesize(text, spec))

    def sample(self, name: str) -> AudioArray:
        """A few seconds of the voice ``name`` (a catalogue name), made on first asking and kept."""
        with self._lock:
            kept = self._samples.get(name)
        if kept is None:
            kept = self.synthesize(SAMPLE_TEXT, VoiceSpec("sample", voice=name))
            with self._lock:
                self._samples[name] = kept
        return kept

    def warmup(self) -> None:
        self.hibari.warmup()
        self.kokoro.warmup()

    def close(self) -> None:
        self.hibari.close()
        self.kokoro.close()
