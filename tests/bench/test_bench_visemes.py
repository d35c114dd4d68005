"""The viseme check of `make eval` on real models: it passes where the lips follow the sounds, tells a
mouth driven by loudness alone apart, and writes its strip."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from avatar.bench.eval import _Checks
from avatar.bench.viseme_check import PORTRAITS, bearded, visemes_section
from avatar.quality import lipsync
from avatar.types import FaceAnimator

LIMITS = {
    "viseme_closure_ratio_min": 2.0,
    "viseme_bilabials_closed_min": 0.8,
    "viseme_rounded_narrower_min": 1,
    "viseme_labiodentals_at_teeth_min": 0.8,
}


def values(checks: _Checks) -> dict[str, float | None]:
    return {row["name"]: row["value"] for row in checks.rows}


@pytest.fixture(scope="module")
def tts() -> Iterator[Any]:
    from avatar.backends.hibari_tts import HibariSynthesizer

    synth = HibariSynthesizer()
    yield synth
    synth.close()


class AudioOnly:
    """The same voice without its phonemes (as XTTS speaks): nothing to check."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.sample_rate, self.name = inner, inner.sample_rate, "audio-only"

    def synthesize(self, text: str, voice: Any) -> Any:
        return self.inner.synthesize(text, voice)


def test_the_check_passes_on_a_closed_mouth_and_writes_its_strip(
    tts, animator: FaceAnimator, landmarker: Path, tmp_path: Path
) -> None:
    checks = _Checks(LIMITS)
    section = visemes_section(
        tts, animator, landmarker, checks, {"closed mouth": PORTRAITS["closed mouth"]}, strips=tmp_path
    )
    found = values(checks)
    assert (found["viseme_closure_ratio"] or 0) >= 2.0
    assert (found["viseme_bilabials_closed"] or 0) >= 0.8
    assert found["viseme_rounded_narrower"] == 1.0
    assert len(section["rows"]) == 1
    strip = Image.open(tmp_path / "mouth-strip-hopper.png")
    assert strip.width > 5 * strip.height


def test_a_voice_without_phonemes_is_not_measured(tts, animator: FaceAnimator, landmarker: Path) -> None:
    checks = _Checks(LIMITS)
    section = visemes_section(AudioOnly(tts), animator, landmarker, checks, strips=None)  # type: ignore[arg-type]
    assert list(values(checks).values()) == [None, None, None, None]
    assert "no phoneme timings" in section["text"] and not section["rows"]


def test_the_painted_beard_covers_the_lower_face_and_leaves_the_lips(landmarker: Path) -> None:
    meter = lipsync.MouthMeter(landmarker)
    try:
        image = np.asarray(Image.open(PORTRAITS["closed mouth"][1]).convert("RGB"))
        face = meter.faces(image)[0]
        painted = bearded(image, face)
        again = meter.faces(painted)
    finally:
        meter.close()
    assert len(again) == 1  # still a face
    lip = face[14, :2].astype(int)
    x, y = ((face[17, :2] + face[152, :2]) / 2).astype(int)  # between the lower lip and the chin
    patch = np.s_[y - 3 : y + 4, x - 3 : x + 4]
    assert painted[patch].mean() < image[patch].mean() - 15  # hair on the chin
    assert np.abs(painted[lip[1], lip[0]].astype(int) - image[lip[1], lip[0]]).max() < 12  # the lips bare


class SealsLabiodentals:
    """The same talking head, told that every f and v is an m: its lips seal there instead of the lower
    lip coming up to the teeth (a mouth with no f/v shape of its own)."""

    def __init__(self, inner: FaceAnimator) -> None:
        self.inner, self.fps = inner, inner.fps

    def prepare(self, image: Any) -> Any:
        return self.inner.prepare(image)

    def render(self, face: Any, audio: Any, sample_rate: int, **kwargs: Any) -> Any:
        phones = kwargs.pop("phones", None)
        if phones:
            phones = [dataclasses.replace(p, symbol="m") if p.symbol in "fv" else p for p in phones]
        return self.inner.render(face, audio, sample_rate, phones=phones, **kwargs)


def test_the_labiodental_check_tells_a_sealed_f_from_the_puppets(tts, animator: FaceAnimator, landmarker: Path) -> None:
    portrait = {"closed mouth": PORTRAITS["closed mouth"]}
    real, sealed = _Checks(LIMITS), _Checks(LIMITS)
    visemes_section(tts, animator, landmarker, real, portrait, strips=None)
    visemes_section(tts, SealsLabiodentals(animator), landmarker, sealed, portrait, strips=None)  # type: ignore[arg-type]
    at_teeth, when_sealed = values(real)["viseme_labiodentals_at_teeth"], values(sealed)["viseme_labiodentals_at_teeth"]
    assert at_teeth is not None and when_sealed is not None
    # The puppet's f and v show the upper teeth over the lower lip most of the time on this portrait
    # (the 0.8 target is for every portrait: `make eval` reports where it is missed); sealed, never.
    assert at_teeth >= 0.5 and when_sealed <= 0.2, (at_teeth, when_sealed)
    # The bilabials are the same either way: only the f/v figure tells the two apart.
    assert values(sealed)["viseme_bilabials_closed"] == values(real)["viseme_bilabials_closed"]
