"""Smart Turn v3.2: the probability that a speaker has finished their turn, from how they sounded.

The model (ONNX, 8.7 MB, CPU; prepared into ``models_cache/smart-turn`` from pipecat's wheel) reads
the Whisper log-mel spectrogram of the last 8 s of 16 kHz audio (80 mel bands x 800 frames, shorter
audio padded with silence before it) and answers P(complete) through a sigmoid. Its features are the
Whisper encoder's, computed by faster-whisper's own feature extractor over an 8 s window, after the
waveform is scaled to zero mean and unit variance as the model was trained. One call costs 35-60 ms on
a busy core, so the live session asks it once per pause, in a worker thread.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from avatar.errors import ModelError
from avatar.types import ASR_SAMPLE_RATE, AudioArray

WINDOW_S = 8  # seconds of audio the model reads (the end of the utterance)
FILE = "smart-turn-v3.2-cpu.onnx"
NORMALISE_EPS = 1e-7


class SmartTurn:
    """One ONNX session, shared by every live session of the process (calls may come from several
    threads; onnxruntime sessions allow it)."""

    name = "smart-turn-v3.2"

    def __init__(self, folder: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        path = folder / FILE if folder.is_dir() or not folder.suffix else folder
        if not path.is_file():
            raise ModelError(
                f"The turn-end model is missing: {path}. Prepare it with `avatar models prepare` "
                "(or set AVATAR_LIVE_TURN_DETECTOR=silence)."
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # one call is small: more threads only contend
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds for a bad file
            raise ModelError(f"The turn-end model {path} could not be loaded: {exc}") from None
        self._features = FeatureExtractor(feature_size=80, sampling_rate=ASR_SAMPLE_RATE, chunk_length=WINDOW_S)
        self._lock = threading.Lock()  # the feature extractor keeps per-call state in its attributes

    def features(self, audio: AudioArray) -> np.ndarray:
        """The model's input for ``audio`` (16 kHz mono): [1, 80, 800] float32."""
        n = WINDOW_S * ASR_SAMPLE_RATE
        x = np.asarray(audio, np.float32)[-n:]
        x = np.pad(x, (n - x.size, 0))  # the end of the utterance stays at the end of the window
        x = (x - x.mean()) / np.sqrt(x.var() + NORMALISE_EPS)
        with self._lock:
            mel = self._features(x, padding=0)
        return np.asarray(mel[:, : n // self._features.hop_length], np.float32)[None]

    def probability(self, audio: AudioArray) -> float:
        """P(the speaker has finished) at the end of ``audio``."""
        (out,) = self._session.run(None, {"input_features": self.features(audio)})
        return float(np.asarray(out).reshape(-1)[0])

    def warmup(self) -> None:
        self.probability(np.zeros(ASR_SAMPLE_RATE, np.float32))
