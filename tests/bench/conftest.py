"""Fixtures for the bench/eval tests: the real face animator and the landmarker that measures it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from avatar.backends.factory import model_specs
from avatar.config import Settings
from avatar.types import FaceAnimator


@pytest.fixture(scope="session")
def landmarker(settings: Settings, prepared_models: Path) -> Path:
    return settings.model_path(settings.face_model)


@pytest.fixture(scope="session")
def animator(settings: Settings, prepared_models: Path) -> Iterator[FaceAnimator]:
    """The configured talking head alone (about a second to load), without the other models."""
    face: FaceAnimator = model_specs(settings, ("face",))[0].factory()  # type: ignore[assignment]
    face.warmup()
    yield face
    face.close()
