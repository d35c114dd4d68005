"""The triangulated rig laid over the framed portrait.

MediaPipe's face tessellation covers the face but leaves holes at the eyes and mouth, and stops at
the face outline. The rig fills the eye holes (so blinks can close them), fills the mouth with two
bands that split along a midline (so the lips can part, each band carrying the teeth on its side),
and adds two rings round the face: a head ring that moves with the head (hair, ears, neck) and a
fixed outer ring where the animation fades out, so nothing beyond it ever changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.types import FloatArray, IntArray

from .landmarks import (
    CHIN,
    FACE_OVAL,
    FOREHEAD,
    LEFT_EYE_CORNERS,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LOWER_LIP_INNER,
    MOUTH_CORNERS_INNER,
    N_SURFACE,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    UPPER_LIP_INNER,
    surface_triangles,
)

# Ring margins beyond the face outline, in face heights: hair is tallest above the forehead and the
# neck is short below the chin.
HEAD_MARGIN_SIDE, HEAD_MARGIN_TOP, HEAD_MARGIN_BOTTOM = 0.24, 0.38, 0.12
FADE_BAND, FADE_BAND_BOTTOM = 0.20, 0.15


@dataclass(frozen=True)
class FaceAxes:
    """A face-aligned frame: ``u`` points to the subject's left (image right), ``v`` down the face."""

    centre: FloatArray
    u: FloatArray
    v: FloatArray
    height: float
    """Forehead-to-chin distance in pixels, the rig's unit of length."""

    @classmethod
    def from_landmarks(cls, landmarks: FloatArray) -> FaceAxes:
        """Axes from the eye line, centred between forehead and chin."""
        eye_r = landmarks[list(RIGHT_EYE_CORNERS), :2].mean(axis=0)
        eye_l = landmarks[list(LEFT_EYE_CORNERS), :2].mean(axis=0)
        u = (eye_l - eye_r) / np.linalg.norm(eye_l - eye_r)
        v = np.array([-u[1], u[0]], dtype=np.float32)
        top, chin = landmarks[FOREHEAD, :2], landmarks[CHIN, :2]
        height = float(np.linalg.norm(chin - top))
        return cls(((top + chin) / 2).astype(np.float32), u.astype(np.float32), v, height)

    def local(self, points: FloatArray, origin: FloatArray | None = None) -> FloatArray:
        """Frame pixels → face-local (x, y) in face heights, relative to ``origin`` (default centre)."""
        d = points - (self.centre if origin is None else origin)
        return np.stack([d @ self.u, d @ self.v], axis=1).astype(np.float32) / self.height

    def to_frame(self, local_vectors: FloatArray) -> FloatArray:
        """Face-local displacement vectors (face heights) → frame pixel displacements."""
        lx, ly = local_vectors[:, :1], local_vectors[:, 1:2]
        return ((lx * self.u + ly * self.v) * self.height).astype(np.float32)


@dataclass(frozen=True)
class Mesh:
    """Rest geometry of the rig. Vertex order: surface, mouth midline copies, head ring, outer ring."""

    vertices: FloatArray
    """(V, 2) rest positions, frame pixels."""
    depth: FloatArray
    """(V,) MediaPipe depth in pixels (smaller is nearer the camera); drives head-turn parallax."""
    triangles: IntArray
    """(T, 3), in drawing order: filled holes first so the surface wins on shared edges."""
    head_weight: FloatArray
    """(V,) 1 where a vertex follows the head, 0 on the fixed outer ring."""
    upper_mid: IntArray
    """Vertex indices of the upper band's free edge, corner to corner (the gap's top)."""
    lower_mid: IntArray
    """Same for the lower band (the gap's bottom)."""
    head_ring: IntArray
    outer_ring: IntArray
    region: tuple[int, int, int, int]
    """(x0, y0, x1, y1): the pixels the warp may change; every other pixel stays as at rest."""
    axes: FaceAxes


def _strip(upper: list[int], lower: list[int]) -> list[tuple[int, int, int]]:
    """Triangles between two polylines of equal length (they may share end points)."""
    tris = []
    for i in range(len(upper) - 1):
        for tri in ((upper[i], upper[i + 1], lower[i]), (lower[i], upper[i + 1], lower[i + 1])):
            if len(set(tri)) == 3:
                tris.append(tri)
    return tris


def _ray_limit(origin: FloatArray, direction: FloatArray, size: int) -> float:
    """How far along ``direction`` from ``origin`` stays inside the frame."""
    lo, hi = 0.0, float(size - 1)
    limits = []
    for k in range(2):
        if direction[k] > 1e-6:
            limits.append((hi - origin[k]) / direction[k])
        elif direction[k] < -1e-6:
            limits.append((lo - origin[k]) / direction[k])
    return min(limits) if limits else float("inf")


