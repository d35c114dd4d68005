"""Speech recognition with faster-whisper: any CTranslate2 Whisper model, by folder or by name.

The folder is checked before loading so a missing file is a start-up error naming it: without
``tokenizer.json`` faster-whisper would try to download a tokenizer at run time, and without
``preprocessor_config.json`` a 128-mel model (large-v3, turbo) would be fed 80-mel features.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.backends.device import resolve_device, whisper_compute_type
from avatar.catalog import check_files, resolve_model_dir
from avatar.errors import InvalidRequestError, ModelError
from avatar.types import ASR_SAMPLE_RATE, AudioArray, Segment, Transcript, Word

log = logging.getLogger(__name__)

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


@dataclass(frozen=True)
class WhisperOptions:
    """How to load and run the model. ``device``/``compute_type`` 'auto' give float16 on CUDA, int8 on CPU."""

    device: str = "auto"
    compute_type: str = "auto"
    threads: int = 2
    vad: bool = True
    beam_size: int = 1
    word_timestamps: bool = False


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

    def transcribe(
        self, audio: AudioArray, *, language: str | None = None, word_timestamps: bool | None = None
    ) -> Transcript:
        """Transcribe 16 kHz mono audio. ``language`` None detects it (multilingual models); an
        English-only model always transcribes English. ``word_timestamps`` None uses the options."""
        language = self._language(language)
        words = self.options.word_timestamps if word_timestamps is None else word_timestamps
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
                words=tuple(Word(w.word.strip(), float(w.start), float(w.end)) for w in (s.words or ())),
            )
            for s in segments  # consumed here, in the calling (worker) thread
        )
        text = " ".join(s.text for s in collected if s.text).strip()
        return Transcript(text=text, language=info.language, segments=collected)

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
