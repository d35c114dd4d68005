"""Find the face in a portrait of any size and frame it as a square head-and-shoulders picture."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from avatar.errors import InvalidImageError, NoFaceError
from avatar.types import FloatArray, ImageArray

from .landmarks import CHIN, FOREHEAD, LEFT_EYE_CORNERS, NOSE_TIP, RIGHT_EYE_CORNERS, Landmarker

MIN_FACE_PX = 24
"""Below this forehead-to-chin height (source pixels) there is too little face to animate."""

FACE_FRACTION = 0.42
"""Forehead-to-chin height as a fraction of the output frame: room for hair above, shoulders below."""

FACE_CENTRE_Y = 0.45
"""Where the middle of the face sits, as a fraction of the frame height from the top."""

STRAIGHTEN_ABOVE_DEG = 10.0
"""A tilted head is a pose and is kept; a photo rotated further than this is turned upright."""

NO_FACE_MESSAGE = "No face found in the photo; use a front-facing portrait where the face is clearly visible"


@dataclass(frozen=True)
class Framing:
    """The square picture handed to the rig and where it came from in the photo."""

    image: ImageArray
    """(size, size, 3) RGB."""
    landmarks: FloatArray
    """(478, 3) x, y, z pixels in ``image``."""
    transform: FloatArray
    """2×3 affine from photo pixels to ``image`` pixels."""
    faces: int = 1
    """How many faces the photo holds (the largest was framed)."""


def as_rgb(image: object) -> ImageArray:
    """Check a photo and bring it to contiguous (h, w, 3) uint8 (gray and RGBA are accepted)."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"The photo must be an image array, not {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"The photo must be 8-bit RGB, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InvalidImageError(f"The photo must be (height, width, 3) RGB, got shape {image.shape}")
    if min(image.shape[:2]) < 16:
        raise InvalidImageError(f"The photo is too small ({image.shape[1]}×{image.shape[0]} pixels)")
    return np.ascontiguousarray(image[:, :, :3])


def face_height(landmarks: FloatArray) -> float:
    """Forehead-to-chin distance in pixels, the rig's unit of length."""
    return float(np.linalg.norm(landmarks[CHIN, :2] - landmarks[FOREHEAD, :2]))


def _windows(h: int, w: int) -> Iterator[tuple[int, int, int]]:
    """Square (x, y, side) windows to search when the whole photo finds nothing.

    The detector letterboxes its input to a small square, so a face that is small next to the long
    side of a wide, tall or large photo goes unseen; squares of the short side, then halves and
    quarters of it, with half-window overlap, bring every face up to a size it detects.
    """
    side = min(h, w)
    while side >= 96:
        for y in _positions(h, side):
            for x in _positions(w, side):
                yield x, y, side
        side //= 2


def _positions(length: int, side: int) -> list[int]:
    """Window starts along one axis, evenly spread, overlapping by at least half a window."""
    count = math.ceil((length - side) / (side / 2)) + 1
    return [round(p) for p in np.linspace(0, length - side, count)]


def count_faces(landmarker: Landmarker, image: ImageArray, found: list[FloatArray]) -> int:
    """How many faces the photo holds, ``found`` (the whole photo's detections) and those a search of
    the two largest sizes of windows adds: the detector sees a small face beside a big one only up
    close. The same face seen from several windows counts once."""
    faces = list(found)
    h, w = image.shape[:2]
    for x, y, side in _windows(h, w):
        if side < min(h, w) // 2:
            break
        for face in landmarker.detect(image[y : y + side, x : x + side]):
            moved = face + np.array([x, y, 0], np.float32)
            if all(_apart(moved, other) for other in faces):
                faces.append(moved)
    return len(faces)


def _apart(a: FloatArray, b: FloatArray) -> bool:
    distance = float(np.linalg.norm(a[NOSE_TIP, :2] - b[NOSE_TIP, :2]))
    return distance > 0.5 * max(face_height(a), face_height(b))


def find_faces(landmarker: Landmarker, image: ImageArray) -> list[FloatArray]:
    """All faces in the photo, searching sub-windows only when the whole photo yields none."""
    faces = landmarker.detect(image)
    if faces:
        return faces
    h, w = image.shape[:2]
    # A face pressed against the border lacks the context the detector wants; a replicated margin
    # gives it some back.
    margin = max(h, w) // 8
    padded = np.asarray(cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_REPLICATE), np.uint8)
    faces = [f - np.array([margin, margin, 0], np.float32) for f in landmarker.detect(padded)]
    if faces:
        return faces
    for x, y, side in _windows(h, w):
        found = landmarker.detect(image[y : y + side, x : x + side])
        faces.extend(f + np.array([x, y, 0], np.float32) for f in found)
        if faces:
            return faces
    return []