def _rings(landmarks: FloatArray, axes: FaceAxes, size: int) -> tuple[FloatArray, FloatArray]:
    """Head ring and outer ring: the face outline pushed out along rays from the face centre.

    Pushing each outline point along its own ray keeps the three loops in step, so they zip into
    quads without a general triangulation, and clamping along the same ray keeps them nested when a
    ring would leave the frame.
    """
    oval = landmarks[list(FACE_OVAL), :2]
    rel = oval - axes.centre
    radius = np.linalg.norm(rel, axis=1)
    direction = rel / radius[:, None]
    sin_down = axes.local(oval)[:, 1] / (radius / axes.height)  # +1 straight down, -1 straight up
    up, down = np.clip(-sin_down, 0, 1) ** 2, np.clip(sin_down, 0, 1) ** 2
    head = HEAD_MARGIN_SIDE + (HEAD_MARGIN_TOP - HEAD_MARGIN_SIDE) * up
    head += (HEAD_MARGIN_BOTTOM - HEAD_MARGIN_SIDE) * down
    fade = FADE_BAND + (FADE_BAND_BOTTOM - FADE_BAND) * down
    head_r, outer_r = np.empty_like(radius), np.empty_like(radius)
    for i in range(len(oval)):
        limit = _ray_limit(axes.centre, direction[i], size)
        outer_r[i] = min(radius[i] + (head[i] + fade[i]) * axes.height, limit)
        gap = 0.04 * axes.height
        head_r[i] = min(radius[i] + head[i] * axes.height, max(outer_r[i] - gap, radius[i] + 1.0))
    head_pts = axes.centre + direction * head_r[:, None]
    outer_pts = axes.centre + direction * outer_r[:, None]
    return head_pts.astype(np.float32), outer_pts.astype(np.float32)


def build_mesh(landmarks: FloatArray, size: int, split: FloatArray | None = None) -> Mesh:
    """The rig for one framed portrait; ``landmarks`` are (478, 3) frame pixels.

    ``split`` (one value per inner-lip pair, 0 upper … 1 lower, default the middle) places the line
    along which the mouth opens.
    """
    axes = FaceAxes.from_landmarks(landmarks)
    surface = landmarks[:N_SURFACE, :2]
    z = landmarks[:N_SURFACE, 2]
    upper, lower = np.array(UPPER_LIP_INNER), np.array(LOWER_LIP_INNER)
    t = np.full((len(upper), 1), 0.5, np.float32) if split is None else split.reshape(-1, 1)
    midline = surface[upper] + (surface[lower] - surface[upper]) * t
    head_pts, outer_pts = _rings(landmarks, axes, size)
    n_mid = len(upper)
    up_ids = list(range(N_SURFACE, N_SURFACE + n_mid))
    lo_ids = list(range(N_SURFACE + n_mid, N_SURFACE + 2 * n_mid))
    ring0 = N_SURFACE + 2 * n_mid
    n_ring = len(FACE_OVAL)
    head_ids = list(range(ring0, ring0 + n_ring))
    outer_ids = list(range(ring0 + n_ring, ring0 + 2 * n_ring))
    vertices = np.concatenate([surface, midline, midline, head_pts, outer_pts]).astype(np.float32)

    oval_z = z[list(FACE_OVAL)]
    # Ring depth: as deep as the outline point it grew from and a little further back, so the head
    # ring turns less than the face when the head yaws (it is nearer the rotation axis).
    ring_z = oval_z + 0.1 * axes.height
    depth = np.concatenate([z, (z[upper] + z[lower]) / 2, (z[upper] + z[lower]) / 2, ring_z, ring_z]).astype(np.float32)
    head_weight = np.ones(len(vertices), np.float32)
    head_weight[outer_ids] = 0.0

    left_c, right_c = MOUTH_CORNERS_INNER
    fills: list[tuple[int, int, int]] = []
    fills += _strip([left_c, *upper.tolist(), right_c], [left_c, *up_ids, right_c])
    fills += _strip([left_c, *lo_ids, right_c], [left_c, *lower.tolist(), right_c])
    for corners, top, bottom in (
        (RIGHT_EYE_CORNERS, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER),
        (LEFT_EYE_CORNERS, LEFT_EYE_UPPER, LEFT_EYE_LOWER),
    ):
        fills += _strip([corners[0], *top, corners[1]], [corners[0], *bottom, corners[1]])
    oval = list(FACE_OVAL)
    rings: list[tuple[int, int, int]] = []
    for inner, outer in ((oval, head_ids), (head_ids, outer_ids)):
        for i in range(n_ring):
            j = (i + 1) % n_ring
            rings += [(inner[i], inner[j], outer[i]), (outer[i], inner[j], outer[j])]
    triangles = np.concatenate([np.array(fills, np.int32), surface_triangles(), np.array(rings, np.int32)]).astype(
        np.int32
    )

    x0, y0 = np.floor(outer_pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(outer_pts.max(axis=0)).astype(int) + 1
    region = (max(int(x0), 0), max(int(y0), 0), min(int(x1), size), min(int(y1), size))
    return Mesh(
        vertices=vertices,
        depth=depth,
        triangles=triangles,
        head_weight=head_weight,
        upper_mid=np.array([left_c, *up_ids, right_c], np.int32),
        lower_mid=np.array([left_c, *lo_ids, right_c], np.int32),
        head_ring=np.array(head_ids, np.int32),
        outer_ring=np.array(outer_ids, np.int32),
        region=region,
        axes=axes,
    )
