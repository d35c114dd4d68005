"""Mouth shapes from the sounds being spoken (phones with their times), with coarticulation.

The phones (misaki/Kokoro symbols, as hibari and Kokoro speak them) are turned into ARPAbet and
handed to openfacefx, which blends the 15 Oculus visemes over time with dominance functions and
enforces lip closures on bilabials (its JALI rules: m/b/p seal, f/v tuck the lower lip, lips
anticipate). Each viseme then has a jaw opening and a width (rounded … spread); the frame's
controls are the weighted sums, sampled at the frame centres. Loudness still scales how far the
vowels open, so a shouted "ah" opens more than a murmured one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from openfacefx.alignment import PhonemeSegment
from openfacefx.coarticulation import CoartParams, build_viseme_curves
from openfacefx.visemes import VISEMES

from avatar.types import FloatArray, Phone

MISAKI_TO_ARPABET = {
    # vowels and diphthongs (misaki writes the diphthongs as one capital letter)
    "A": "EY", "I": "AY", "W": "AW", "Y": "OY", "O": "OW", "Q": "OW",
    "a": "AA", "æ": "AE", "ɑ": "AA", "ɒ": "AA", "ɔ": "AO", "ə": "AH", "ɐ": "AH", "ᵊ": "AH", "ʌ": "AH",
    "ɛ": "EH", "e": "EH", "ɜ": "ER", "ɚ": "ER", "i": "IY", "ɪ": "IH", "ᵻ": "IH", "u": "UW", "ʊ": "UH",
    "o": "OW",
    # consonants
    "b": "B", "p": "P", "m": "M", "f": "F", "v": "V", "θ": "TH", "ð": "DH",
    "t": "T", "d": "D", "n": "N", "l": "L", "T": "T", "ɾ": "T", "ʔ": "T",
    "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "ʤ": "JH", "ʧ": "CH",
    "k": "K", "g": "G", "ɡ": "G", "ŋ": "NG", "h": "HH", "x": "HH", "ç": "HH",
    "ɹ": "R", "r": "R", "w": "W", "j": "Y",
}  # fmt: skip
"""misaki's English symbols to ARPAbet; anything else is spoken as a neutral consonant (HH)."""

SHAPES = {
    # viseme: (jaw opening 0…1, width −1 rounded … +1 spread)
    "sil": (0.0, 0.0),
    "PP": (0.0, 0.0),
    "FF": (0.1, 0.1),
    "TH": (0.3, 0.15),
    "DD": (0.3, 0.1),
    "kk": (0.36, 0.0),
    "CH": (0.3, -0.6),
    "SS": (0.24, 0.45),
    "nn": (0.28, 0.05),
    "RR": (0.3, -0.5),
    "aa": (1.0, 0.1),
    "E": (0.62, 0.55),
    "I": (0.38, 1.0),
    "O": (0.7, -0.85),
    "U": (0.32, -1.0),
}  # fmt: skip
VOWELS = ("aa", "E", "I", "O", "U")
CLOSURE_FLOOR = 0.9
"""openfacefx's enforced bilabial weight: at or above it the lips are sealed."""
PARAMS = CoartParams(jali=True, closure_floor=CLOSURE_FLOOR)


@dataclass(frozen=True)
class VisemeTrack:
    """Per-frame mouth controls from the phones, each (n,) float32."""

    open: FloatArray
    """Jaw opening the sounds ask for, 0 … 1 (before loudness)."""
    vowel: FloatArray
    """Share of that opening that belongs to vowels (scaled by loudness)."""
    width: FloatArray
    """−1 rounded … +1 spread."""
    seal: FloatArray
    """0 … 1: lips pressed together (m, b, p)."""
    tuck: FloatArray
    """0 … 1: lower lip to the upper teeth (f, v)."""


def segments(phones: Sequence[Phone]) -> list[PhonemeSegment]:
    """openfacefx's input: ARPAbet segments, in time order, without empty ones."""
    out = [
        PhonemeSegment(MISAKI_TO_ARPABET.get(p.symbol, "HH"), float(p.start), float(p.end))
        for p in sorted(phones, key=lambda p: p.start)
        if p.end > p.start
    ]
    return out


def viseme_track(phones: Sequence[Phone], n_frames: int, fps: int) -> VisemeTrack | None:
    """Controls for ``n_frames`` frames from ``phones`` (seconds from the clip's start); None when
    there are no sounds to follow (the caller falls back to the audio)."""
    segs = segments(phones)
    if not segs or n_frames <= 0:
        return None
    rate = 100.0  # solve finer than the video so short closures are not missed between frames
    times, matrix = build_viseme_curves(segs, fps=rate, params=PARAMS)
    if len(times) == 0:
        return None
    # Each frame takes the strongest closure within its own interval (a 40 ms frame must not skip a
    # 50 ms bilabial) and the mean of everything else.
    centres = (np.arange(n_frames) + 0.5) / fps
    offsets = np.linspace(-0.5, 0.5, 5) / fps
    grid = centres[:, None] + offsets[None, :]
    inside = (grid >= times[0]) & (grid <= times[-1])

    def sample(column: FloatArray, fill: float) -> FloatArray:
        values = np.interp(grid, times, column)
        return np.where(inside, values, fill)

    names = list(VISEMES)
    weights = {name: sample(matrix[:, names.index(name)], 1.0 if name == "sil" else 0.0) for name in names}
    opening = sum(SHAPES[n][0] * weights[n] for n in names)
    vowel = sum(SHAPES[n][0] * weights[n] for n in VOWELS)
    width = sum(SHAPES[n][1] * weights[n] for n in names)
    seal = np.clip(weights["PP"] / CLOSURE_FLOOR, 0.0, 1.0).max(axis=1)
    tuck = np.clip(weights["FF"] / CLOSURE_FLOOR, 0.0, 1.0).max(axis=1)
    # openfacefx enforces the closure on its own time grid; a bilabial shorter than a video frame
    # could fall between two frames' samples, so the frame that holds its middle is sealed outright.
    for seg in segs:
        if seg.phoneme in ("M", "B", "P"):
            seal[min(n_frames - 1, int((seg.start + seg.end) / 2 * fps))] = 1.0
    assert isinstance(opening, np.ndarray) and isinstance(vowel, np.ndarray) and isinstance(width, np.ndarray)
    return VisemeTrack(
        open=opening.mean(axis=1).astype(np.float32),
        vowel=vowel.mean(axis=1).astype(np.float32),
        width=np.clip(width.mean(axis=1), -1.0, 1.0).astype(np.float32),
        seal=seal.astype(np.float32),
        tuck=tuck.astype(np.float32),
    )
