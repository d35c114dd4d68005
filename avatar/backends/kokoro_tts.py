"""The full Kokoro-82M voice (int8 ONNX), spoken from hibari's English phonemes, with its own timings.

Kokoro and hibari share one phoneme alphabet and one symbol table, so hibari's English G2P drives
Kokoro's style voices (``voices_ja.npz``: Japanese speakers, the male ``jm_kumo`` among them). The model
predicts how many 25 ms frames each phoneme lasts before it draws the audio; ``avatar models prepare``
adds that tensor to the graph's outputs, so the phone times returned here are the model's own, not an
alignment guessed afterwards. Kokoro is ~50x slower than hibari's distilled voice: it runs on one
thread, sentence by sentence; it says it is slow (``quick_start``), so the pipeline hands it a short
first piece of a reply (``avatar.pipeline.pieces.quick_opening``) to start on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from avatar.errors import ConfigError, ModelError
from avatar.media import normalize_loudness
from avatar.types import KOKORO_SOUNDS_EARLY_S, AudioArray, Phone, Speech, VoiceSpec

MODEL_FILE = "kokoro-v1.0.int8.timed.onnx"
VOICES_FILE = "voices_ja.npz"
DURATIONS_OUTPUT = "durations"
FRAME_SAMPLES = 600  # one predicted duration frame: 25 ms at 24 kHz (the decoder's hop x its upsampling)
SENTENCE_GAP_SECONDS = 0.18  # as hibari's, so both voices pace a reply alike
EDGE_SILENCE_SECONDS = 0.12
# The decoder starts a sound ~2-3 frames before its predicted start (its receptive field): this much of
# the padding's silence is kept before the first phone and after the last, so no onset or tail is cut.
KEEP_PAD_FRAMES = 4
# The model folds most of a sentence's closing pause into its last phone (~0.4 s past the end of its
# sound, measured on make eval's sentences): that phone ends where its sound falls this far below the
# sentence's loudest frame.
TAIL_DB = 35.0
# The decoder's memory grows with the audio it draws at once (onnxruntime keeps its arena at the peak):
# a sentence longer than this many phoneme symbols is drawn clause by clause (at , ; : —), or word by
# word when a clause is longer still. 100 symbols is ~6 s of speech and ~250 MB above the loaded model.
MAX_PIECE_SYMBOLS = 100
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")
# Symbols with a duration of their own that are no sound: stress (given to the phone after it), length
# and the like, and the space between two words (given to the phone before it: the voice runs on across
# it), and punctuation (a pause, not a phone).
_STRESS = frozenset("ˈˌ")
_MODIFIERS = frozenset("ːˑ̃ʰʲʷ ")
_PAUSES = frozenset(';:,.!?—…"()“”')


class KokoroSynthesizer:
    """Kokoro-82M loaded once, with the style voices named in ``voices``; hibari's G2P phonemizes."""

    sample_rate = 24_000

    def __init__(
        self, folder: Path, *, voices: tuple[str, ...] = ("jm_kumo",), threads: int = 1, phonemizer: Any = None
    ) -> None:
        """``phonemizer``: a loaded ``hibari.Hibari`` to share (its G2P), else one is loaded here."""
        try:
            import onnxruntime as ort
            from hibari import Hibari
        except ImportError as exc:  # pragma: no cover - core dependencies
            raise ModelError("onnxruntime and hibari-tts are needed for Kokoro; run `make install`.") from exc
        model, styles = folder / MODEL_FILE, folder / VOICES_FILE
        if not model.is_file() or not styles.is_file():
            raise ConfigError(f"Kokoro-82M is not prepared in {folder}: run `make models` (`avatar models prepare`).")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        if DURATIONS_OUTPUT not in {o.name for o in self._session.get_outputs()}:
            raise ConfigError(f"{model} has no {DURATIONS_OUTPUT!r} output: prepare it again (make models).")
        with np.load(styles) as table:
            missing = [v for v in voices if v not in table.files]
            if missing:
                raise ConfigError(f"Kokoro has no voice {missing[0]!r}; its voices are {', '.join(table.files)}.")
            self._styles = {v: np.asarray(table[v], np.float32).reshape(-1, 256) for v in voices}
        # hibari's G2P and symbol table (its own small voice model is not used here).
        self._phonemizer = phonemizer if phonemizer is not None else Hibari(threads=1)
        self.voices = voices
        self.name = f"kokoro:{','.join(voices)}"

    def prepare_voice(self, voice: VoiceSpec) -> None:
        self._style(voice)

    def _style(self, voice: VoiceSpec) -> np.ndarray:
        name = voice.voice or self.voices[0]
        if name not in self._styles:
            raise ConfigError(f"Kokoro voice {name!r} is not loaded; the loaded ones are {', '.join(self.voices)}.")
        return self._styles[name]

    def quick_start(self, voice: VoiceSpec) -> bool:
        """Kokoro is slow to start (~0.25 s plus ~0.3 s a second of speech on one core): the reply's first
        piece is cut short for it (``avatar.pipeline.pieces.quick_opening``)."""
        return True

    def synthesize(self, text: str, voice: VoiceSpec) -> AudioArray:
        return self.synthesize_timed(text, voice).audio

    def synthesize_timed(self, text: str, voice: VoiceSpec) -> Speech:
        """``text`` spoken sentence by sentence, with each phone where the model put it (seconds from the
        start of the returned audio, its edge silence and gaps included)."""
        style = self._style(voice)
        rate = self.sample_rate
        edge = np.zeros(int(EDGE_SILENCE_SECONDS * rate), np.float32)
        gap = np.zeros(int(SENTENCE_GAP_SECONDS * rate), np.float32)
        parts: list[AudioArray] = [edge]
        phones: list[Phone] = []
        offset = edge.size
        for sentence in self._phonemizer.phonemize(text):
            spoken = False
            for piece in _pieces(sentence):
                audio, said = self._piece(piece, style, voice.speed)
                if audio.size == 0:
                    continue
                at = offset / rate - KOKORO_SOUNDS_EARLY_S
                phones.extend(Phone(p.symbol, max(0.0, p.start + at), p.end + at) for p in said)
                parts.append(audio)
                offset += audio.size
                spoken = True
            if spoken:
                parts.append(gap)
                offset += gap.size
        if len(parts) == 1:
            return Speech(np.zeros(0, np.float32), ())
        parts[-1] = edge
        return Speech(normalize_loudness(np.concatenate(parts)), tuple(phones))

    def _piece(self, phonemes: str, style: np.ndarray, speed: float) -> tuple[AudioArray, list[Phone]]:
        """One sentence's (or clause's) audio, cut to its speech and a little padding, and its phones."""
        vocab = self._phonemizer.vocab
        symbols = [c for c in phonemes if c in vocab][: len(style) - 1]
        if not any(c not in _PAUSES and c not in _STRESS and c not in _MODIFIERS for c in symbols):
            return np.zeros(0, np.float32), []
        ids = np.asarray([[0, *(vocab[c] for c in symbols), 0]], np.int64)
        feeds = {"tokens": ids, "style": style[len(symbols)][None, :], "speed": np.asarray([speed], np.float32)}
        audio, durations = self._session.run(None, feeds)
        frames = np.asarray(durations, np.int64).reshape(-1)
        starts = np.concatenate([[0], np.cumsum(frames)])  # frame where each token (pads included) begins
        spans = _phone_spans(symbols, starts[1:-2].tolist(), starts[2:-1].tolist())
        if not spans:
            return np.zeros(0, np.float32), []
        wave = np.asarray(audio, np.float32).reshape(-1)
        spans[-1] = _end_of_sound(spans[-1], wave)
        first = max(0, spans[0][1] - KEEP_PAD_FRAMES)
        last = min(int(starts[-1]), spans[-1][2] + KEEP_PAD_FRAMES)
        samples = wave[first * FRAME_SAMPLES : last * FRAME_SAMPLES]
        seconds = FRAME_SAMPLES / self.sample_rate
        return samples, [Phone(s, (a - first) * seconds, (b - first) * seconds) for s, a, b in spans]

    def warmup(self) -> None:
        for name in self.voices:
            self.synthesize("Hello there.", VoiceSpec("warmup", voice=name))

    def close(self) -> None:
        del self._session


