"""Blinks and head sway, as pure functions of the frame index (and the seed); and the face listening
(``Listening``: nods at the user's phrase ends, fewer blinks, a stiller head), added to them.

Nothing here keeps state between calls, so rendering in chunks gives the same frames as rendering
at once, and the same seed always gives the same performance.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from avatar.types import FloatArray

BLINK_GAP_S = (2.0, 6.0)
"""Time between blinks, drawn uniformly."""
FIRST_BLINK_S = (0.8, 2.5)
BLINK_CLOSE_S, BLINK_OPEN_S = 0.06, 0.11
"""Lids drop fast and lift slower; about 150 ms in all."""

# Head sway: (idle amplitude, extra while speaking) per channel, and the slow sines that make it.
ROLL_DEG = (0.8, 0.9)
YAW_DEG = (1.2, 1.6)
PITCH_DEG = (0.8, 1.0)
SHIFT_X = (0.004, 0.005)
SHIFT_Y = (0.003, 0.003)
NOD_DEG = 1.2
"""Extra downward nod on stressed syllables (faster swell of speech than its average)."""
SWAY_HZ = (0.07, 0.45)


@lru_cache(maxsize=1 << 16)
def _blink_gap(seed: int, k: int) -> float:
    """Seconds from blink ``k - 1`` to blink ``k`` (from the start, for the first)."""
    lo, hi = FIRST_BLINK_S if k == 0 else BLINK_GAP_S
    return float(np.random.default_rng([seed, k]).uniform(lo, hi))


def _blink_times(seed: int, count: int) -> tuple[float, ...]:
    """Start times of the first ``count`` blinks. Blink ``k`` depends on ``(seed, k)`` only (each gap is
    drawn once: a random generator made per blink cost 9 ms a call 30 minutes into a timeline)."""
    return tuple(itertools.accumulate(_blink_gap(seed, k) for k in range(count)))


def blinks(start: int, stop: int, fps: int, seed: int) -> FloatArray:
    """Eyelid closure (0 open … 1 closed) for frames ``start`` to ``stop``."""
    t_end = stop / fps
    count = max(1, math.ceil(t_end / BLINK_GAP_S[0]) + 2)
    times = _blink_times(seed, count)
    out = np.zeros(stop - start, np.float32)
    frame_t = (np.arange(start, stop) + 0.5) / fps
    near = (start / fps - BLINK_OPEN_S - 2 / fps, t_end + BLINK_CLOSE_S + 2 / fps)  # the snap moves a blink a frame
    for t in times:
        if not near[0] <= t <= near[1]:
            continue  # a blink far from these frames leaves them open
        # Snap the fully-closed instant onto a frame so every blink really closes on screen.
        closed = (math.floor(t * fps) + 0.5) / fps
        out = np.maximum(out, _blink_shape(frame_t - closed))
    return (out * out * (3 - 2 * out)).astype(np.float32)


def _sway(seed: int, channel: int, t: FloatArray) -> FloatArray:
    """A smooth wander in about [−1, 1]: three incommensurate slow sines with seeded phases."""
    rng = np.random.default_rng([seed, 1000 + channel])
    freqs = rng.uniform(*SWAY_HZ, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    weights = np.array([0.55, 0.3, 0.15])
    return np.sum(weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]), axis=0).astype(
        np.float32
    )


def head_motion(start: int, stop: int, fps: int, seed: int, activity: FloatArray, emphasis: FloatArray) -> FloatArray:
    """(n, 5) roll, yaw, pitch (radians), shift x, shift y (face heights) for frames ``start:stop``.

    ``activity`` (0…1, slow) and ``emphasis`` (stress swells) are the frames' slices of the speech
    track: the head moves a little when idle and more when talking.
    """
    t = ((np.arange(start, stop) + 0.5) / fps).astype(np.float32)
    out = np.zeros((stop - start, 5), np.float32)
    for ch, (idle, extra) in enumerate((ROLL_DEG, YAW_DEG, PITCH_DEG, SHIFT_X, SHIFT_Y)):
        amp = idle + extra * activity
        out[:, ch] = _sway(seed, ch, t) * amp
    out[:, :3] = np.radians(out[:, :3])
    out[:, 2] += math.radians(NOD_DEG) * emphasis
    return out


# Listening: while the user speaks, the face attends to them. Everything below is added to the idle
# motion with a weight that eases in when they begin and out after they stop, so a listening frame
# at weight 0 is exactly the idle frame (the face joins its idle loop or its reply without a jump).
LISTEN_EASE_S = 0.4
"""The weight rises over this from the user's first sound and falls over this after their last."""
LISTEN_NOD_DEG = 2.5
"""A nod at each of the user's phrase ends (a pause in their speech): twice the idle sway."""
LISTEN_NOD_S = (0.15, 0.2, 0.35)
"""The nod begins this long after the phrase end, takes this long down and this long back up."""
LISTEN_TILT_DEG = 0.6
"""The head held a little lower (towards the speaker) while listening."""
LISTEN_STILLER = 0.4
"""The idle sway is this much smaller while listening (attention, not wandering)."""
LISTEN_BLINK_EVERY = 3
"""While listening only every third blink of the idle schedule happens (attentive eyes)."""


