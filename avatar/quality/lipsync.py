"""Lip sync, measured from the output video alone.

The mouth opening of every frame is measured with MediaPipe's FaceLandmarker (inner-lip gap over face
height) and cross-correlated with the audio's loudness envelope at the video frame rate. In-step speech
peaks at a lag near zero with a high correlation; a still or shifted mouth scores badly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from avatar.backends.base import AudioArray, FrameArray

UPPER_INNER_LIP = 13
LOWER_INNER_LIP = 14
FOREHEAD = 10
CHIN = 152

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LipSyncScore:
    lag_ms: float  # positive: the mouth moves after the sound
    peak_correlation: float
    zero_lag_correlation: float
    frames: int
    faces_found: int


class MouthMeter:
    """Measures mouth opening per frame with the FaceLandmarker (VIDEO mode, so tracking is smooth)."""

    def __init__(self, landmarker_path: Path) -> None:
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode

        options = FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(landmarker_path)),
            running_mode=RunningMode.IMAGE,
            num_faces=1,
        )
        self._landmarker = FaceLandmarker.create_from_options(options)

    def openings(self, frames: Iterable[FrameArray]) -> FloatArray:
        """Inner-lip gap / face height per frame; NaN where no face is found."""
        import mediapipe as mp

        values = []
        for frame in frames:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            result = self._landmarker.detect(image)
            if not result.face_landmarks:
                values.append(np.nan)
                continue
            lm = result.face_landmarks[0]
            gap = abs(lm[LOWER_INNER_LIP].y - lm[UPPER_INNER_LIP].y)
            height = abs(lm[CHIN].y - lm[FOREHEAD].y) or 1.0
            values.append(gap / height)
        return np.asarray(values, dtype=np.float64)

    def close(self) -> None:
        self._landmarker.close()


def loudness_envelope(audio: AudioArray, sample_rate: int, fps: int, frames: int) -> FloatArray:
    """RMS of the audio in a one-frame window centred on each video frame's time."""
    hop = sample_rate / fps
    half = int(hop)
    out = np.zeros(frames)
    for i in range(frames):
        centre = int((i + 0.5) * hop)
        window = audio[max(0, centre - half) : centre + half]
        out[i] = float(np.sqrt(np.mean(np.square(window, dtype=np.float64)))) if window.size else 0.0
    return out


def _corr(a: FloatArray, b: FloatArray) -> float:
    if a.size < 3 or np.std(a) < 1e-12 or np.std(b) < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def score(openings: FloatArray, envelope: FloatArray, fps: int, max_lag_frames: int = 5) -> LipSyncScore:
    """Cross-correlate mouth opening with loudness over lags of ±``max_lag_frames``."""
    n = min(openings.size, envelope.size)
    mouth, loud = openings[:n], envelope[:n]
    found = ~np.isnan(mouth)
    best_lag, best = 0, -1.0
    by_lag = {}
    for lag in range(-max_lag_frames, max_lag_frames + 1):
        # lag > 0: compare the mouth at t + lag with the sound at t.
        if lag >= 0:
            m, s, ok = mouth[lag:], loud[: n - lag], found[lag:]
        else:
            m, s, ok = mouth[:lag], loud[-lag:], found[:lag]
        by_lag[lag] = _corr(m[ok], s[ok])
        if by_lag[lag] > best:
            best_lag, best = lag, by_lag[lag]
    return LipSyncScore(
        lag_ms=1000.0 * best_lag / fps,
        peak_correlation=best,
        zero_lag_correlation=by_lag[0],
        frames=n,
        faces_found=int(found.sum()),
    )


def measure_video(path: Path, landmarker_path: Path) -> LipSyncScore:
    """Score an MP4's lip sync from its own frames and audio track."""
    import av

    from avatar.media import decode_audio

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = round(float(stream.average_rate or 25))
        frames = [np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8) for f in container.decode(stream)]
    sample_rate = 16_000
    audio = decode_audio(path, sample_rate)
    meter = MouthMeter(landmarker_path)
    try:
        openings = meter.openings(frames)
    finally:
        meter.close()
    return score(openings, loudness_envelope(audio, sample_rate, fps, len(frames)), fps)
