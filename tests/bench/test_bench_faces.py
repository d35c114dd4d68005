"""Portrait variants: made from the persona photo; a good video or a clear error for each."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from avatar.bench.faces import check_variant, find_face, make_variants
from avatar.config import PROJECT_ROOT
from avatar.types import AudioArray, FaceAnimator

PORTRAIT = PROJECT_ROOT / "assets" / "personas" / "eileen" / "portrait.png"


@pytest.fixture(scope="module")
def variants(landmarker: Path) -> dict[str, object]:
    return {v.name: v for v in make_variants(PORTRAIT, landmarker)}


def test_variants_cover_the_issue(variants: dict) -> None:
    assert {
        "original",
        "large",
        "small",
        "tight-crop",
        "wide",
        "tall",
        "glasses",
        "dark",
        "bright",
        "rotated",
        "chin-cut",
        "two-people",
        "no-face",
        "not-an-image",
    } <= set(variants)
    assert variants["no-face"].expect == "error" and variants["original"].expect == "render"
    with Image.open(io.BytesIO(variants["wide"].data)) as wide:
        assert wide.width > wide.height


def test_no_face_variant_really_has_no_face(variants: dict, landmarker: Path, tmp_path: Path) -> None:
    path = tmp_path / "no-face.png"
    path.write_bytes(variants["no-face"].data)
    with pytest.raises(ValueError), Image.open(path) as image:
        find_face(image, landmarker)


@pytest.mark.parametrize(
    ("name", "outcome"),
    [("original", "rendered"), ("glasses", "rendered"), ("no-face", "error"), ("not-an-image", "error")],
)
def test_variant_outcomes(
    name: str,
    outcome: str,
    variants: dict,
    animator: FaceAnimator,
    landmarker: Path,
    speech: Callable[[str], AudioArray],
) -> None:
    result = check_variant(variants[name], animator, speech("Hello there, how are you?"), 24_000, landmarker)
    assert result.outcome == outcome and result.passed, result
    if outcome == "error":
        assert result.error_code in ("no_face", "invalid_image") and result.detail
    else:
        assert result.found_share == 1.0 and result.mouth_range is not None and result.mouth_range > 0.02
