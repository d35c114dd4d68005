"""Fixtures of the live-mode tests: recorded speech at the rates the live path uses, and one real
server for the package's end-to-end tests (started only by the tests that ask for it)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from avatar import media
from avatar.bench.fixtures import FIXTURES_DIR
from avatar.config import Settings
from avatar.quality.lipsync import MouthMeter
from avatar.types import AudioArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))  # live_server, shared with those tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pipeline"))  # scripted, the chat double
from live_server import ServerProcess, live_mode_server


@pytest.fixture(scope="session")
def fixture_speech() -> Callable[[str, int], AudioArray]:
    """A committed benchmark recording (``question-medium`` …) at ``rate``."""
    return lambda name, rate: media.decode_audio((FIXTURES_DIR / f"{name}.flac").read_bytes(), rate)


@pytest.fixture(scope="package")
def live(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> Iterator[ServerProcess]:
    """A server whose live connections stay on loopback, one at a time, with a short idle loop."""
    with live_mode_server(
        tmp_path_factory.mktemp("live"), AVATAR_MAX_LIVE_SESSIONS="1", AVATAR_LIVE_IDLE_LOOP_SECONDS="4"
    ) as server:
        yield server


@pytest.fixture(scope="package")
def voice(spoken_wav: Callable[[str], bytes]) -> Callable[[str], AudioArray]:
    """A sentence spoken, with a little silence around it, at the microphone's 48 kHz."""

    def spoken(text: str) -> AudioArray:
        speech = media.decode_audio(spoken_wav(text), 48_000)
        pad = np.zeros(4_800, np.float32)
        return np.concatenate([pad, speech, pad])

    return spoken


@pytest.fixture(scope="package")
def meter(settings: Settings) -> Iterator[MouthMeter]:
    mouth = MouthMeter(settings.model_path(settings.face_model))
    yield mouth
    mouth.close()
