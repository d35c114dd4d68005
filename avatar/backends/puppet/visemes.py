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
from openfacefx.phonemes import SILENCE
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
    "SS": (0.3, 0.45),
    "nn": (0.28, 0.05),
    "RR": (0.3, -0.5),
    "aa": (1.0, 0.1),
    "E": (0.62, 0.55),
    "I": (0.45, 1.0),
    "O": (0.7, -0.85),
    "U": (0.32, -1.0),
}  # fmt: skip
VOWELS = ("aa", "E", "I", "O", "U")
CLOSURE_FLOOR = 0.9
"""openfacefx's enforced bilabial weight: at or above it the lips are sealed."""
SEAL_FROM = 0.6
"""Share of the enforced closure weight at which the lips start to seal."""
PAUSE_RAMP_S = 0.25
"""Pauses close the lips fully from this long after the clip starts to as long before it ends."""
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
    hush: FloatArray
    """0 … 1: how far a pause here may close the lips (0 at the clip's ends)."""
    rest: FloatArray
    """0 … 1: the phones' own silence (openfacefx's ``sil`` weight, handing over to the next sound)."""


def _smoothstep(edge0: float, edge1: float, x: FloatArray) -> FloatArray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return np.asarray(t * t * (3 - 2 * t))


def segments(phones: Sequence[Phone], duration: float) -> list[PhonemeSegment]:
    """openfacefx's input: ARPAbet segments in time order over ``[0, duration]``, the time between
    sounds given to silence (openfacefx itself lets a short one run into the sound before it)."""
    out: list[PhonemeSegment] = []
    at = 0.0
    for p in sorted(phones, key=lambda p: p.start):
        start, end = max(float(p.start), at), float(p.end)
        if end <= start:
            continue
        if start - at > 1e-3:
            out.append(PhonemeSegment(SILENCE, at, start))
        out.append(PhonemeSegment(MISAKI_TO_ARPABET.get(p.symbol, "HH"), start, end))
        at = end
    if out and duration - at > 1e-3:
        out.append(PhonemeSegment(SILENCE, at, duration))
    return out


def viseme_track(phones: Sequence[Phone], n_frames: int, fps: int) -> VisemeTrack | None:
    """Controls for ``n_frames`` frames from ``phones`` (seconds from the clip's start); None when
    there are no sounds to follow (the caller falls back to the audio)."""
    segs = segments(phones, n_frames / fps)
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
    # openfacefx lets the lips' target rise well ahead of the closure (they round and narrow early);
    # only its top is a seal, or a smiling photo's lips would shut over its teeth 100 ms too soon.
    seal = _smoothstep(SEAL_FROM, 1.0, weights["PP"] / CLOSURE_FLOOR).max(axis=1)
    tuck = _smoothstep(SEAL_FROM, 1.0, weights["FF"] / CLOSURE_FLOOR).max(axis=1)
    # In a pause the lips come together as a speaker's do (a smiling photo's teeth are covered until
    # the next word: ``with_visemes`` finds the pauses in the audio); at the clip's very start and end
    # the mouth is the photo's own again, as between replies, so clips join the idle face without a jump.
    sounds = [seg for seg in segs if seg.phoneme != SILENCE]
    lead, tail = sounds[0].start, n_frames / fps - sounds[-1].end
    ramp_in = np.clip(centres / max(min(lead, PAUSE_RAMP_S), 1e-3), 0.0, 1.0)
    ramp_out = np.clip((n_frames / fps - centres) / max(min(tail, PAUSE_RAMP_S), 1e-3), 0.0, 1.0)
    hush = np.minimum(ramp_in, ramp_out)
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
        hush=hush.astype(np.float32),
        rest=weights["sil"].mean(axis=1).astype(np.float32),
    )
