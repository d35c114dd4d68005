"""Fixtures for the face-puppet tests: one animator, one prepared portrait and real speech per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.types import AudioArray, FrameArray

ROOT = Path(__file__).resolve().parents[2]
LANDMARKER = ROOT / "models_cache" / "face" / "face_landmarker.task"
PORTRAIT = ROOT / "assets" / "personas" / "eileen" / "portrait.png"
SPEECH_RATE = 24_000


@pytest.fixture(scope="session")
def landmarker_path() -> Path:
    if not LANDMARKER.is_file():
        pytest.fail(f"{LANDMARKER} missing: run `avatar models prepare` (or `make test`, which prepares it)")
    return LANDMARKER


@pytest.fixture(scope="session")
def eileen() -> FrameArray:
    """The persona portrait as RGB (512×512, a smiling face of about 110 pixels)."""
    bgr = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    assert bgr is not None, PORTRAIT
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="session")
def puppet(landmarker_path: Path) -> Iterator[object]:
    """An animator without blinks or head sway: any pixel change comes from the speech alone."""
    from avatar.backends.face_puppet import PuppetAnimator

    animator = PuppetAnimator(landmarker_path, blink=False, head_motion=False)
    animator.warmup()
    yield animator
    animator.close()


@pytest.fixture(scope="session")
def lively(landmarker_path: Path) -> Iterator[object]:
    """The animator as the product runs it: blinks and head sway on."""
    from avatar.backends.face_puppet import PuppetAnimator

    animator = PuppetAnimator(landmarker_path)
    yield animator
    animator.close()


@pytest.fixture(scope="session")
def eileen_face(puppet: object, eileen: FrameArray) -> object:
    from avatar.backends.face_puppet import PuppetAnimator

    assert isinstance(puppet, PuppetAnimator)
    return puppet.prepare(eileen)


@pytest.fixture(scope="session")
def hibari_speech() -> AudioArray:
    """About four seconds of real synthesised speech at 24 kHz."""
    from hibari import Hibari

    tts = Hibari(threads=1)
    audio = tts("Hello there! I flew the space shuttle twice, and I loved every minute of it.", seed=0)
    return np.asarray(audio, dtype=np.float32)


@pytest.fixture(scope="session")
def face_probe(landmarker_path: Path) -> Iterator[object]:
    """An independent FaceLandmarker to measure the rendered frames."""
    from avatar.backends.puppet.landmarks import Landmarker

    probe = Landmarker(landmarker_path, max_faces=1)
    yield probe
    probe.close()
