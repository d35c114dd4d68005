"""How the mesh deforms: a few displacement fields (jaw, mouth width, blinks) plus a head pose.

Each field is the per-vertex displacement for a control at 1; a frame's vertices are the rest
vertices plus a weighted sum of fields, then the head pose. The fields are built once per face in
face-local units (face heights), so the same numbers suit any photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from avatar.types import FloatArray

from .harmonic import adjacency, blur, harmonic_fill
from .landmarks import (
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE_CORNERS,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LOWER_LIP_INNER,
    LOWER_LIP_OUTER,
    MOUTH_CORNERS_INNER,
    MOUTH_CORNERS_OUTER,
    N_SURFACE,
    RIGHT_BROW,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    SUBNASALE,
    UPPER_LIP_INNER,
    UPPER_LIP_OUTER,
)
from .mesh import Mesh

JAW_DROP = 0.055
"""Lower-lip travel at full opening, in face heights (about 10 mm on an adult face)."""
UPPER_LIP_RISE = 0.012
MOUTH_STRETCH = 0.10
"""Relative change of mouth width at full "ee" (+) or "oo" (−)."""
LIP_PRESS = 0.010
"""Lips thin towards the midline for "ee" and purse outwards for "oo", in face heights."""
SEAL_PRESS = 0.004
"""Pressed lips (m, b, p) thin a little towards the line where they meet, in face heights."""
PUCKER_NARROW = 0.22
"""Rounded lips (oo, oh, w): the mouth this much narrower at full rounding, its middle parting a little
as the lips push forward into a round opening."""
PUCKER_PART = 0.004
TUCK_RISE = 0.010
"""For f and v the upper lip lifts off the upper teeth this far while the lower lip comes up to them."""
BROW_RAISE = 0.012
"""Brow lift at full emphasis, in face heights (about 2 mm): a stressed word lifts them a little."""
LOWER_LID_RISE = 0.15
"""Share of a blink made by the lower lid; the upper lid travels the rest."""
LID_CLOSURE = 0.97
"""Lids stop a hair apart: exactly meeting would leave zero-area triangles whose orientation, and
so what they show, flickers with rounding."""
LID_CARRY = 0.85
"""How far the skin ring just above the lashes travels with them (the lid is fairly rigid)."""
NECK_PIVOT = 0.75
"""Roll pivot below the face centre, in face heights: heads tilt about the neck, not the nose."""
SKULL_DEPTH = 0.45
"""Depth of the yaw/pitch axis behind the face outline, in face heights."""


@dataclass(frozen=True)
class Pose:
    """One frame's controls. Angles in radians, shifts in face heights."""

    open: float = 0.0
    width: float = 0.0
    seal: float = 0.0
    """0 … 1: the lips pressed together (bilabials), meeting even where the photo shows teeth."""
    tuck: float = 0.0
    """0 … 1: the lower lip up to the upper teeth (labiodentals)."""
    pucker: float = 0.0
    """0 … 1: lips rounded and pushed forward (from the phonemes; the audio's width is ``width``)."""
    brow: float = 0.0
    """0 … 1: brows lifted with the voice's emphasis."""
    blink_right: float = 0.0
    blink_left: float = 0.0
    roll: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    def is_rest(self) -> bool:
        """True when the frame is exactly the prepared photo."""
        return not any(abs(v) > 1e-6 for v in vars(self).values())


