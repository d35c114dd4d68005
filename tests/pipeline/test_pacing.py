"""The silence kept around each spoken piece of a reply: a short onset, and a pause by how it ends."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.pipeline.reply import (
    CLAUSE_PAUSE_S,
    PHRASE_PAUSE_S,
    SENTENCE_PAUSE_S,
    pause_after,
    trim_silence,
)

RATE = 24_000


def clip(before_s: float, sound_s: float, after_s: float) -> np.ndarray:
    tone = 0.3 * np.sin(np.arange(int(sound_s * RATE)) * 2 * np.pi * 220 / RATE).astype(np.float32)
    tone[0] = tone[-1] = 0.3  # the first and last samples are loud: the sound's exact edges
    return np.concatenate([np.zeros(int(before_s * RATE), np.float32), tone, np.zeros(int(after_s * RATE), np.float32)])


def test_long_silences_are_cut_and_short_ones_padded() -> None:
    out = trim_silence(clip(0.45, 1.0, 0.55), lead=int(0.1 * RATE), tail=int(0.3 * RATE))
    loud = np.flatnonzero(np.abs(out) > 0.01)
    assert loud[0] == int(0.1 * RATE) and out.size - 1 - loud[-1] == int(0.3 * RATE)
    assert loud[-1] - loud[0] + 1 == RATE  # the sound itself untouched
    out = trim_silence(clip(0.0, 0.5, 0.0), lead=480, tail=960)  # a voice that leaves no silence at all
    loud = np.flatnonzero(np.abs(out) > 0.01)
    assert loud[0] == 480 and out.size - 1 - loud[-1] == 960
    silent = np.zeros(RATE, np.float32)
    assert trim_silence(silent, 10, 10) is silent


@pytest.mark.parametrize(
    ("text", "pause"),
    [
        ("I flew the Space Shuttle.", SENTENCE_PAUSE_S),
        ('She said "go!"', SENTENCE_PAUSE_S),
        ("Was it fun?", SENTENCE_PAUSE_S),
        ("Flying was the best thing,", CLAUSE_PAUSE_S),
        ("The stars on the shuttle...", CLAUSE_PAUSE_S),
        ("The view from up there\u2026", CLAUSE_PAUSE_S),
        ("I looked down at the Earth", PHRASE_PAUSE_S),
    ],
)
def test_the_pause_after_a_piece_follows_how_it_ends(text: str, pause: float) -> None:
    assert pause_after(text) == pause
