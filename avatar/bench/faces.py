"""Face robustness: the talking head on varied portraits made from one photo.

Every variant must either render a good video (the face is found again in the output frames and its
mouth moves with the speech) or fail with a clear error (an ``AvatarError`` with a stable code). Some
variants must render (an ordinary portrait, resized, cropped, in glasses, in poor light), one must be
refused (no face); for the hard ones (a tiny face, the chin cut off, two people) either outcome is right.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from avatar import fmp4, media
from avatar.errors import AvatarError
from avatar.pipeline.stages import AnimateStage
from avatar.quality import lipsync
from avatar.types import AudioArray, FaceAnimator

BICUBIC = Image.Resampling.BICUBIC
FOUND_SHARE_MIN = 0.9
"""A good video shows a findable face in at least this share of its frames."""
MOUTH_RANGE_MIN = 0.02
"""…and its mouth opening (face heights) spans at least this much between the 5th and 95th percentile."""


@dataclass(frozen=True)
class FaceBox:
    """Where the face is in the source photo, in pixels."""

    left: float
    top: float
    right: float
    bottom: float  # the chin

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    expect: str  # "render", "error" or "either"
    data: bytes  # the file as uploaded
    faces: int = 1  # people in the picture (the meter looks for this many)


def find_face(image: Image.Image, landmarker_path: Path) -> FaceBox:
    """The landmark bounding box of the face in ``image`` (forehead to chin)."""
    from avatar.backends.puppet.landmarks import Landmarker

    landmarker = Landmarker(landmarker_path, max_faces=1)
    try:
        found = landmarker.detect(np.ascontiguousarray(np.asarray(image.convert("RGB"))))
    finally:
        landmarker.close()
    if not found:
        raise ValueError("the source portrait has no detectable face")
    xs, ys = found[0][:, 0], found[0][:, 1]  # pixels
    return FaceBox(float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _pad(image: Image.Image, width: int, height: int, x: int, y: int) -> Image.Image:
    corner = image.getpixel((0, 0))
    canvas = Image.new("RGB", (width, height), corner if isinstance(corner, tuple) else (128, 128, 128))
    canvas.paste(image, (x, y))
    return canvas


def _glasses(image: Image.Image, face: FaceBox) -> Image.Image:
    """Dark round frames with tinted lenses over the eyes (eyes at ~40 % of the landmark box height)."""
    out = image.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    eye_y = face.top + 0.40 * face.height
    r = 0.14 * face.width
    for cx in (face.left + 0.30 * face.width, face.left + 0.70 * face.width):
        box = (cx - r, eye_y - 0.8 * r, cx + r, eye_y + 0.8 * r)
        draw.ellipse(box, fill=(40, 60, 70, 70), outline=(15, 15, 15, 255), width=max(2, int(r / 6)))
    bridge_y = eye_y - 0.2 * r
    draw.line(
        [(face.left + 0.30 * face.width + r, bridge_y), (face.left + 0.70 * face.width - r, bridge_y)],
        fill=(15, 15, 15, 255),
        width=max(2, int(r / 7)),
    )
    return Image.alpha_composite(out, layer).convert("RGB")


def make_variants(portrait: Path, landmarker_path: Path, *, quick: bool = False) -> list[Variant]:
    """The set of portraits to try, built from ``portrait`` (no other photo is needed)."""
    base = Image.open(portrait).convert("RGB")
    face = find_face(base, landmarker_path)
    w, h = base.size
    margin = 0.35 * face.height
    tight = base.crop(
        (
            int(max(0, face.left - margin)),
            int(max(0, face.top - margin)),
            int(min(w, face.right + margin)),
            int(min(h, face.bottom + margin)),
        )
    )
    # Plain background: the widest strip beside the face, from the top of the photo to its middle.
    left_strip = face.left > w - face.right
    strip = (0, 0, int(face.left) - 4, h // 2) if left_strip else (int(face.right) + 4, 0, w, h // 2)
    no_face = base.crop(strip)
    chin_cut = base.crop((0, 0, w, int(face.bottom - 0.12 * face.height)))  # the chin and jaw line are gone
    two = Image.new("RGB", (2 * w, h))
    two.paste(base, (0, 0))
    two.paste(ImageOps.mirror(base), (w, 0))
    builders: list[tuple[str, str, str, Callable[[], Image.Image], int]] = [
        ("original", f"the persona photo, {w}×{h}", "render", lambda: base, 1),
        ("large", f"upscaled to {2 * w}×{2 * h}", "render", lambda: base.resize((2 * w, 2 * h), BICUBIC), 1),
        ("small", "downscaled to 160×160 (face ~50 px)", "either", lambda: base.resize((160, 160), BICUBIC), 1),
        ("tight-crop", "cropped close around the face", "render", lambda: tight, 1),
        ("wide", "padded to 16:9, face off-centre", "render", lambda: _pad(base, w * 16 // 9, h, w // 8, 0), 1),
        ("tall", "padded to 9:16", "render", lambda: _pad(base, w, h * 16 // 9, 0, h // 3), 1),
        ("glasses", "dark-framed glasses drawn over the eyes", "render", lambda: _glasses(base, face), 1),
        ("dark", "underexposed (brightness × 0.35)", "render", lambda: ImageEnhance.Brightness(base).enhance(0.35), 1),
        ("bright", "overexposed (brightness × 1.6)", "render", lambda: ImageEnhance.Brightness(base).enhance(1.6), 1),
        (
            "rotated",
            "rotated 15° (photo held askew)",
            "render",
            lambda: base.rotate(15, resample=BICUBIC, expand=True, fillcolor=(128, 128, 128)),
            1,
        ),
        ("grayscale", "black and white", "render", lambda: ImageOps.grayscale(base).convert("RGB"), 1),
        ("chin-cut", "cut just above the chin (partial face)", "either", lambda: chin_cut, 1),
        ("two-people", "two people side by side", "either", lambda: two, 2),
        ("no-face", "plain background, no face", "error", lambda: no_face, 1),
    ]
    if quick:
        builders = [b for b in builders if b[0] in ("original", "wide", "glasses", "two-people", "no-face")]
    variants = [Variant(name, text, expect, _png(build()), faces) for name, text, expect, build, faces in builders]
    variants.append(Variant("not-an-image", "random bytes named as a photo", "error", bytes(range(256)) * 8))
    return variants


@dataclass(frozen=True)
class FaceOutcome:
    variant: str
    description: str
    expect: str
    outcome: str  # "rendered" or "error"
    good_video: bool | None
    error_code: str | None
    found_share: float | None
    mouth_range: float | None
    peak_correlation: float | None
    detail: str

    @property
    def passed(self) -> bool:
        if self.outcome == "error":
            return self.expect in ("error", "either") and bool(self.error_code)
        return self.expect in ("render", "either") and bool(self.good_video)

    def as_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "passed": self.passed}


def check_variant(
    variant: Variant, animator: FaceAnimator, speech: AudioArray, sample_rate: int, landmarker_path: Path
) -> FaceOutcome:
    """Prepare and render ``variant`` the way the product does, then judge the video from its file."""
    stage = AnimateStage(animator, cache_size=1)
    common = {"variant": variant.name, "description": variant.description, "expect": variant.expect}
    try:
        face = stage.prepare_bytes(variant.data)
        frames = animator.render(face, speech, sample_rate)
    except AvatarError as exc:
        return FaceOutcome(
            **common,
            outcome="error",
            good_video=None,
            error_code=exc.code,
            found_share=None,
            mouth_range=None,
            peak_correlation=None,
            detail=exc.message,
        )
    with tempfile.TemporaryDirectory(prefix="avatar-face-") as tmp:
        path = Path(tmp) / "video.mp4"
        fitted = media.fit_audio_to_frames(speech, sample_rate, len(frames), animator.fps)
        fmp4.write_mp4(path, frames, fitted, sample_rate, animator.fps)
        video = lipsync.read_video(path)
    meter = lipsync.MouthMeter(landmarker_path, num_faces=variant.faces)
    try:
        opening = meter.openings(video.frames)
    finally:
        meter.close()
    found = float(np.mean(~np.isnan(opening))) if opening.size else 0.0
    valid = opening[~np.isnan(opening)]
    spread = float(np.percentile(valid, 95) - np.percentile(valid, 5)) if valid.size > 2 else 0.0
    sync = lipsync.score(
        opening, lipsync.loudness_envelope(video.audio, video.sample_rate, video.fps, len(opening)), video.fps
    )
    good = found >= FOUND_SHARE_MIN and spread >= MOUTH_RANGE_MIN
    detail = f"{len(frames)} frames {frames.shape[2]}×{frames.shape[1]}"
    return FaceOutcome(
        **common,
        outcome="rendered",
        good_video=good,
        error_code=None,
        found_share=round(found, 3),
        mouth_range=round(spread, 4),
        peak_correlation=round(sync.peak_correlation, 3),
        detail=detail,
    )
