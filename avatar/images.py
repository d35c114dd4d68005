"""Photos in: the type judged by content, the size and pixel count read from the header, then a decode.

A photo is a small file that can decode to a huge array (an 18 KB PNG of 14,000 × 14,000 pixels becomes
~560 MB of RGB), so every bound is checked before a single pixel is decoded. Pillow's own guard only
warns below ~180 megapixels, and it cannot know this service's budget.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from avatar.config import Settings
from avatar.errors import InvalidImageError
from avatar.types import FrameArray, ImageArray

FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS: int = Settings.max_image_pixels
MAX_IMAGE_BYTES = 50 * 2**20  # far above any real photo; uploads are bounded by AVATAR_MAX_UPLOAD_MB first

# First bytes of formats people try that are not taken, to name them in the error.
_OTHER_FORMATS = {
    b"GIF8": "a GIF",
    b"BM": "a BMP",
    b"II*\x00": "a TIFF",
    b"MM\x00*": "a TIFF",
    b"%PDF": "a PDF",
    b"<svg": "an SVG",
    b"<?xm": "an SVG or other XML",
}


@dataclass(frozen=True)
class ImageInfo:
    """What a photo's header says."""

    format: str  # JPEG, PNG or WEBP
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def inspect_image(data: bytes, *, max_pixels: int, max_bytes: int = MAX_IMAGE_BYTES) -> ImageInfo:
    """The photo's format and size from its header alone (no pixel is decoded), checked against the
    bounds; InvalidImageError naming the problem otherwise."""
    with _opened(data, max_pixels=max_pixels, max_bytes=max_bytes) as image:
        return ImageInfo(str(image.format), image.width, image.height)


def load_image(data: bytes, *, max_pixels: int, max_bytes: int = MAX_IMAGE_BYTES) -> ImageArray:
    """Decode a JPEG, PNG or WebP photo to RGB uint8 (height, width, 3), upright as its EXIF orientation
    says. Type, byte size and pixel count are checked before decoding (InvalidImageError)."""
    try:
        with _opened(data, max_pixels=max_pixels, max_bytes=max_bytes) as image:
            image.load()  # decodes
            ImageOps.exif_transpose(image, in_place=True)
            rgb = image if image.mode == "RGB" else image.convert("RGB")  # palette, grey, alpha: plain RGB
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # A header that reads well over data that does not: truncated or corrupt pixels.
        raise InvalidImageError("The photo is corrupt or truncated; upload it again or use another photo.") from None


class _opened:
    """``Image.open`` restricted to the accepted formats, with the bounds checked on the header."""

    def __init__(self, data: bytes, *, max_pixels: int, max_bytes: int) -> None:
        if not data:
            raise InvalidImageError("The photo is empty.")
        if len(data) > max_bytes:
            raise InvalidImageError(f"The photo is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB.")
        try:
            self.image = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError:  # Pillow's own ceiling, far above any sane limit
            raise InvalidImageError(_too_many_pixels(None, max_pixels)) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise InvalidImageError(_unreadable(data)) from None
        width, height = self.image.size
        if width < 1 or height < 1 or width * height > max_pixels:
            self.image.close()
            raise InvalidImageError(_too_many_pixels((width, height), max_pixels))

    def __enter__(self) -> Image.Image:
        return self.image

    def __exit__(self, *exc: object) -> None:
        self.image.close()


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> str:
    if size is not None and min(size) < 1:
        return "The photo has no pixels."
    shown = f"{size[0]} × {size[1]} pixels ({size[0] * size[1] / 1e6:.0f} megapixels)" if size else "too large"
    return (
        f"The photo is {shown}; the limit is {max_pixels / 1e6:g} megapixels (AVATAR_MAX_IMAGE_PIXELS). "
        "Upload a smaller image."
    )


def _unreadable(data: bytes) -> str:
    head = data[:16]
    other = next((name for magic, name in _OTHER_FORMATS.items() if head.startswith(magic)), None)
    if other is None and head[4:8] == b"ftyp":
        other = "an HEIC/AVIF" if head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"msf1") else "a video"
    if other is not None:
        return f"The photo is {other} file; upload a JPEG, PNG or WebP image."
    return "The photo could not be read as a JPEG, PNG or WebP image."


def labelled(frames: FrameArray, label: str) -> FrameArray:
    """``frames`` with ``label`` written along their bottom edge, light on a dark band (a visible mark
    that the video is generated, beside the C2PA manifest)."""
    out = np.array(frames, copy=True)
    for index, frame in enumerate(out):
        image = Image.fromarray(frame)
        draw = ImageDraw.Draw(image)
        height = max(10, image.height // 14)
        draw.rectangle((0, image.height - height, image.width, image.height), fill=(0, 0, 0))
        draw.text((4, image.height - height + 1), label, fill=(255, 255, 255), font_size=max(8, height - 3))
        out[index] = np.asarray(image)
    return out
