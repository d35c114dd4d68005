"""Photos: type by content, bounds from the header before any decode, EXIF orientation."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from avatar.errors import InvalidImageError
from avatar.images import inspect_image, load_image

MP = 1_000_000


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "L"), ("WEBP", "RGB")]
)
def test_accepted_formats_decode_to_rgb(fmt: str, mode: str) -> None:
    data = encoded(Image.new(mode, (64, 48)), fmt)
    assert inspect_image(data, max_pixels=MP).format == fmt
    array = load_image(data, max_pixels=MP)
    assert array.shape == (48, 64, 3) and array.dtype == np.uint8


def test_exif_orientation_is_honoured() -> None:
    # Left half blue, right half red, stored sideways with "rotate 90° clockwise to view" (6).
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = load_image(encoded(image, "JPEG", exif=exif, quality=95), max_pixels=MP)
    assert upright.shape == (40, 20, 3)
    assert upright[2, 10, 2] > 200 and upright[-3, 10, 0] > 200  # blue on top, red below


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"GIF89a" + bytes(64), "GIF"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(64), "HEIC"),
        (b"%PDF-1.7" + bytes(64), "PDF"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"\x89PNG\r\n\x1a\n broken", "JPEG, PNG or WebP"),
        (bytes(range(256)) * 4, "JPEG, PNG or WebP"),
    ],
)
def test_what_is_not_a_photo_is_named(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidImageError) as caught:
        load_image(data, max_pixels=MP)
    assert fragment in caught.value.message


def test_other_formats_pillow_reads_are_refused() -> None:
    with pytest.raises(InvalidImageError, match="BMP"):
        load_image(encoded(Image.new("RGB", (8, 8)), "BMP"), max_pixels=MP)


def test_truncated_pixels_are_invalid() -> None:
    noise = Image.effect_noise((400, 300), 60).convert("RGB")
    data = encoded(noise, "JPEG")
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2], max_pixels=MP)


def test_byte_limit() -> None:
    with pytest.raises(InvalidImageError, match="limit is"):
        load_image(encoded(Image.effect_noise((64, 64), 60), "PNG"), max_pixels=MP, max_bytes=1000)


@pytest.mark.parametrize("side", [8000, 14_000])  # 64 MP (Pillow only warns), 196 MP (Pillow refuses)
def test_pixel_bound_is_judged_from_the_header(side: int) -> None:
    bomb = encoded(Image.new("1", (side, side)), "PNG")  # tens of kB
    assert len(bomb) < 100_000
    with pytest.raises(InvalidImageError, match="AVATAR_MAX_IMAGE_PIXELS"):
        load_image(bomb, max_pixels=40 * MP)


def test_a_refused_bomb_is_never_decoded() -> None:
    """In a fresh process, refusing a 64-megapixel PNG (192 MB as RGB) leaves the peak memory where it
    was: the pixels were never decoded."""
    script = textwrap.dedent(
        """
        import io, resource
        from PIL import Image
        from avatar.images import load_image
        from avatar.errors import InvalidImageError
        buf = io.BytesIO(); Image.new("1", (8000, 8000)).save(buf, "PNG"); data = buf.getvalue()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_image(data, max_pixels=40_000_000)
        except InvalidImageError:
            pass
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    grown_kib = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert grown_kib < 20_000, f"peak memory grew {grown_kib} KiB while refusing the photo"
