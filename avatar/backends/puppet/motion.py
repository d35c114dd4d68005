"""Blinks and head sway, as pure functions of the frame index (and the seed).

Nothing here keeps state between calls, so rendering in chunks gives the same frames as rendering
at once, and the same seed always gives the same performance.
"""

from __future__ import annotations

import math
from functools import cache

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


@cache
def _blink_times(seed: int, count: int) -> tuple[float, ...]:
    """Start times of the first ``count`` blinks. Blink ``k`` depends on ``(seed, k)`` only."""
    times: list[float] = []
    t = 0.0
    for k in range(count):
        lo, hi = FIRST_BLINK_S if k == 0 else BLINK_GAP_S
        t += float(np.random.default_rng([seed, k]).uniform(lo, hi))
        times.append(t)
    return tuple(times)


def blinks(start: int, stop: int, fps: int, seed: int) -> FloatArray:
    """Eyelid closure (0 open … 1 closed) for frames ``start`` to ``stop``."""
    t_end = stop / fps
    count = max(1, math.ceil(t_end / BLINK_GAP_S[0]) + 2)
    times = _blink_times(seed, count)
    out = np.zeros(stop - start, np.float32)
    frame_t = (np.arange(start, stop) + 0.5) / fps
    for t in times:
        # Snap the fully-closed instant onto a frame so every blink really closes on screen.
        closed = (math.floor(t * fps) + 0.5) / fps
        dt = frame_t - closed
        closing = np.clip(1 + dt / BLINK_CLOSE_S, 0, 1) * (dt <= 0)
        opening = np.clip(1 - dt / BLINK_OPEN_S, 0, 1) * (dt > 0)
        out = np.maximum(out, (closing + opening).astype(np.float32))
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