def _similarity(landmarks: FloatArray, size: int) -> tuple[FloatArray, float]:
    """The photo → frame affine that puts the face at its place and size, and its scale."""
    top, chin = landmarks[FOREHEAD, :2], landmarks[CHIN, :2]
    centre = (top + chin) / 2
    eye_r = landmarks[list(RIGHT_EYE_CORNERS), :2].mean(axis=0)
    eye_l = landmarks[list(LEFT_EYE_CORNERS), :2].mean(axis=0)
    roll = math.degrees(math.atan2(float(eye_l[1] - eye_r[1]), float(eye_l[0] - eye_r[0])))
    angle = roll if abs(roll) > STRAIGHTEN_ABOVE_DEG else 0.0
    scale = FACE_FRACTION * size / face_height(landmarks)
    # getRotationMatrix2D rotates about ``centre``; then shift the centre to its place in the frame.
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[0, 2] += size / 2 - centre[0]
    m[1, 2] += FACE_CENTRE_Y * size - centre[1]
    return m.astype(np.float32), scale


def _warp_with_extension(image: ImageArray, m: FloatArray, size: int, scale: float) -> ImageArray:
    """Warp into the frame; where the frame leaves the photo, continue the edge, softly blurred."""
    src = image
    m = m.astype(np.float64)
    if scale < 0.8:
        # warpAffine samples without low-pass filtering; shrink with area averaging first so a big
        # photo does not alias, then the remaining transform is a rotation and a shift.
        src = np.asarray(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8)
        sx, sy = image.shape[1] / src.shape[1], image.shape[0] / src.shape[0]
        m = m @ np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], dtype=np.float64)
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_LINEAR
    out = np.asarray(cv2.warpAffine(src, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE), np.uint8)
    inside = cv2.warpAffine(
        np.ones(src.shape[:2], np.float32), m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0
    )
    if inside.min() >= 1.0:
        return out
    # Replicated edge pixels smear into streaks; a wide blur turns them into a plausible soft
    # backdrop, fading in over a few pixels past the photo's edge so the seam does not show.
    blurred = cv2.GaussianBlur(out, (0, 0), sigmaX=size / 12)
    alpha = np.clip(cv2.GaussianBlur(inside, (0, 0), sigmaX=size / 60) * 2.0, 0.0, 1.0)[..., None]
    mixed = out.astype(np.float32) * alpha + blurred.astype(np.float32) * (1.0 - alpha)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def _transform_points(points: FloatArray, m: FloatArray, scale: float) -> FloatArray:
    out = points.copy()
    out[:, :2] = points[:, :2] @ m[:, :2].T + m[:, 2]
    out[:, 2] = points[:, 2] * scale
    return out


def frame_face(landmarker: Landmarker, photo: object, size: int) -> Framing:
    """Crop the largest face of ``photo`` to a square head-and-shoulders frame of ``size`` pixels.

    Raises NoFaceError when there is no face or it is too small, InvalidImageError for a bad array.
    """
    image = as_rgb(photo)
    faces = find_faces(landmarker, image)
    if not faces:
        raise NoFaceError(NO_FACE_MESSAGE)
    landmarks = max(faces, key=face_height)
    height = face_height(landmarks)
    if height < MIN_FACE_PX:
        raise NoFaceError(
            f"The face in the photo is too small to animate ({height:.0f} pixels from forehead to "
            f"chin, at least {MIN_FACE_PX} needed); use a closer or larger portrait"
        )
    m, scale = _similarity(landmarks, size)
    framed = _warp_with_extension(image, m, size, scale)
    expected = _transform_points(landmarks, m, scale)
    # Landmarks found on the framed picture itself match what will be warped; prefer them, taking the
    # face nearest where the chosen one landed (a second person may share the frame).
    redetected = landmarker.detect(framed)
    if redetected:
        best = min(redetected, key=lambda f: float(np.linalg.norm(f[NOSE_TIP, :2] - expected[NOSE_TIP, :2])))
        if np.linalg.norm(best[NOSE_TIP, :2] - expected[NOSE_TIP, :2]) < 0.1 * FACE_FRACTION * size:
            expected = best
    return Framing(
        image=framed, landmarks=expected.astype(np.float32), transform=m, faces=count_faces(landmarker, image, faces)
    )
