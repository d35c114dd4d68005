"""Speech recognition with faster-whisper: any CTranslate2 Whisper model, by folder or by name.

The folder is checked before loading so a missing file is a start-up error naming it: without
``tokenizer.json`` faster-whisper would try to download a tokenizer at run time, and without
``preprocessor_config.json`` a 128-mel model (large-v3, turbo) would be fed 80-mel features.

A short utterance (a spoken question: its speech, after the VAD, under ``WINDOW_MAX_S``) is encoded in a
window just longer than itself instead of the 30 s every Whisper call pads to: the encoder's cost grows
with the window, and on a CPU it is most of the call (tiny.en, one thread: 0.43 s for 30 s, 0.06 s for
10 s). Whisper was trained on 30 s windows; in a shorter one it may not find the end of the speech and
repeat itself, so the window keeps at least ``WINDOW_MIN_S`` and ``WINDOW_MARGIN_S`` of silence after the
speech, the text stops at the first timestamp past the speech, and a result that Whisper's own checks
would have rejected (compression ratio, mean log-probability) is done again the usual way.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatar.backends.device import resolve_device, whisper_compute_type
from avatar.catalog import check_files, resolve_model_dir
from avatar.errors import InvalidRequestError, ModelError
from avatar.types import ASR_SAMPLE_RATE, AudioArray, Segment, Transcript, Word

log = logging.getLogger(__name__)

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")

WINDOW_MIN_S = 10.0  # shorter windows made tiny.en repeat a 3 s sentence to the end of its tokens
WINDOW_MARGIN_S = 2.0  # silence after the speech, so the model hears it end
WINDOW_STEP_S = 2.0  # window lengths come in these steps
WINDOW_MAX_S = 30.0  # Whisper's own window: longer speech takes the usual path
TIMESTAMP_S = 0.02  # one Whisper timestamp token
TOKENS_PER_S = 10  # a decoding bound: speech is 2-4 tokens a second
# Whisper's fallback thresholds (faster-whisper's defaults): past them its decoding is retried
MAX_COMPRESSION_RATIO = 2.4
MIN_MEAN_LOG_PROB = -1.0
NO_SPEECH_PROB = 0.6


@dataclass(frozen=True)
class WhisperOptions:
    """How to load and run the model. ``device``/``compute_type`` 'auto' give float16 on CUDA, int8 on CPU."""

    device: str = "auto"
    compute_type: str = "auto"
    threads: int = 2
    vad: bool = True
    beam_size: int = 1
    word_timestamps: bool = False
    short_window: bool = True  # encode a short utterance in a window just longer than itself


class WhisperRecognizer:
    """A faster-whisper model loaded once. ``transcribe`` consumes the lazy segment generator itself,
    so it is safe to call from a worker thread and never leaves decoding work for the event loop."""

    def __init__(self, model_dir: Path, options: WhisperOptions = WhisperOptions()) -> None:
        model_dir = resolve_model_dir(model_dir)
        check_files(model_dir, REQUIRED_FILES, "CTranslate2 Whisper model (for faster-whisper)")
        from faster_whisper import WhisperModel

        self.device = resolve_device(options.device, "AVATAR_ASR_DEVICE")
        self.compute_type = whisper_compute_type(options.compute_type, self.device)
        self.options = options
        self.name = f"faster-whisper:{model_dir.name}"
        try:
            self._model = WhisperModel(
                str(model_dir),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=options.threads,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for bad files
            raise ModelError(f"faster-whisper could not load {model_dir}: {exc}") from exc
        _check_mel_bins(
            model_dir, int(self._model.model.n_mels), int(self._model.feature_extractor.mel_filters.shape[0])
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        self.english_only = not self.multilingual or _is_english_only(model_dir)
        self.languages: tuple[str, ...] = tuple(self._model.supported_languages)
        self.short_windows = 0  # calls answered by the short-window path (tests, metrics)
        self._tokenizers: dict[str, Any] = {}  # by language

    def transcribe(
        self,
        audio: AudioArray,
        *,
        language: str | None = None,
        word_timestamps: bool | None = None,
        word_probabilities: bool = False,
    ) -> Transcript:
        """Transcribe 16 kHz mono audio. ``language`` None detects it (multilingual models); an
        English-only model always transcribes English. ``word_timestamps`` None uses the options.
        ``word_probabilities``: the segments' words with how sure the model was of each (for the
        short window, each word is timed to its segment only: exact times would cost a second pass)."""
        language = self._language(language)
        words = self.options.word_timestamps if word_timestamps is None else word_timestamps
        if self.options.short_window and language is not None and not words:
            short = self._short_window(audio, language, word_probabilities)
            if short is not None:
                self.short_windows += 1
                return short
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=self.options.beam_size,
            vad_filter=self.options.vad,
            word_timestamps=words,
            condition_on_previous_text=False,
        )
        collected = tuple(
            Segment(
                text=s.text.strip(),
                start=float(s.start),
                end=float(s.end),
                words=tuple(
                    Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)) for w in (s.words or ())
                ),
            )
            for s in segments  # consumed here, in the calling (worker) thread
        )
        text = " ".join(s.text for s in collected if s.text).strip()
        return Transcript(text=text, language=info.language, segments=collected)

    def glance(self, audio: AudioArray, *, language: str | None = None) -> tuple[str, bool] | None:
        """A quick first reading of a short sound (one greedy pass in a short window, ~0.06 s on one core)
        and whether Whisper's own checks pass it (False: they would decode it again, at rising
        temperatures over the whole 30 s window, 0.3-0.8 s for a lone "Mm-hmm." or "Right."). None
        when the speech is too long for a short window. For deciding at once what a sound was, not
        for its final words."""
        language = self._language(language)
        if language is None:
            return None
        reading = self._short_reading(audio, language)
        return None if reading is None else (reading[0].text, reading[1])

    def _short_window(self, audio: AudioArray, language: str, probabilities: bool = False) -> Transcript | None:
        """The transcript from a window just longer than the speech; None when the speech is too long
        for one, or Whisper's checks reject what the short window gave (the caller then does it the
        usual way)."""
        reading = self._short_reading(audio, language, probabilities)
        return reading[0] if reading is not None and reading[1] else None

    def _short_reading(
        self, audio: AudioArray, language: str, probabilities: bool = False
    ) -> tuple[Transcript, bool] | None:
        """The short window's transcript, and whether Whisper's checks (compression ratio, mean
        log-probability) pass it; None when the speech is too long for one, or it repeated itself."""
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
        from faster_whisper.vad import SpeechTimestampsMap, VadOptions, get_speech_timestamps

        chunks = get_speech_timestamps(audio, VadOptions()) if self.options.vad else [{"start": 0, "end": audio.size}]
        if not chunks:
            return Transcript(text="", language=language), True  # no speech at all (as the usual path says)
        speech = np.concatenate([audio[c["start"] : c["end"]] for c in chunks])
        seconds = speech.size / ASR_SAMPLE_RATE
        window = max(WINDOW_MIN_S, WINDOW_STEP_S * math.ceil((seconds + WINDOW_MARGIN_S) / WINDOW_STEP_S))
        if window > WINDOW_MAX_S:
            return None
        samples = int(window * ASR_SAMPLE_RATE)
        extractor = self._model.feature_extractor
        padded = np.pad(speech, (0, samples - speech.size)).astype(np.float32)
        features = extractor(padded)[:, : samples // extractor.hop_length]
        model: Any = self._model.model
        tokenizer = self._tokenizers.get(language)
        if tokenizer is None:
            tokenizer = Tokenizer(self._model.hf_tokenizer, model.is_multilingual, task="transcribe", language=language)
            self._tokenizers[language] = tokenizer
        result = model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            [list(tokenizer.sot_sequence)],  # timestamps on: they say where the speech ends
            beam_size=self.options.beam_size,
            max_length=int(TOKENS_PER_S * window) + 16,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            return_scores=True,
            return_no_speech_prob=True,
            return_logits_vocab=probabilities,
        )[0]
        ids = result.sequences_ids[0]
        token_probs = _token_probabilities(result.logits[0], ids) if probabilities else []
        text_probs = iter([p for token, p in zip(ids, token_probs, strict=False) if token < tokenizer.timestamp_begin])
        timed = _timed_pieces(ids, tokenizer.timestamp_begin, seconds)
        pieces = [(start, end, tokenizer.decode(p).strip()) for start, end, p in timed]
        text = " ".join(t for _, _, t in pieces if t)
        if result.no_speech_prob > NO_SPEECH_PROB and result.scores[0] < MIN_MEAN_LOG_PROB:
            return Transcript(text="", language=language), True  # what the usual path drops as silence
        said = [t for _, _, t in pieces if t]
        if len(set(said)) < len(said):  # a piece said again: Whisper looping, as it does in short windows
            log.debug("short window repeated itself (%r); transcribing the usual way", text[:80])
            return None
        passes = bool(text) and get_compression_ratio(text) <= MAX_COMPRESSION_RATIO
        passes = passes and result.scores[0] >= MIN_MEAN_LOG_PROB
        if not passes:
            log.debug("short window rejected (%r)", text[:80])
        timeline = SpeechTimestampsMap(chunks, ASR_SAMPLE_RATE)
        segments = []
        for (start, end, t), (_, _, tokens) in zip(pieces, timed, strict=True):
            begin, finish = timeline.get_original_time(start), timeline.get_original_time(end, is_end=True)
            words = _words(tokenizer, tokens, text_probs, begin, finish) if probabilities else ()
            if t:
                segments.append(Segment(text=t, start=begin, end=finish, words=words))
        return Transcript(text=text, language=language, segments=tuple(segments)), passes

    def _language(self, language: str | None) -> str | None:
        if self.english_only:
            if language not in (None, "en"):
                log.warning("English-only ASR model asked for %r; transcribing English", language)
            return "en"
        if language is not None and language not in self.languages:
            raise InvalidRequestError(  # the caller's choice of language, not a fault of the model
                f"{self.name} does not know language {language!r}; use one of {', '.join(self.languages)}."
            )
        return language

    def warmup(self) -> None:
        # A short tone with the VAD off runs the encoder and decoder once; the VAD model loads lazily
        # inside faster-whisper, so run it once too.
        t = np.arange(ASR_SAMPLE_RATE, dtype=np.float32) / ASR_SAMPLE_RATE
        tone = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        language = "en" if self.english_only else None
        list(self._model.transcribe(tone, language=language, vad_filter=False)[0])
        if self.options.vad:
            list(self._model.transcribe(tone, language=language, vad_filter=True)[0])

    def close(self) -> None:
        del self._model


def _token_probabilities(logits: Any, ids: list[int]) -> list[float]:
    """The probability the model gave each of the tokens it chose (``logits``: one vector per step)."""
    probs = []
    for step, token in zip(logits, ids, strict=False):
        scores = np.asarray(step, dtype=np.float64)
        top = scores.max()
        log_total = top + math.log(np.exp(scores - top).sum())
        probs.append(float(math.exp(scores[token] - log_total)))
    return probs


def _words(tokenizer: Any, tokens: list[int], probs: Iterator[float], start: float, end: float) -> tuple[Word, ...]:
    """The words of a piece's tokens (a token opening with a space begins one), each with the mean
    probability of its tokens, timed to the piece."""
    words: list[tuple[str, list[float]]] = []
    for token in tokens:
        piece, p = tokenizer.decode([token]), next(probs, 1.0)
        if not words or piece.startswith(" "):
            words.append((piece, [p]))
        else:
            words[-1] = (words[-1][0] + piece, [*words[-1][1], p])
    return tuple(Word(w.strip(), start, end, float(np.mean(ps))) for w, ps in words if w.strip())


def _timed_pieces(ids: list[int], timestamp_begin: int, seconds: float) -> list[tuple[float, float, list[int]]]:
    """The text tokens between Whisper's timestamp tokens, as (start, end, tokens), up to the first
    timestamp past the end of the speech (what follows is the model talking over silence)."""
    pieces: list[tuple[float, float, list[int]]] = []
    start, text = 0.0, []
    for token in ids:
        if token < timestamp_begin:
            text.append(token)
            continue
        at = (token - timestamp_begin) * TIMESTAMP_S
        if text:
            pieces.append((start, min(at, seconds), text))
            text = []
        if at > seconds:
            break
        start = at
    if text:
        pieces.append((start, seconds, text))
    return pieces


def _check_mel_bins(model_dir: Path, model_mels: int, feature_mels: int) -> None:
    if model_mels != feature_mels:
        raise ModelError(
            f"{model_dir} holds a Whisper model that takes {model_mels} mel bins, but its features would have "
            f"{feature_mels}: {model_dir / 'preprocessor_config.json'} is missing or wrong. Copy it from the "
            "model's original repository (ct2-transformers-converter --copy_files preprocessor_config.json)."
        )


def _is_english_only(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return len(config.get("lang_ids", [])) == 0 or model_dir.name.endswith(".en")
