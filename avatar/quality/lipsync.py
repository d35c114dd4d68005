"""Lip sync, measured from the output video alone.

The mouth opening of every frame is measured with MediaPipe's FaceLandmarker (inner-lip gap over face
height) and cross-correlated with the audio's loudness envelope at the video frame rate. In-step speech
peaks at a lag near zero with a high correlation; a still mouth has no correlation at any lag, and a
shifted one peaks at its shift.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from avatar.types import AudioArray, FrameArray

UPPER_INNER_LIP = 13
LOWER_INNER_LIP = 14
FOREHEAD = 10
CHIN = 152

MAX_LAG_FRAMES = 8
"""±320 ms at 25 fps: wide enough that a 200 ms shift is found at its own lag, not at the edge."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LipSyncScore:
    lag_ms: float  # positive: the mouth moves after the sound; sub-frame (parabolic peak fit)
    peak_correlation: float
    zero_lag_correlation: float
    frames: int
    faces_found: int

    def passes(self, max_lag_ms: float = 40.0, min_correlation: float = 0.5) -> bool:
        """In step: the best lag is within ``max_lag_ms`` and the mouth follows the sound closely."""
        return abs(self.lag_ms) <= max_lag_ms and self.peak_correlation > min_correlation


class MouthMeter:
    """Measures mouth opening per frame with the FaceLandmarker.

    IMAGE mode on purpose: every frame is measured on its own, so the tracker's temporal smoothing
    cannot itself add a lag to what is being measured. ``num_faces`` > 1 measures several people (a
    two-person photo) and ``openings`` then follows the face whose mouth moves most.
    """

    def __init__(self, landmarker_path: Path, num_faces: int = 1) -> None:
        from avatar.backends.puppet.landmarks import Landmarker

        self.num_faces = num_faces
        self._landmarker = Landmarker(landmarker_path, max_faces=num_faces)

    def faces(self, frame: FrameArray) -> list[npt.NDArray[np.float32]]:
        """The (478, 3) landmarks of every face found in one RGB frame."""
        return list(self._landmarker.detect(np.ascontiguousarray(frame)))

    def openings_by_face(self, frames: Iterable[FrameArray]) -> FloatArray:
        """(frames, num_faces) inner-lip gap / face height, faces ordered left to right; NaN where absent."""
        rows = []
        for frame in frames:
            faces = sorted(self._landmarker.detect(np.ascontiguousarray(frame)), key=lambda lm: float(lm[CHIN, 0]))
            row = np.full(self.num_faces, np.nan)
            for i, lm in enumerate(faces[: self.num_faces]):
                gap = abs(lm[LOWER_INNER_LIP, 1] - lm[UPPER_INNER_LIP, 1])
                height = abs(lm[CHIN, 1] - lm[FOREHEAD, 1]) or 1.0
                row[i] = gap / height
            rows.append(row)
        return np.asarray(rows, dtype=np.float64).reshape(-1, self.num_faces)

    def openings(self, frames: Iterable[FrameArray]) -> FloatArray:
        """Inner-lip gap / face height per frame (of the most active face); NaN where no face is found."""
        by_face = self.openings_by_face(frames)
        if by_face.shape[1] == 1 or by_face.size == 0:
            return by_face[:, 0] if by_face.size else np.zeros(0)
        movement = [np.nanstd(col) if np.isfinite(col).sum() > 2 else -1.0 for col in by_face.T]
        return np.asarray(by_face[:, int(np.argmax(movement))])

    def close(self) -> None:
        self._landmarker.close()


def loudness_envelope(audio: AudioArray, sample_rate: int, fps: int, frames: int) -> FloatArray:
    """RMS of the audio in a two-frame window centred on each video frame's time."""
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


def correlations(openings: FloatArray, envelope: FloatArray, max_lag_frames: int = MAX_LAG_FRAMES) -> dict[int, float]:
    """Pearson correlation of mouth and loudness at each lag in frames (lag > 0: mouth later than sound)."""
    n = min(openings.size, envelope.size)
    mouth, loud = openings[:n], envelope[:n]
    found = ~np.isnan(mouth)
    by_lag = {}
    for lag in range(-max_lag_frames, max_lag_frames + 1):
        if lag >= 0:
            m, s, ok = mouth[lag:], loud[: n - lag], found[lag:]
        else:
            m, s, ok = mouth[:lag], loud[-lag:], found[:lag]
        by_lag[lag] = _corr(m[ok], s[ok])
    return by_lag