@dataclass(frozen=True)
class Listening:
    """The user's turn on the face's timeline, in seconds: when they spoke (``spans``, start and end)
    and where their phrases ended (``phrase_ends``: the pauses in their speech)."""

    spans: tuple[tuple[float, float], ...]
    phrase_ends: tuple[float, ...] = ()

    def weight(self, t: FloatArray) -> FloatArray:
        """How much the face listens at times ``t`` (0 … 1, eased in and out)."""
        out = np.zeros(t.shape, np.float32)
        for begin, end in self.spans:
            rise = np.clip((t - begin) / LISTEN_EASE_S, 0, 1)
            fall = np.clip(1 - (t - end) / LISTEN_EASE_S, 0, 1)
            out = np.maximum(out, np.minimum(rise, fall).astype(np.float32))
        return (out * out * (3 - 2 * out)).astype(np.float32)


def listening_motion(start: int, stop: int, fps: int, listening: Listening) -> tuple[FloatArray, FloatArray]:
    """What listening adds to ``head_motion`` for frames ``start:stop`` ((n, 5), the same channels), and
    the frames' listening weights (for ``listening_blinks`` and the sway, ``listening_sway``)."""
    t = ((np.arange(start, stop) + 0.5) / fps).astype(np.float32)
    weight = listening.weight(t)
    nods = np.zeros(t.shape, np.float32)
    delay, down, up = LISTEN_NOD_S
    for end in listening.phrase_ends:
        u = t - (end + delay)
        going = np.clip(u / down, 0, 1) * (u < down)
        coming = np.clip(1 - (u - down) / up, 0, 1) * (u >= down)
        shape = going + coming
        nods = np.maximum(nods, (shape * shape * (3 - 2 * shape)).astype(np.float32))
    out = np.zeros((stop - start, 5), np.float32)
    # A nod is whole in itself (from rest and back), so it is not eased: it happens in full even where
    # the tilt eases out (a pause that may end the user's turn), and a reply drawn with the same
    # ``Listening`` goes on with it where it is.
    out[:, 2] = np.radians(LISTEN_NOD_DEG * nods + LISTEN_TILT_DEG * weight)
    return out, weight


def listening_sway(sway: FloatArray, weight: FloatArray) -> FloatArray:
    """``head_motion``'s sway, stiller while listening."""
    return (sway * (1 - LISTEN_STILLER * weight)[:, None]).astype(np.float32)


def listening_blinks(start: int, stop: int, fps: int, seed: int, weight: FloatArray) -> FloatArray:
    """``blinks`` with fewer blinks while listening: of those whose closed instant falls where the face
    listens (weight over a half), only every ``LISTEN_BLINK_EVERY``-th stays."""
    t_end = stop / fps
    times = _blink_times(seed, max(1, math.ceil(t_end / BLINK_GAP_S[0]) + 2))
    frame_t = (np.arange(start, stop) + 0.5) / fps
    out = np.zeros(stop - start, np.float32)
    for k, t in enumerate(times):
        closed = (math.floor(t * fps) + 0.5) / fps
        at = math.floor(t * fps) - start
        listening = 0 <= at < len(weight) and weight[at] > 0.5
        if listening and k % LISTEN_BLINK_EVERY:
            continue
        out = np.maximum(out, _blink_shape(frame_t - closed))
    return (out * out * (3 - 2 * out)).astype(np.float32)


def _blink_shape(dt: np.ndarray) -> FloatArray:
    """One blink's closure (before easing) at ``dt`` seconds from its closed instant."""
    closing = np.clip(1 + dt / BLINK_CLOSE_S, 0, 1) * (dt <= 0)
    opening = np.clip(1 - dt / BLINK_OPEN_S, 0, 1) * (dt > 0)
    return (closing + opening).astype(np.float32)