def _pieces(sentence: str) -> Iterator[str]:
    """The sentence in pieces of at most MAX_PIECE_SYMBOLS characters: whole clauses where they fit."""
    piece = ""
    for clause in _CLAUSE_END.split(sentence):
        words = [clause] if len(clause) <= MAX_PIECE_SYMBOLS else clause.split(" ")
        for part in words:
            if piece and len(piece) + 1 + len(part) > MAX_PIECE_SYMBOLS:
                yield piece
                piece = part
            else:
                piece = f"{piece} {part}" if piece else part
    if piece:
        yield piece


def _end_of_sound(span: tuple[str, int, int], wave: AudioArray) -> tuple[str, int, int]:
    """The sentence's last phone, ending at its last frame that is still sound (TAIL_DB)."""
    symbol, start, end = span
    frames = wave[: wave.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    level = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    floor = level.max() * 10 ** (-TAIL_DB / 20)
    sounding = np.flatnonzero(level[start:end] > floor)
    return symbol, start, start + (int(sounding[-1]) + 1 if sounding.size else 1)


def _phone_spans(symbols: list[str], starts: list[int], ends: list[int]) -> list[tuple[str, int, int]]:
    """(symbol, first frame, end frame) of each sound: a stress mark's frames go to the phone after it,
    a length mark's and a word space's to the phone before it; punctuation is a pause, not a phone."""
    spans: list[list[object]] = []
    pending: int | None = None  # where a stress mark began, for the phone that follows it
    for symbol, start, end in zip(symbols, starts, ends, strict=True):
        if symbol in _STRESS:
            pending = start if pending is None else pending
        elif symbol in _MODIFIERS:
            if spans and spans[-1][2] == start:
                spans[-1][2] = end
        elif symbol in _PAUSES:
            pending = None
        else:
            spans.append([symbol, start if pending is None else pending, end])
            pending = None
    return [(str(s), int(a), int(b)) for s, a, b in spans]  # type: ignore[call-overload]
