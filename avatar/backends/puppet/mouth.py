"""Shading the inside of the mouth where the lips part.

The gap between the two mouth bands is left uncovered by the warp; here it becomes a dark cavity
tinted from the subject's own lips (so it suits any skin tone and lighting): dark and warm, darkest
at the back and in the corners (a shadow there, not the lips' red), with the tongue's top showing
low in a wide opening and the lower teeth's edges just above the lower lip. When the photo's mouth
is closed there are no teeth to carry, so a row of upper teeth is drawn under the upper lip too, in
the photo's light; when it shows its own, their colour is taken from them for the lower row.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar.types import FloatArray, ImageArray

from .landmarks import (
    FACE_OVAL,
    LOWER_LIP_INNER,
    LOWER_LIP_OUTER,
    MOUTH_CORNERS_INNER,
    MOUTH_CORNERS_OUTER,
    UPPER_LIP_INNER,
    UPPER_LIP_OUTER,
)
from .warp import Warped

OPEN_AT_REST = 0.012
"""Mean inner-lip gap (face heights) above which the photo already shows teeth or mouth interior."""


@dataclass(frozen=True)
class MouthStyle:
    """Colours of one face's mouth interior, as float RGB."""

    deep: FloatArray
    edge: FloatArray
    tongue: FloatArray
    teeth: FloatArray | None
    """Suggested upper-teeth colour; None when the photo shows its own teeth."""
    face_height: float
    lower_teeth: FloatArray | None = None
    """Colour of the lower teeth's edges (the photo's own teeth, in the shadow of the upper lip)."""


def _polygon_mean(image: ImageArray, polygon: FloatArray, hole: FloatArray | None = None) -> FloatArray:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    if hole is not None:
        cv2.fillPoly(mask, [np.round(hole).astype(np.int32)], 0)
    if not mask.any():
        return image.reshape(-1, 3).mean(axis=0).astype(np.float32)
    return image[mask > 0].mean(axis=0).astype(np.float32)


def mouth_style(image: ImageArray, landmarks: FloatArray, face_height: float) -> MouthStyle:
    """Measure lip and skin colour on the rest image and derive the interior's colours."""
    pts = landmarks[:, :2]
    outer = pts[[MOUTH_CORNERS_OUTER[0], *UPPER_LIP_OUTER, MOUTH_CORNERS_OUTER[1], *LOWER_LIP_OUTER[::-1]]]
    inner = pts[[MOUTH_CORNERS_INNER[0], *UPPER_LIP_INNER, MOUTH_CORNERS_INNER[1], *LOWER_LIP_INNER[::-1]]]
    lip = _polygon_mean(image, outer, inner)
    gap = float(np.mean(np.linalg.norm(pts[list(UPPER_LIP_INNER)] - pts[list(LOWER_LIP_INNER)], axis=1)))
    teeth = None
    skin = _polygon_mean(image, pts[list(FACE_OVAL)], outer)
    luma = float(skin @ np.array([0.299, 0.587, 0.114], np.float32))
    # Ivory under the photo's own light: tinted a little towards the skin's hue and dimmed with
    # its brightness, so the teeth neither glow nor look like grey plastic.
    hue = skin / max(float(skin.max()), 1.0) * 255
    ivory = np.array([250, 244, 230], np.float32)
    drawn = ((0.65 * ivory + 0.35 * hue) * float(np.clip(luma / 150, 0.7, 1.0))).astype(np.float32)
    if gap / face_height < OPEN_AT_REST:
        teeth = drawn
        own = drawn
    else:
        own = _teeth_colour(image, inner, drawn)
    grey = float(lip @ np.array([0.299, 0.587, 0.114], np.float32))
    # Inside the lips the colour is the lips' own, darkened and a little desaturated: a shadow, so a
    # narrow slit at the corners reads as a crease and not as a red line.
    muted = 0.55 * lip + 0.45 * grey
    return MouthStyle(
        deep=lip * np.array([0.2, 0.13, 0.13], np.float32) + np.array([4, 1, 1], np.float32),
        edge=muted * 0.3,
        tongue=lip * np.array([0.86, 0.52, 0.52], np.float32),
        teeth=teeth,
        face_height=face_height,
        lower_teeth=(own * 0.72).astype(np.float32),
    )