def _smoothstep(edge0: float | FloatArray, edge1: float | FloatArray, x: FloatArray) -> FloatArray:
    t = np.clip((x - edge0) / (np.asarray(edge1) - edge0), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


@dataclass(frozen=True)
class Rig:
    """The displacement fields of one face, (V, 2) frame pixels each, and the head-pose data."""

    rest: FloatArray
    jaw: FloatArray
    stretch: FloatArray
    press: FloatArray
    seal: FloatArray
    tuck: FloatArray
    pucker: FloatArray
    brow: FloatArray
    blink_right: FloatArray
    blink_left: FloatArray
    head_weight: FloatArray
    depth_lever: FloatArray
    """(V,) distance in front of the yaw/pitch axis, pixels: how far a vertex swings as the head turns."""
    pivot: FloatArray
    height: float

    def pose(self, p: Pose) -> FloatArray:
        """Vertex positions (V, 2) for a frame."""
        # Lip shaping only makes sense on an open mouth: pressing closed lips together would fold
        # them across the midline, and a closed mouth must stay exactly at rest.
        width = p.width * min(1.0, p.open / 0.15)
        v = self.rest + p.open * self.jaw
        v = v + (width * (0.3 + 0.7 * p.open)) * self.stretch + (width * p.open) * self.press
        if p.seal or p.tuck or p.pucker:
            v = v + p.seal * self.seal + p.tuck * self.tuck + p.pucker * self.pucker
        if p.brow:
            v = v + p.brow * self.brow
        v = v + p.blink_right * self.blink_right + p.blink_left * self.blink_left
        if p.roll or p.yaw or p.pitch or p.shift_x or p.shift_y:
            c, s = np.cos(p.roll), np.sin(p.roll)
            rel = v - self.pivot
            rolled = np.stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]], axis=1)
            # Small-angle turn of a 3-D point seen head-on: it slides sideways (yaw) or vertically
            # (pitch) in proportion to how far it stands in front of the axis, so the nose moves more
            # than the cheeks and the head outline least, which reads as a turn rather than a slide.
            turn = np.stack([p.yaw * self.depth_lever, p.pitch * self.depth_lever], axis=1)
            shift = np.array([p.shift_x, p.shift_y], np.float32) * self.height
            v = v + self.head_weight[:, None] * (rolled + self.pivot - v + turn + shift)
        return v.astype(np.float32)


def _lip_profile(x: FloatArray, half_width: float) -> FloatArray:
    """The opening is an ellipse: lips part most in the middle, less towards the corners."""
    return (0.6 + 0.4 * np.clip(1 - (x / half_width) ** 2, 0.0, 1.0)).astype(np.float32)


