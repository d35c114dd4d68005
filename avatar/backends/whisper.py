"""Speech recognition with faster-whisper: any CTranslate2 Whisper model folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.backends.base import ASR_SAMPLE_RATE, AudioArray, Segment, Transcript, Word
from avatar.backends.device import resolve_device, whisper_compute_type
from avatar.errors import ModelError


@dataclass(frozen=True)
class WhisperOptions:
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
        if not (model_dir / "model.bin").is_file():
            raise ModelError(
                f"No CTranslate2 Whisper model in {model_dir} (model.bin missing). For the embedded model run "
                "`avatar models prepare`; for another, convert it with ct2-transformers-converter or "
                "`avatar models pull` it (README 'Production models')."
            )
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
        self.multilingual = bool(self._model.model.is_multilingual)
        self.english_only = not self.multilingual or _is_english_only(model_dir)

    def transcribe(self, audio: AudioArray, *, language: str | None = None) -> Transcript:
        if self.english_only:
            language = "en"
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=self.options.beam_size,
            vad_filter=self.options.vad,
            word_timestamps=self.options.word_timestamps,
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

    def warmup(self) -> None:
        # A short tone with the VAD off runs the encoder and decoder once; the VAD model loads lazily
        # inside faster-whisper, so run it once too.
        t = np.arange(ASR_SAMPLE_RATE, dtype=np.float32) / ASR_SAMPLE_RATE
        tone = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        list(self._model.transcribe(tone, language="en" if self.english_only else None, vad_filter=False)[0])
        if self.options.vad:
            list(self._model.transcribe(tone, language="en" if self.english_only else None, vad_filter=True)[0])

    def close(self) -> None:
        del self._model


def _is_english_only(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return len(config.get("lang_ids", [])) == 0 or model_dir.name.endswith(".en")