def _teeth_colour(image: ImageArray, inner: FloatArray, fallback: FloatArray) -> FloatArray:
    """The photo's own teeth: the brightest quarter of what shows between its lips."""
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 1)
    shown = image[mask > 0].astype(np.float32)
    if len(shown) < 20:
        return fallback
    luma = shown @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = shown[luma >= np.percentile(luma, 75)]
    return bright.mean(axis=0).astype(np.float32)


def occlusion_split(image: ImageArray, landmarks: FloatArray, face_height: float) -> FloatArray:
    """Where, between each upper and lower inner-lip pair, the mouth should split as it opens.

    0 is the upper lip, 1 the lower. In a smile showing teeth, the split belongs on the dark line
    between the upper and lower teeth so each row moves with its own jaw; a closed mouth splits in the
    middle.
    """
    pts = landmarks[:, :2]
    upper, lower = pts[list(UPPER_LIP_INNER)], pts[list(LOWER_LIP_INNER)]
    gaps = np.linalg.norm(lower - upper, axis=1)
    if float(gaps.mean()) / face_height < OPEN_AT_REST:
        return np.full(len(upper), 0.5, np.float32)
    # Without a visible line the teeth showing are the upper row (a smile), which stays with the
    # upper lip: open just above the lower lip.
    split = np.full(len(upper), 0.8, np.float32)
    luma = np.asarray(cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.0))
    t = np.linspace(0.0, 1.0, 25, dtype=np.float32)
    samples = upper[:, None, :] + (lower - upper)[:, None, :] * t[None, :, None]
    profile = np.asarray(
        cv2.remap(luma, samples[..., 0].astype(np.float32), samples[..., 1].astype(np.float32), cv2.INTER_LINEAR)
    )
    inner = (t >= 0.2) & (t <= 0.85)
    for i in range(len(upper)):
        if gaps[i] < 3.0:
            continue
        row = profile[i]
        k = int(np.argmin(np.where(inner, row, np.inf)))
        # A line counts only if it is clearly darker than the teeth on both sides of it; the lips'
        # own shadow at either end of the span does not.
        if min(row[:k].max(), row[k + 1 :].max()) - row[k] > 20.0:
            split[i] = t[k]
    # Neighbours should agree: a jagged split line would tear the teeth row.
    padded = np.concatenate([split[:1], split, split[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0).astype(np.float32)


def shade_mouth(
    warped: Warped, upper: FloatArray, lower: FloatArray, origin: tuple[int, int], style: MouthStyle
) -> None:
    """Paint the cavity into ``warped.pixels`` in place.

    ``upper`` and ``lower`` are the moved gap edges (corner to corner, frame pixels).
    """
    pts = np.concatenate([upper, lower])
    h, w = warped.owner.shape
    x0 = max(int(np.floor(pts[:, 0].min())) - 2 - origin[0], 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 3 - origin[0], w)
    y0 = max(int(np.floor(pts[:, 1].min())) - 2 - origin[1], 0)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 3 - origin[1], h)
    if x1 <= x0 or y1 <= y0:
        return
    # The opening is what no triangle covered inside the outline of the parted lips (holes left
    # elsewhere by collapsed slivers are not part of it).
    outline = np.concatenate([upper, lower[::-1]]) - np.array([origin[0] + x0, origin[1] + y0], np.float32)
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(inside, [np.round(outline * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    gap = ((warped.owner[y0:y1, x0:x1] == warped.uncovered) & (inside > 0)).astype(np.float32)
    if not gap.any():
        return
    # Soften the stair-stepped edge of the gap: the lips' inner rim darkens a little, as it would.
    alpha = cv2.GaussianBlur(gap, (3, 3), 0.7)[..., None]

    xs = np.arange(x0, x1, dtype=np.float32) + origin[0]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + origin[1]
    ou, ol = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
    top = np.interp(xs, upper[ou, 0], upper[ou, 1]).astype(np.float32)
    bottom = np.interp(xs, lower[ol, 0], lower[ol, 1]).astype(np.float32)
    height = np.maximum(bottom - top, 1.0)
    depth = np.clip((ys - top) / height, 0.0, 1.0)  # 0 at the upper lip, 1 at the lower lip

    # A narrow slit is mostly the lips' own shadow; a real opening is dark, darkest just under the
    # upper lip (the teeth and lip shade it), at the back and towards the corners (always: a corner is
    # a crease in shadow, never the lips' red), with the tongue's top showing low down once the jaw is
    # well open and the lower teeth's edges just above the lower lip.
    fh = style.face_height
    open_amount = np.clip(height / (0.035 * fh), 0.0, 1.0) ** 0.5
    half = max(float(xs[-1] - xs[0]) / 2, 1.0)
    across = np.clip(1.0 - ((xs - (xs[0] + xs[-1]) / 2) / half) ** 2, 0.0, 1.0)
    shade = open_amount * (1.0 - 0.35 * np.clip((depth - 0.35) / 0.65, 0.0, 1.0))
    shade = np.clip(np.maximum(shade, 1.0 - across**0.6) + 0.25 * (1.0 - across), 0.0, 1.0)
    colour = style.edge + (style.deep - style.edge) * shade[..., None]
    rows = ys - top
    from_bottom = bottom - ys
    # Tongue: a low mound filling the middle of the floor of the mouth, its top lit a little.
    wide = np.clip((height / fh - 0.015) / 0.035, 0.0, 1.0) * across**0.8
    mound = 0.48 * height * across
    on_tongue = np.clip((mound - from_bottom) / 2.0 + 0.5, 0.0, 1.0) * wide
    # Its back (the top edge seen here) is in the mouth's shadow; it catches light towards the front.
    lit = 0.45 + 0.45 * np.clip(1.0 - (mound - from_bottom) / np.maximum(mound, 1.0), 0.0, 1.0) ** 0.7
    colour += (style.tongue * lit[..., None] - colour) * (0.8 * on_tongue)[..., None]
    if style.lower_teeth is not None:
        # The lower incisors' edges, in the middle only, rising as the jaw drops (the lower lip
        # covers them in a slight opening).
        band = np.clip(height / fh - 0.02, 0.0, 0.008) * fh
        on_lower = np.clip((band - from_bottom) / 1.2 + 0.5, 0.0, 1.0) * np.clip((across - 0.55) / 0.25, 0.0, 1.0)
        shaded = 0.75 + 0.25 * np.clip(from_bottom / np.maximum(band, 1.0), 0.0, 1.0)
        colour += (style.lower_teeth * shaded[..., None] - colour) * (0.9 * on_lower * (band > 0.5))[..., None]
    if style.teeth is not None:
        band = np.minimum(0.022 * fh, 0.45 * height)
        on_teeth = np.clip((band - rows) / 1.2 + 0.5, 0.0, 1.0) * np.clip(across / 0.25, 0.0, 1.0) ** 0.7 * 0.92
        # The upper lip shades the top of the teeth, the corners are in shadow, and a faint darker
        # line between neighbouring teeth keeps the row from reading as one white bar.
        lit = 0.68 + 0.32 * np.clip(rows / np.maximum(0.6 * band, 1.0), 0.0, 1.0)
        lit = lit * (0.82 + 0.18 * across**0.5)
        pitch = max(0.045 * fh, 3.0)
        seams = 1.0 - 0.16 * np.clip(1.0 - np.abs(((xs - (xs[0] + xs[-1]) / 2) / pitch) % 1.0 - 0.5) * 6, 0.0, 1.0)
        colour += (style.teeth * (lit * seams)[..., None] - colour) * on_teeth[..., None]

    region = warped.pixels[y0:y1, x0:x1].astype(np.float32)
    mixed = region + (colour - region) * alpha
    warped.pixels[y0:y1, x0:x1] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
