"""Speech features per video frame: how open the mouth is, how wide or round, how lively the head.

Frame ``i`` is on screen from ``i/fps`` to ``(i+1)/fps``; its features come from a window centred
in that interval. Openness follows the loudness through two attack/release followers, one running
forwards in time (lips close a little after the sound stops) and one backwards (they start to part
a little before it starts); taking the larger keeps each peak on its own frame, so nothing lags.
Loudness is judged relative to the utterance itself: quiet and loud voices move the mouth alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avatar.errors import InvalidAudioError
from avatar.types import FloatArray

from .visemes import VisemeTrack

WINDOW_FRAMES = 2.0
"""Analysis window, in video frames (80 ms at 25 fps): long enough to span a pitch period or two."""
SILENCE_DBFS = -60.0
"""Frames quieter than this are silence whatever the utterance's level."""
RANGE_DB = 28.0
"""Loudness range mapped onto the mouth: this far below the utterance's loud vowels it is closed."""
CURVE = 2.0
"""Openness grows with the square of loudness above the floor: vowels open, consonants barely."""
ATTACK_S = 0.02
CLOSE_S, ANTICIPATE_S = 0.05, 0.03
"""Release of the forward follower (closing after sound) and of the backward one (parting before)."""
DEAD_ZONE = 0.04
"""Openness below this (smoothing tails) is exactly closed, so silent frames equal the rest frame."""


@dataclass(frozen=True)
class SpeechTrack:
    """Per-frame controls, each (n,) float32."""

    open: FloatArray
    """0 closed (rest) … 1 wide open."""
    width: FloatArray
    """−1 rounded ("oo") … +1 spread ("ee")."""
    activity: FloatArray
    """0 silent … 1 speaking, slow: how animated the head is."""
    emphasis: FloatArray
    """0 … 1 where speech swells above its running average (stressed syllables): a small nod."""
    seal: FloatArray | None = None
    """0 … 1 lips pressed together (m, b, p); only known from the phones."""
    tuck: FloatArray | None = None
    """0 … 1 lower lip to the upper teeth (f, v); only known from the phones."""
    pucker: FloatArray | None = None
    """0 … 1 lips rounded and pushed forward (oo, oh, w); only known from the phones."""


LOUDNESS_FLOOR = 0.45
"""With phones, a vowel said at the utterance's quietest opens this share of its shape; at its loudest
a little more than all of it (``LOUDNESS_FLOOR + LOUDNESS_GAIN``)."""
LOUDNESS_GAIN = 0.7
PAUSE_SEAL = 0.8
"""How far the lips close in a pause between words."""
SPREAD_GAIN = 1.5


def with_visemes(track: SpeechTrack, shapes: VisemeTrack, fps: int) -> SpeechTrack:
    """The mouth from the sounds (``shapes``), the vowels' opening scaled by loudness; head motion
    (activity, emphasis) stays the audio's."""
    c = _coefficient(0.08, fps)
    loud = _zero_phase(track.open, c, c)
    gain = np.clip(LOUDNESS_FLOOR + LOUDNESS_GAIN * loud / max(float(loud.max()), 1e-3), 0.0, 1.2)
    opened = (shapes.open - shapes.vowel) + shapes.vowel * gain
    # A pause in the sound closes the lips most of the way (``shapes.hush`` keeps the clip's ends open
    # as the photo is); following the audio, not the phones, so they part as the sound comes back.
    quiet = np.clip(1.0 - track.open / 0.05, 0.0, 1.0)
    c = _coefficient(0.04, fps)
    quiet = np.minimum(quiet, _zero_phase(quiet, c, c))
    # …and they stay together until the phones' next sound begins: the audio's loudness comes back a
    # little early (its window is two frames), and the smiling photo's teeth flashed for a frame or
    # two before an "m" that then shut them (measured: the lips opened 80 ms before "My name").
    quiet = np.maximum(quiet, shapes.rest)
    seal = np.maximum(shapes.seal, PAUSE_SEAL * shapes.hush * quiet).astype(np.float32)
    opened = np.clip(opened * (1.0 - seal), 0.0, 1.0).astype(np.float32)
    # Rounding is its own shape (``pucker``); spreading widens the mouth through ``width``, a little
    # more than the audio's estimate may (the phones are sure of it).
    return SpeechTrack(
        open=opened,
        width=np.clip(SPREAD_GAIN * shapes.width, 0.0, SPREAD_GAIN).astype(np.float32),
        pucker=np.clip(-shapes.width, 0.0, 1.0).astype(np.float32),
        activity=track.activity,
        emphasis=track.emphasis,
        seal=seal,
        tuck=shapes.tuck,
    )


def _one_pole(x: FloatArray, up: float, down: float) -> FloatArray:
    """Attack/release follower: ``up`` and ``down`` are per-step coefficients in (0, 1]."""
    out = np.empty_like(x)
    level = 0.0
    for i, v in enumerate(x.tolist()):
        level += (up if v > level else down) * (v - level)
        out[i] = level
    return out


