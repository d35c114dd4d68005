"""The MediaPipe FaceLandmarker, wrapped to return plain arrays, and the landmark indices the rig uses.

Indices refer to MediaPipe's 478-point face mesh (468 surface points followed by 10 iris points).
"""

from __future__ import annotations

import pathlib
import threading
from functools import cache

import numpy as np
import numpy.typing as npt

from avatar.errors import ModelError
from avatar.native import quiet_native_stderr
from avatar.types import FloatArray, IntArray

N_SURFACE = 468
"""Mesh points that lie on the face surface; the iris points after them are not part of the mesh."""

FOREHEAD = 10
CHIN = 152
NOSE_TIP = 1
SUBNASALE = 2

# Inner lip contour, corner to corner. The upper and lower lists pair up point by point (same order
# along the mouth), which is what lets the rig split the mouth opening along a midline.
MOUTH_CORNERS_INNER = (78, 308)
UPPER_LIP_INNER = (191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_LIP_INNER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
MOUTH_CORNERS_OUTER = (61, 291)
UPPER_LIP_OUTER = (185, 40, 39, 37, 0, 267, 269, 270, 409)
LOWER_LIP_OUTER = (146, 91, 181, 84, 17, 314, 405, 321, 375)
LIP_TOP = 13
LIP_BOTTOM = 14

# Eyebrows (upper and lower edges), subject's right then left.
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)

# Eye contours, corner to corner; upper and lower lists pair up as for the lips. "Right" is the
# subject's right eye, which appears on the left of the image.
RIGHT_EYE_CORNERS = (33, 133)
RIGHT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_EYE_LOWER = (7, 163, 144, 145, 153, 154, 155)
LEFT_EYE_CORNERS = (263, 362)
LEFT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_EYE_LOWER = (249, 390, 373, 374, 380, 381, 382)

# The outline of the face mesh, clockwise from the top of the forehead.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip


@cache
def surface_triangles() -> IntArray:
    """MediaPipe's tessellation of the 468 surface points, (852, 3).

    The library lists it as edges, three per triangle in order; the mesh has holes for the eyes and
    the mouth, which the rig fills with its own triangles.
    """
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections

    edges = FaceLandmarksConnections.FACE_LANDMARKS_TESSELATION
    starts = np.array([edge.start for edge in edges], dtype=np.int32)
    return starts.reshape(-1, 3)


class Landmarker:
    """FaceLandmarker in IMAGE mode: one call per photo, landmarks in pixel coordinates.

    MediaPipe's detector is not documented as thread-safe, so calls are serialised.
    """

    def __init__(self, model_path: pathlib.Path, *, max_faces: int = 4) -> None:
        path = pathlib.Path(model_path)
        if not path.is_file():
            raise ModelError(f"Face landmarker model not found: {path}")
        try:
            import mediapipe as mp
            from mediapipe.tasks.python.core.base_options import BaseOptions
            from mediapipe.tasks.python.vision import face_landmarker as fl
            from mediapipe.tasks.python.vision.core.vision_task_running_mode import (
                VisionTaskRunningMode,
            )

            options = fl.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(path)),
                running_mode=VisionTaskRunningMode.IMAGE,
                num_faces=max_faces,
            )
            with quiet_native_stderr():
                self._task: fl.FaceLandmarker | None = fl.FaceLandmarker.create_from_options(options)
                blank = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8))
                self._task.detect(blank)  # the first inference logs natively too
        except Exception as exc:  # mediapipe raises ValueError/RuntimeError for unreadable models
            raise ModelError(f"Face landmarker model {path} could not be loaded: {exc}") from exc
        self._lock = threading.Lock()

    def detect(self, image: npt.NDArray[np.uint8]) -> list[FloatArray]:
        """Every face in an RGB image as (478, 3) float32 arrays of (x, y, z) pixels.

        z is MediaPipe's relative depth, in the same pixel scale as x (smaller is nearer the camera).
        """
        import mediapipe as mp

        if self._task is None:
            raise ModelError("The face landmarker was closed")
        h, w = image.shape[:2]
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        try:
            with self._lock:
                result = self._task.detect(mp_image)
        except Exception as exc:
            raise ModelError(f"Face landmark detection failed: {exc}") from exc
        faces = []
        for face in result.face_landmarks:
            points = np.array([(p.x, p.y, p.z) for p in face], dtype=np.float32)
            # Normalised coordinates → pixels; MediaPipe scales z like x.
            points *= np.array([w, h, w], dtype=np.float32)
            faces.append(points)
        return faces

    def close(self) -> None:
        """Release the native graph. Safe to call twice."""
        # Close explicitly: MediaPipe's own __del__ fails (noisily) when left to interpreter exit.
        task, self._task = self._task, None
        if task is not None:
            task.close()