def _mouth_fields(mesh: Mesh, weights: sp.csr_matrix) -> tuple[FloatArray, ...]:
    """Jaw drop, mouth stretch, lip press, seal, tuck and pucker fields in face-local units (face heights).

    Each is prescribed on the lips, the face outline and everything above the nose, and spread
    harmonically over the cheeks, chin and mouth corners in between.
    """
    axes, verts = mesh.axes, mesh.vertices
    upper, lower = list(UPPER_LIP_INNER), list(LOWER_LIP_INNER)
    up_mid, lo_mid = mesh.upper_mid[1:-1].tolist(), mesh.lower_mid[1:-1].tolist()
    centre = (verts[upper[4]] + verts[lower[4]]) / 2
    loc = axes.local(verts, centre)
    x, y = loc[:, 0], loc[:, 1]
    corners = axes.local(verts[list(MOUTH_CORNERS_INNER)], centre)
    half_w = float(corners[1, 0] - corners[0, 0]) / 2
    corner_y = float(corners[:, 1].mean())
    nose_y = float(axes.local(verts[SUBNASALE : SUBNASALE + 1], centre)[0, 1])
    profile = _lip_profile(x, half_w)

    n = len(verts)
    still = np.zeros(n, bool)
    still[:N_SURFACE] = y[:N_SURFACE] < nose_y  # nose, eyes, brows, forehead, upper cheeks
    still[mesh.outer_ring] = True
    oval = list(FACE_OVAL)

    # Jaw: the lower lip and the chin drop, parts near the hinge (below the ears) hardly move; the
    # upper lip lifts a little.
    jaw = np.zeros((n, 2), np.float32)
    fixed = still.copy()
    hinge = 1.0 - _smoothstep(0.1, 0.45, np.abs(x))
    below = _smoothstep(corner_y - 0.05, corner_y + 0.1, y)
    jaw[oval, 1] = JAW_DROP * hinge[oval] * below[oval]
    jaw[mesh.head_ring, 1] = 0.5 * jaw[oval, 1]
    jaw[upper + up_mid, 1] = -UPPER_LIP_RISE * profile[upper + upper]
    jaw[list(UPPER_LIP_OUTER), 1] = -0.5 * UPPER_LIP_RISE * profile[list(UPPER_LIP_OUTER)]
    jaw[lower + lo_mid, 1] = JAW_DROP * profile[lower + lower]
    jaw[list(LOWER_LIP_OUTER), 1] = JAW_DROP * (0.5 + 0.5 * profile[list(LOWER_LIP_OUTER)])
    lips = upper + up_mid + lower + lo_mid + list(UPPER_LIP_OUTER) + list(LOWER_LIP_OUTER)
    fixed[oval + mesh.head_ring.tolist() + lips] = True
    jaw = harmonic_fill(weights, jaw, fixed)

    # Stretch ("ee" +, "oo" −): the lips and corners spread sideways about the mouth centre.
    mouth = lips + list(MOUTH_CORNERS_INNER) + list(MOUTH_CORNERS_OUTER)
    stretch = np.zeros((n, 2), np.float32)
    stretch[mouth, 0] = MOUTH_STRETCH * x[mouth]
    fixed = still.copy()
    fixed[oval + mesh.head_ring.tolist() + mouth] = True
    stretch = harmonic_fill(weights, stretch, fixed)

    # Press: spread lips thin towards the midline, rounded ones purse outwards; corners stay.
    press = np.zeros((n, 2), np.float32)
    press[upper + up_mid, 1] = LIP_PRESS * profile[upper + upper]
    press[lower + lo_mid, 1] = -LIP_PRESS * profile[lower + lower]
    press[list(UPPER_LIP_OUTER), 1] = 0.5 * LIP_PRESS * profile[list(UPPER_LIP_OUTER)]
    press[list(LOWER_LIP_OUTER), 1] = -0.5 * LIP_PRESS * profile[list(LOWER_LIP_OUTER)]
    fixed[list(MOUTH_CORNERS_INNER) + list(MOUTH_CORNERS_OUTER)] = True
    press = harmonic_fill(weights, press, fixed)

    # Seal (m, b, p): each inner lip goes to the line where the mouth splits, so the lips meet over
    # any teeth the photo shows (those rows fold away under them); the outer lip lines follow most
    # of the way, less the little the lips thin as they press.
    mid_up = axes.local(verts[mesh.upper_mid[1:-1]], centre)
    mid_lo = axes.local(verts[mesh.lower_mid[1:-1]], centre)
    to_mid_up = mid_up - loc[upper]
    to_mid_lo = mid_lo - loc[lower]
    seal = np.zeros((n, 2), np.float32)
    seal[upper] = to_mid_up
    seal[lower] = to_mid_lo
    seal[list(UPPER_LIP_OUTER)] = 0.85 * to_mid_up
    seal[list(UPPER_LIP_OUTER), 1] += SEAL_PRESS * profile[list(UPPER_LIP_OUTER)]
    seal[list(LOWER_LIP_OUTER)] = 0.85 * to_mid_lo
    seal[list(LOWER_LIP_OUTER), 1] -= SEAL_PRESS * profile[list(LOWER_LIP_OUTER)]
    fixed = still.copy()
    fixed[oval + mesh.head_ring.tolist() + lips + list(MOUTH_CORNERS_INNER) + list(MOUTH_CORNERS_OUTER)] = True
    seal = harmonic_fill(weights, seal, fixed)

    # Tuck (f, v): the lower lip comes up to the split line and rolls in a little; the upper lip lifts
    # off the teeth, which show between them.
    tuck = np.zeros((n, 2), np.float32)
    tuck[lower] = to_mid_lo
    tuck[list(LOWER_LIP_OUTER)] = 0.6 * to_mid_lo
    tuck[list(LOWER_LIP_OUTER), 1] -= 0.5 * SEAL_PRESS * profile[list(LOWER_LIP_OUTER)]
    tuck[upper + up_mid, 1] = -TUCK_RISE * profile[upper + upper]
    tuck[list(UPPER_LIP_OUTER), 1] = -0.6 * TUCK_RISE * profile[list(UPPER_LIP_OUTER)]
    tuck = harmonic_fill(weights, tuck, fixed)

    # Pucker (oo, oh, w): the corners and the lips beside them draw in towards the middle, and the
    # middle of the lips parts a little, so the opening rounds.
    pucker = np.zeros((n, 2), np.float32)
    pucker[mouth, 0] = -PUCKER_NARROW * x[mouth]
    middle = np.clip(1 - (x / half_w) ** 2, 0.0, 1.0)
    pucker[upper + up_mid, 1] = -PUCKER_PART * middle[upper + upper]
    pucker[lower + lo_mid, 1] = PUCKER_PART * middle[lower + lower]
    fixed = still.copy()
    fixed[oval + mesh.head_ring.tolist() + mouth] = True
    pucker = harmonic_fill(weights, pucker, fixed)
    return jaw, stretch, press, seal, tuck, pucker


