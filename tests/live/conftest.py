"""Fixtures of the live-mode tests: recorded speech at the rates the live path uses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from avatar import media
from avatar.bench.fixtures import FIXTURES_DIR
from avatar.types import AudioArray


@pytest.fixture(scope="session")
def fixture_speech() -> Callable[[str, int], AudioArray]:
    """A committed benchmark recording (``question-medium`` …) at ``rate``."""
    return lambda name, rate: media.decode_audio((FIXTURES_DIR / f"{name}.flac").read_bytes(), rate)
