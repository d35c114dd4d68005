"""The embedded speech synthesiser: hibari (a Kokoro-82M-distilled English voice, int8 ONNX).

hibari's network predicts how long each phoneme lasts and expands the phonemes to vocoder frames
inside its graph. At load time an in-memory copy of the graph is given that duration tensor as a
seventh output, so every sentence comes back with the model's own timings (``synthesize_timed``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from avatar.errors import ConfigError, ModelError
from avatar.media import normalize_loudness
from avatar.types import KOKORO_SOUNDS_EARLY_S, AudioArray, Phone, Speech, VoiceSpec

log = logging.getLogger(__name__)

SENTENCE_GAP_SECONDS = 0.18
EDGE_SILENCE_SECONDS = 0.12
DURATIONS_TENSOR = "/Cast_32_output_0"
"""hibari 0.2's per-phoneme durations (int64, one per id including the two pads), in units of
``frames / sum(durations)`` vocoder frames: the clipped, rounded predictor output the graph expands."""
NOT_SOUNDS = frozenset(';:,.!?—…"()“” ↓→↗↘')
"""Symbols of the alphabet that are punctuation or intonation, not sounds."""
STRESS = frozenset("ˈˌ")
"""Stress marks: part of the vowel after them (their time is given to it)."""
MODIFIERS = frozenset("ːʰʲ\u0303")
"""Length, aspiration, palatalisation, nasality: part of the sound before them."""
FINAL_MAX_S = 0.15
"""hibari gives a sentence's last sound the silence after it too (a final "d" of 300 ms while the audio
is quiet after 80): the last sound of each sentence is cut to this long."""


def phones_from_durations(symbols: str, durations: np.ndarray, seconds_per_unit: float, offset: float) -> list[Phone]:
    """The sounds of one sentence with their times: ``symbols`` are the ids' characters (pads excluded),
    ``durations`` the model's units per id (pads included)."""
    if len(durations) != len(symbols) + 2:
        raise ValueError(f"{len(durations)} durations for {len(symbols)} symbols and two pads")
    ends = np.cumsum(durations.astype(np.float64)) * seconds_per_unit + offset
    starts = ends - durations * seconds_per_unit
    phones: list[Phone] = []
    pending: float | None = None  # start of a stress mark waiting for its vowel
    for k, symbol in enumerate(symbols, start=1):
        start, end = float(starts[k]), float(ends[k])
        if symbol in STRESS:
            pending = start if pending is None else pending
        elif symbol in MODIFIERS:
            if phones:
                last = phones[-1]
                phones[-1] = Phone(last.symbol, last.start, end)
        elif symbol in NOT_SOUNDS:
            pending = None
        else:
            phones.append(Phone(symbol, start if pending is None else pending, end))
            pending = None
    if phones:
        last = phones[-1]
        phones[-1] = Phone(last.symbol, last.start, min(last.end, last.start + FINAL_MAX_S))
    return phones


class HibariSynthesizer:
    """hibari loaded once. Only its bundled voice works offline; others are refused at start-up."""

    sample_rate = 24_000

    def __init__(
        self, *, threads: int = 1, voice: str = "heart", seed: int = 0, durations_tensor: str = DURATIONS_TENSOR
    ) -> None:
        try:
            from hibari import Hibari, dsp
            from hibari.voices import VOICES, voice_path
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ModelError("hibari-tts is not installed; run `make install`.") from exc
        self._voices = VOICES
        self._check_voice(voice)
        self.voice = voice
        self.name = f"hibari:{voice}"
        self.seed = seed
        self._dsp = dsp
        model = voice_path(voice)
        timed = _with_output(model, durations_tensor)
        self.timed = timed is not None
        """Whether phoneme timings come with the audio (the model's graph has the duration tensor)."""
        self._tts = Hibari(voice=voice, threads=threads, model=timed if timed is not None else model)
        self._session = self._tts.sess
        if timed is not None:  # hibari's own calls (``Hibari.from_ids``) still see its six outputs
            self._tts.sess = _PlainOutputs(self._session)

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
        return self.synthesize_timed(text, voice).audio

    def synthesize_timed(self, text: str, voice: VoiceSpec) -> Speech:
        """Speak ``text``, with the sounds in it and their times as the model placed them (``phones``
        None when they cannot be told: the graph lacks the duration tensor, or they do not add up)."""
        rate = self.sample_rate
        gap = np.zeros(int(SENTENCE_GAP_SECONDS * rate), np.float32)
        edge = np.zeros(int(EDGE_SILENCE_SECONDS * rate), np.float32)
        parts: list[AudioArray] = [edge]
        phones: list[Phone] | None = [] if self.timed else None
        at = edge.size
        rng = np.random.default_rng(self.seed)
        speed = np.asarray([voice.speed], np.float32)
        for phonemes in self._tts.phonemize(text):
            ids = self._tts.ids(phonemes)
            if len(ids) < 3:
                continue
            out = self._session.run(None, {"ids": np.asarray([ids], np.int64), "speed": speed})
            sentence = self._dsp.synth(*(o[0] for o in out[:6]), rng).astype(np.float32)
            if not sentence.size:
                continue
            if phones is not None:
                try:
                    units = np.asarray(out[6]).reshape(-1)
                    seconds_per_unit = sentence.size / rate / float(units.sum())
                    symbols = "".join(c for c in phonemes if c in self._tts.vocab)
                    phones.extend(
                        phones_from_durations(symbols, units, seconds_per_unit, at / rate - KOKORO_SOUNDS_EARLY_S)
                    )
                except (ValueError, IndexError, ZeroDivisionError) as exc:
                    log.warning(
                        "hibari phoneme timings unusable; the face follows the audio", extra={"reason": str(exc)}
                    )
                    phones = None
            parts.extend([sentence, gap])
            at += sentence.size + gap.size
        if len(parts) == 1:
            return Speech(np.zeros(0, np.float32), None)
        parts[-1] = edge
        return Speech(normalize_loudness(np.concatenate(parts)), tuple(phones) if phones is not None else None)

    @property
    def phonemizer(self) -> object:
        """The loaded ``hibari.Hibari`` (its G2P and symbol table), for engines that speak its phonemes."""
        return self._tts

    def warmup(self) -> None:
        self.synthesize_timed("Hello there.", VoiceSpec("warmup"))

    def close(self) -> None:
        del self._tts


def _with_output(model: str | os.PathLike[str], tensor: str) -> bytes | None:
    """The ONNX graph at ``model`` with ``tensor`` added as an output, serialised; None (and a log
    line) when the graph has no such tensor, so speech still works without timings."""
    import onnx

    graph = onnx.load(os.fspath(model))
    if not any(tensor in node.output for node in graph.graph.node):
        log.warning("hibari model has no duration tensor; no phoneme timings", extra={"tensor": tensor})
        return None
    graph.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.INT64, None))
    return graph.SerializeToString()


class _PlainOutputs:
    """An onnxruntime session as hibari made it: asked for every output, it gives the graph's own six
    (the duration output added here is left out)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._names = [o.name for o in session.get_outputs()][:6]

    def run(self, names: list[str] | None, feeds: dict[str, Any], *args: Any) -> Any:
        return self._session.run(names or self._names, feeds, *args)

    def get_outputs(self) -> list[Any]:
        return list(self._session.get_outputs())[:6]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