def _refine(by_lag: dict[int, float], lag: int) -> float:
    """Sub-frame peak position from a parabola through the peak and its neighbours (40 ms frames are
    coarse next to a ±40 ms target)."""
    if lag - 1 not in by_lag or lag + 1 not in by_lag:
        return float(lag)
    left, mid, right = by_lag[lag - 1], by_lag[lag], by_lag[lag + 1]
    curvature = left - 2 * mid + right
    if curvature >= 0:
        return float(lag)
    return lag + float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def score(openings: FloatArray, envelope: FloatArray, fps: int, max_lag_frames: int = MAX_LAG_FRAMES) -> LipSyncScore:
    """Cross-correlate mouth opening with loudness over lags of ±``max_lag_frames``."""
    by_lag = correlations(openings, envelope, max_lag_frames)
    best_lag = max(by_lag, key=lambda lag: (by_lag[lag], -abs(lag)))
    n = min(openings.size, envelope.size)
    return LipSyncScore(
        lag_ms=1000.0 * _refine(by_lag, best_lag) / fps,
        peak_correlation=by_lag[best_lag],
        zero_lag_correlation=by_lag[0],
        frames=n,
        faces_found=int((~np.isnan(openings[:n])).sum()),
    )


@dataclass(frozen=True)
class Video:
    """Decoded frames and audio of an MP4."""

    frames: list[FrameArray]
    fps: int
    audio: AudioArray
    sample_rate: int


def read_video(path: Path, sample_rate: int = 16_000) -> Video:
    """Every RGB frame, the frame rate and the mono audio of a video file."""
    import av

    from avatar.media import decode_audio

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = round(float(stream.average_rate or 25))
        frames = [np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8) for f in container.decode(stream)]
    return Video(frames=frames, fps=fps, audio=decode_audio(path, sample_rate), sample_rate=sample_rate)


def score_frames(
    meter: MouthMeter,
    frames: list[FrameArray],
    audio: AudioArray,
    sample_rate: int,
    fps: int,
    closed_on_purpose: Iterable[tuple[str, float, float]] = (),
) -> LipSyncScore:
    """Score frames against the audio they should be speaking.

    ``closed_on_purpose`` are phones (symbol, start, end) where the lips shut while the voice still
    sounds (m, b, p): a mouth that is right to close there is wrong by loudness, so their frames
    (±``BILABIAL_WINDOW_S``) are left out; the viseme check judges them instead."""
    envelope = loudness_envelope(audio, sample_rate, fps, len(frames))
    openings = meter.openings(frames)
    found = int((~np.isnan(openings[: min(openings.size, envelope.size)])).sum())
    for symbol, start, end in closed_on_purpose:
        if symbol in BILABIALS:
            first = max(0, int(np.floor((start - BILABIAL_WINDOW_S) * fps)))
            openings[first : int(np.ceil((end + BILABIAL_WINDOW_S) * fps))] = np.nan
    return replace(score(openings, envelope, fps), faces_found=found)


def without_brief_closures(
    openings: FloatArray, fps: int, longest_s: float = 0.12, closed_gap: float | None = None, pad: int = 0
) -> FloatArray:
    """``openings`` with the frames of every brief full closure (``longest_s`` or shorter) left out
    (NaN; ``pad`` frames either side too), for a stream whose phones are not known (live mode).

    Lips drawn from the phones seal for a moment on m, b and p while the voice still sounds, which
    loudness calls wrong; ``score_frames`` leaves those phones out when it knows them. A seal that
    short is a bilabial's: a photo's own closed mouth, and the lips in a pause, stay shut longer. Only
    the sealed frames are left out (``score_frames`` leaves ±40 ms, as a phone's edges are not sure):
    the lips' release is kept, as it comes with the sound. A stream out of step is still caught by its
    vowels, which are all kept."""
    gap = CLOSED_GAP if closed_gap is None else closed_gap
    closed = np.nan_to_num(openings, nan=1.0) < gap
    out = openings.copy()
    longest = max(1, round(longest_s * fps))
    i = 0
    while i < closed.size:
        if not closed[i]:
            i += 1
            continue
        j = i
        while j < closed.size and closed[j]:
            j += 1
        if j - i <= longest:
            out[max(0, i - pad) : j + pad] = np.nan
        i = j
    return out


def measure_video(
    path: Path,
    landmarker_path: Path,
    num_faces: int = 1,
    closed_on_purpose: Iterable[tuple[str, float, float]] = (),
) -> LipSyncScore:
    """Score an MP4's lip sync from its own frames and audio track (``closed_on_purpose``: see
    ``score_frames``)."""
    video = read_video(path)
    meter = MouthMeter(landmarker_path, num_faces=num_faces)
    try:
        return score_frames(meter, video.frames, video.audio, video.sample_rate, video.fps, closed_on_purpose)
    finally:
        meter.close()


# ----------------------------------------------------------------------------------------- visemes