def _blink_field(
    mesh: Mesh, weights: sp.csr_matrix, corners: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...]
) -> FloatArray:
    """Displacement that closes one eye: the upper lid slides down, the lower lid rises a little.

    The lid itself (the lash line and the ring of skin just above it) moves down as a piece, so
    the lashes stay a crisp line at its edge instead of being smeared over the eye; the skin
    between it and the brow stretches harmonically, and everything farther away stays.
    """
    axes, verts = mesh.axes, mesh.vertices
    loc = axes.local(verts)
    contour = [corners[0], *top, *bottom, corners[1]]
    eye_centre = loc[contour].mean(axis=0)
    eye_half_w = float(np.abs(loc[corners[1], 0] - loc[corners[0], 0])) / 2
    reach = np.hypot((loc[:, 0] - eye_centre[0]) / (eye_half_w + 0.05), (loc[:, 1] - eye_centre[1]) / 0.1)
    field = np.zeros((len(verts), 2), np.float32)
    fixed = reach > 1.0
    fixed[N_SURFACE:] = True
    travel = LID_CLOSURE * np.array([loc[b, 1] - loc[t, 1] for t, b in zip(top, bottom, strict=True)], np.float32)
    field[list(top), 1] = (1 - LOWER_LID_RISE) * travel
    field[list(bottom), 1] = -LOWER_LID_RISE * travel
    fixed[contour] = True
    # The lid: surface neighbours of the upper contour that lie above it.
    top_x = loc[list(top), 0]
    top_y = np.interp(loc[:, 0], np.sort(top_x), loc[list(top), 1][np.argsort(top_x)])
    neighbours = np.unique(weights[list(top)].nonzero()[1])
    lid = [int(v) for v in neighbours if v < N_SURFACE and v not in contour and loc[v, 1] < top_y[v]]
    for v in lid:
        nearest = int(np.argmin(np.abs(top_x - loc[v, 0])))
        field[v, 1] = LID_CARRY * (1 - LOWER_LID_RISE) * travel[nearest]
    fixed[lid] = True
    return harmonic_fill(weights, field, fixed)


def _brow_field(mesh: Mesh, weights: sp.csr_matrix) -> FloatArray:
    """Both brows lifted by ``BROW_RAISE``; the eyes' contours, the nose and everything below stay, and
    the forehead and upper lids stretch between."""
    loc = mesh.axes.local(mesh.vertices)
    field = np.zeros((len(mesh.vertices), 2), np.float32)
    brows = list(RIGHT_BROW) + list(LEFT_BROW)
    field[brows, 1] = -BROW_RAISE
    eyes = [*RIGHT_EYE_CORNERS, *RIGHT_EYE_UPPER, *RIGHT_EYE_LOWER, *LEFT_EYE_CORNERS, *LEFT_EYE_UPPER, *LEFT_EYE_LOWER]
    brow_y = float(loc[brows, 1].mean())
    fixed = np.zeros(len(mesh.vertices), bool)
    fixed[:N_SURFACE] = loc[:N_SURFACE, 1] > brow_y + 0.12  # below the eyes
    fixed[N_SURFACE:] = True
    fixed[brows + eyes] = True
    return harmonic_fill(weights, field, fixed)


def build_rig(mesh: Mesh) -> Rig:
    """Displacement fields for ``mesh``, in frame pixels."""
    axes = mesh.axes
    weights = adjacency(mesh.triangles, len(mesh.vertices), mesh.vertices)
    jaw, stretch, press, seal, tuck, pucker = _mouth_fields(mesh, weights)
    right = _blink_field(mesh, weights, RIGHT_EYE_CORNERS, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
    left = _blink_field(mesh, weights, LEFT_EYE_CORNERS, LEFT_EYE_UPPER, LEFT_EYE_LOWER)
    oval_depth = float(mesh.depth[list(FACE_OVAL)].mean())
    lever = oval_depth + SKULL_DEPTH * axes.height - mesh.depth
    # MediaPipe's surface folds where the face turns away at its outline; neighbours there can
    # differ a lot in depth while overlapping on screen. A light blur keeps the nose-versus-outline
    # parallax and stops those slivers opening or folding as the head turns.
    lever = blur(weights, lever[:, None], iterations=6)[:, 0]
    return Rig(
        rest=mesh.vertices,
        jaw=axes.to_frame(jaw),
        stretch=axes.to_frame(stretch),
        press=axes.to_frame(press),
        seal=axes.to_frame(seal),
        tuck=axes.to_frame(tuck),
        pucker=axes.to_frame(pucker),
        brow=axes.to_frame(_brow_field(mesh, weights)),
        blink_right=axes.to_frame(right),
        blink_left=axes.to_frame(left),
        head_weight=mesh.head_weight,
        depth_lever=lever.astype(np.float32),
        pivot=(axes.centre + axes.v * NECK_PIVOT * axes.height).astype(np.float32),
        height=axes.height,
    )