def _zero_phase(x: FloatArray, up: float, down: float) -> FloatArray:
    """The follower run forwards then backwards: symmetric in time, hence no lag."""
    return _one_pole(_one_pole(x, up, down)[::-1].copy(), up, down)[::-1].copy()


def _coefficient(seconds: float, fps: int) -> float:
    return 1.0 - math.exp(-1.0 / (seconds * fps))


def _frames(audio: FloatArray, sample_rate: int, n_frames: int, fps: int) -> FloatArray:
    """(n_frames, window) samples, window ``i`` centred on frame ``i``'s interval."""
    window = max(16, round(sample_rate * WINDOW_FRAMES / fps))
    hop = sample_rate / fps
    starts = np.round((np.arange(n_frames) + 0.5) * hop - window / 2).astype(np.int64)
    padded = np.concatenate([np.zeros(window, np.float32), audio, np.zeros(window, np.float32)])
    index = starts[:, None] + window + np.arange(window)[None, :]
    return padded[np.clip(index, 0, len(padded) - 1)]


def _band(power: FloatArray, freqs: FloatArray, lo: float, hi: float) -> FloatArray:
    sel = (freqs >= lo) & (freqs < hi)
    if not sel.any():
        return np.zeros(len(power), np.float32)
    return power[:, sel].sum(axis=1).astype(np.float32)


def validate(audio: object) -> FloatArray:
    """Mono float32, finite; a trailing channel axis of one is accepted."""
    if not isinstance(audio, np.ndarray):
        raise InvalidAudioError(f"Audio must be a float array, not {type(audio).__name__}")
    if audio.ndim == 2 and audio.shape[1] == 1:
        audio = audio[:, 0]
    if audio.ndim != 1:
        raise InvalidAudioError(f"Audio must be mono (n,), got shape {audio.shape}")
    return np.nan_to_num(audio.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)


def analyse(audio: FloatArray, sample_rate: int, n_frames: int, fps: int) -> SpeechTrack:
    """Mouth and head controls for ``n_frames`` video frames of ``audio``."""
    if sample_rate <= 0:
        raise InvalidAudioError(f"Sample rate must be positive, got {sample_rate}")
    frames = _frames(validate(audio), sample_rate, n_frames, fps)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    silent = rms < 10 ** (SILENCE_DBFS / 20)

    n_fft = 1 << (frames.shape[1] - 1).bit_length()
    spectrum = np.fft.rfft(frames * np.hanning(frames.shape[1]).astype(np.float32), n=n_fft, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate).astype(np.float32)
    # Voiced speech energy (fricative hiss above 4 kHz barely opens the jaw).
    voice = _band(power, freqs, 80, 4000)
    level = 10 * np.log10(voice + 1e-12)
    zeros = np.zeros(n_frames, np.float32)
    if silent.all():
        return SpeechTrack(open=zeros, width=zeros.copy(), activity=zeros.copy(), emphasis=zeros.copy())
    loud = float(np.percentile(level[~silent], 95))
    raw = (np.clip((level - (loud - RANGE_DB)) / RANGE_DB, 0.0, 1.0) ** CURVE).astype(np.float32)
    raw[silent] = 0.0
    attack = _coefficient(ATTACK_S, fps)
    after = _one_pole(raw, attack, _coefficient(CLOSE_S, fps))
    before = _one_pole(raw[::-1].copy(), attack, _coefficient(ANTICIPATE_S, fps))[::-1]
    opened = np.maximum(after, before)
    # A [¼ ½ ¼] pass cancels frame-to-frame up-down flutter (it has no response at half the frame
    # rate) while leaving syllable-rate motion; being symmetric, it adds no lag.
    opened = np.convolve(np.pad(opened, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid").astype(np.float32)
    opened = np.clip((opened - DEAD_ZONE) / (1 - DEAD_ZONE), 0.0, 1.0).astype(np.float32)

    # Spread vs rounded: "ee" puts energy high (second formant near 2.3 kHz), "oo" keeps it low.
    # Judged against the speaker's own average so that voice timbre does not bias it.
    tilt = np.log(_band(power, freqs, 1500, 4000) + 1e-12) - np.log(_band(power, freqs, 200, 1200) + 1e-12)
    voiced = raw > 0.3
    width = zeros.copy()
    if voiced.sum() >= 3:
        mean, spread = float(tilt[voiced].mean()), float(tilt[voiced].std()) + 1e-3
        width = np.tanh((tilt - mean) / (1.5 * spread)).astype(np.float32) * (raw > 0)
        c = _coefficient(0.05, fps)
        width = _zero_phase(width, c, c)
    slow = _zero_phase(opened, _coefficient(0.5, fps), _coefficient(0.5, fps))
    activity = np.clip(slow * 2.5, 0.0, 1.0).astype(np.float32)
    quick = _zero_phase(opened, _coefficient(0.12, fps), _coefficient(0.12, fps))
    emphasis = np.clip((quick - slow) * 2.0, 0.0, 1.0).astype(np.float32)
    return SpeechTrack(open=opened, width=width.astype(np.float32), activity=activity, emphasis=emphasis)