MOUTH_LEFT_OUTER, MOUTH_RIGHT_OUTER = 61, 291
CLOSED_GAP = 0.008
"""An inner-lip gap below this (face heights, about 1.5 mm on an adult face) is a full closure."""
BILABIAL_WINDOW_S = 0.04
BILABIALS = frozenset("mbp")
ROUNDED = frozenset("uOwʊ")
SPREAD = frozenset("iAɪ")
LABIODENTALS = frozenset("fv")
TEETH_GAP = 0.04
"""f and v: an inner-lip gap no wider than this (face heights, about 8 mm: the upper incisors' height
that shows) with teeth between the lips is the lower lip up at the upper teeth."""
TEETH_SHOWN = 0.1
"""The share of the opening between the inner lips that must be teeth (bright, unsaturated) to show them."""


@dataclass(frozen=True)
class MouthShapes:
    """Per frame, from the rendered frames' landmarks: inner-lip gap and outer mouth width, both over
    face height (NaN where no face was found)."""

    gap: FloatArray
    width: FloatArray


def mouth_shapes(meter: MouthMeter, frames: Iterable[FrameArray]) -> MouthShapes:
    """Gap and width of the (first) face's mouth in every frame."""
    gaps, widths = [], []
    for frame in frames:
        faces = meter.faces(frame)
        if not faces:
            gaps.append(np.nan)
            widths.append(np.nan)
            continue
        lm = faces[0]
        height = float(np.hypot(*(lm[CHIN, :2] - lm[FOREHEAD, :2]))) or 1.0
        gaps.append(float(np.hypot(*(lm[LOWER_INNER_LIP, :2] - lm[UPPER_INNER_LIP, :2]))) / height)
        widths.append(float(np.hypot(*(lm[MOUTH_RIGHT_OUTER, :2] - lm[MOUTH_LEFT_OUTER, :2]))) / height)
    return MouthShapes(np.asarray(gaps, np.float64), np.asarray(widths, np.float64))


def closures(gap: FloatArray, closed_gap: float = CLOSED_GAP, *, rising_only: bool = False) -> int:
    """Full lip closures: runs of frames whose gap is below ``closed_gap``, each counted once
    (``rising_only``: only runs that begin inside ``gap``, not one it starts in)."""
    closed = np.nan_to_num(gap, nan=1.0) < closed_gap
    return int(np.count_nonzero(closed[1:] & ~closed[:-1]) + (0 if rising_only else int(closed[:1].sum())))


def bilabials_closed(
    gap: FloatArray,
    phones: Iterable[tuple[str, float, float]],
    fps: int,
    window_s: float = BILABIAL_WINDOW_S,
    closed_gap: float = CLOSED_GAP,
) -> tuple[int, int]:
    """(closed, all): bilabial phones with a fully closed frame within ``window_s`` of their span."""
    closed = np.nan_to_num(gap, nan=1.0) < closed_gap
    hits = total = 0
    for symbol, start, end in phones:
        if symbol not in BILABIALS:
            continue
        total += 1
        first = max(0, int(np.floor((start - window_s) * fps)))
        last = min(len(closed), int(np.ceil((end + window_s) * fps)))
        hits += bool(closed[first:last].any())
    return hits, total


def width_at(width: FloatArray, phones: Iterable[tuple[str, float, float]], fps: int, symbols: frozenset[str]) -> float:
    """Median mouth width at the centre frames of the phones in ``symbols``."""
    values = [
        width[min(len(width) - 1, int((start + end) / 2 * fps))] for symbol, start, end in phones if symbol in symbols
    ]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def teeth_share(frame: FrameArray, landmarks: npt.NDArray[np.floating]) -> float:
    """The share of the opening between the inner lips (the landmarks' inner-lip contour) that is
    teeth: bright and nearly colourless, unlike the lips, the mouth's shadow or skin."""
    import cv2

    from avatar.backends.puppet.landmarks import LOWER_LIP_INNER, UPPER_LIP_INNER

    contour = np.concatenate([landmarks[list(UPPER_LIP_INNER), :2], landmarks[list(LOWER_LIP_INNER)[::-1], :2]])
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(contour).astype(np.int32)], 1)
    inside = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)[mask.astype(bool)]
    if not inside.size:
        return 0.0
    return float(np.mean((inside[:, 1] < 80) & (inside[:, 2] > 150)))


def labiodentals_at_teeth(
    meter: MouthMeter,
    frames: FrameArray,
    gap: FloatArray,
    phones: Iterable[tuple[str, float, float]],
    fps: int,
) -> tuple[int, int]:
    """(at the teeth, all): f and v phones whose centre frame shows the lower lip up at the upper
    teeth: the lips apart by no more than ``TEETH_GAP`` with teeth between them (not sealed as for an
    m, not open as for a vowel)."""
    hits = total = 0
    for symbol, start, end in phones:
        if symbol not in LABIODENTALS:
            continue
        total += 1
        k = min(len(frames) - 1, int((start + end) / 2 * fps))
        faces = meter.faces(frames[k])
        if faces and np.isfinite(gap[k]) and gap[k] <= TEETH_GAP and teeth_share(frames[k], faces[0]) >= TEETH_SHOWN:
            hits += 1
    return hits, total
