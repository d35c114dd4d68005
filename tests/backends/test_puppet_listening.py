"""The puppet listening (``motion.Listening``): while the user speaks the face nods at their phrase
ends, blinks less and keeps its mouth still, eased in and out of its idle motion. Judged on real
rendered frames by an independent FaceLandmarker, as in test_face_puppet.py."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from avatar.backends.face_puppet import PuppetAnimator
from avatar.backends.puppet.landmarks import CHIN, FOREHEAD, LIP_BOTTOM, LIP_TOP, NOSE_TIP, Landmarker
from avatar.backends.puppet.motion import LISTEN_EASE_S, LISTEN_NOD_S, Listening, blinks, listening_blinks
from avatar.types import FrameArray

RATE, FPS = 24_000, 25
SECONDS = 10.0
LISTENING = Listening(spans=((1.0, 9.0),), phrase_ends=(2.4, 4.6, 7.8))
NOD_PEAK_S = LISTEN_NOD_S[0] + LISTEN_NOD_S[1]  # after a phrase end, the head is lowest


def measure(probe: Landmarker, frame: FrameArray) -> tuple[float, float, float]:
    """Inner-lip gap, nose tip height (down is +) and eye opening, in face heights, on one frame."""
    faces = probe.detect(frame)
    assert faces, "the landmarker lost the face in a rendered frame"
    lm = faces[0][:, :2]
    height = float(np.linalg.norm(lm[CHIN] - lm[FOREHEAD]))
    eye = (np.linalg.norm(lm[159] - lm[145]) + np.linalg.norm(lm[386] - lm[374])) / 2
    return (
        float(np.linalg.norm(lm[LIP_BOTTOM] - lm[LIP_TOP])) / height,
        float(lm[NOSE_TIP, 1]) / height,
        float(eye) / height,
    )


@pytest.fixture(scope="module")
def rendered(lively: PuppetAnimator, eileen: FrameArray, face_probe: Landmarker) -> Iterator[dict[str, np.ndarray]]:
    """The face idling and listening over the same 8 s (drawn from silence, in chunks as live mode
    draws), and what the probe measures on every frame."""
    face = lively.prepare(eileen)
    silence = np.zeros(int(SECONDS * RATE), np.float32)
    idle = np.concatenate(list(lively.render_chunks(face, silence, RATE, chunk_frames=10)))
    listening = np.concatenate(list(lively.render_chunks(face, silence, RATE, chunk_frames=10, listening=LISTENING)))
    yield {
        "idle": idle,
        "listening": listening,
        "idle_m": np.array([measure(face_probe, f) for f in idle]),
        "listening_m": np.array([measure(face_probe, f) for f in listening]),
        "rest": np.array(measure(face_probe, face.image)),
    }


def frame(seconds: float) -> int:
    return int(seconds * FPS)


def test_the_mouth_stays_still_while_listening(rendered: dict[str, np.ndarray]) -> None:
    gaps = rendered["listening_m"][:, 0]
    rest = rendered["rest"][0]
    assert np.abs(gaps - rest).max() < 0.01  # as still as idling (test_face_puppet: same bound)
    # the mouth region moves only with the head: frame to frame it changes no more than idling does
    idle_steps = np.abs(np.diff(rendered["idle_m"][:, 0])).max()
    assert np.abs(np.diff(gaps)).max() <= idle_steps + 0.004


def test_the_head_nods_at_the_phrase_ends(rendered: dict[str, np.ndarray]) -> None:
    nose = rendered["listening_m"][:, 1] - rendered["idle_m"][:, 1]  # the head lower than idling: +
    peaks = []
    for end in LISTENING.phrase_ends:
        peak = nose[frame(end + NOD_PEAK_S) - 1 : frame(end + NOD_PEAK_S) + 2].max()
        before = nose[frame(end) - 3 : frame(end)].mean()  # listening, between nods: only the slight tilt
        assert peak > before + 0.015, (end, peak, before)  # 2.5 degrees of nod, on top of the tilt
        peaks.append(peak)
    ((begin, end),) = LISTENING.spans
    nodding = np.zeros(len(nose), bool)
    for phrase_end in LISTENING.phrase_ends:
        nodding[frame(phrase_end) : frame(phrase_end + sum(LISTEN_NOD_S)) + 2] = True
    calm = nose[frame(begin) : frame(end)][~nodding[frame(begin) : frame(end)]]
    assert calm.max() < min(peaks) - 0.015  # no nod where the user did not pause


def test_listening_eases_in_and_out_of_the_idle_motion(rendered: dict[str, np.ndarray]) -> None:
    idle, listening = rendered["idle"], rendered["listening"]
    ((begin, end),) = LISTENING.spans
    assert np.array_equal(idle[: frame(begin)], listening[: frame(begin)])  # before: the idle face itself
    after = frame(end + LISTEN_EASE_S) + 1
    assert np.array_equal(idle[after:], listening[after:])  # after: back to it exactly
    # no jump into or out of it: what listening adds to the head's height grows and fades frame by frame
    added = rendered["listening_m"][:, 1] - rendered["idle_m"][:, 1]
    for edge in (begin, end):
        window = slice(frame(edge) - 2, frame(edge + LISTEN_EASE_S) + 2)
        assert np.abs(np.diff(added[window])).max() < 0.005, (edge, np.diff(added[window]))


def test_fewer_blinks_while_listening(rendered: dict[str, np.ndarray], lively: PuppetAnimator) -> None:
    n = frame(SECONDS)
    ((begin, end),) = LISTENING.spans
    t = (np.arange(n) + 0.5) / FPS
    weight = LISTENING.weight(t.astype(np.float32))
    planned_idle = blinks(0, n, FPS, lively.seed)
    planned = listening_blinks(0, n, FPS, lively.seed, weight)
    inside = slice(frame(begin + LISTEN_EASE_S), frame(end))

    def count(closure: np.ndarray) -> int:
        closed = (closure > 0.5).astype(int)
        return int(np.sum(np.diff(np.concatenate([[0], closed])) == 1))

    assert count(planned[inside]) < count(planned_idle[inside])  # this seed blinks in the span when idle
    # ... and on the frames: the eyes close as often as planned
    eyes = rendered["listening_m"][:, 2]
    shut = eyes < 0.5 * np.median(eyes)
    assert count(shut[inside].astype(float)) == count(planned[inside])
    assert np.array_equal(planned[: frame(begin)], planned_idle[: frame(begin)])


def test_blinks_far_into_a_timeline_are_the_schedules_own() -> None:
    """Only the blinks near the frames asked for are drawn, each gap drawn once: the same lids as the
    whole schedule gives (recomputed here the plain way), at any frame rate and however late."""
    import math

    import numpy as np

    from avatar.backends.puppet import motion

    def reference(start: int, stop: int, fps: int, seed: int) -> np.ndarray:
        t, out = 0.0, np.zeros(stop - start, np.float32)
        frame_t = (np.arange(start, stop) + 0.5) / fps
        for k in range(math.ceil(stop / fps / motion.BLINK_GAP_S[0]) + 2):
            lo, hi = motion.FIRST_BLINK_S if k == 0 else motion.BLINK_GAP_S
            t += float(np.random.default_rng([seed, k]).uniform(lo, hi))
            out = np.maximum(out, motion._blink_shape(frame_t - (math.floor(t * fps) + 0.5) / fps))
        return (out * out * (3 - 2 * out)).astype(np.float32)

    for fps in (5, 25, 50):
        for start in (0, 3, 997, 40_000):
            for length in (1, 5, 40):
                got = motion.blinks(start, start + length, fps, seed=7)
                assert np.array_equal(got, reference(start, start + length, fps, 7)), (fps, start, length)
    whole = motion.blinks(0, 3000, 25, 7)
    assert whole.max() > 0.99 and np.count_nonzero(whole > 0.5) > 10  # they do close, often
