"""Pieces of the MediaPipe face-puppet animator (see ``avatar.backends.face_puppet``).

One idea per module: ``landmarks`` (detector and landmark indices), ``framing`` (crop a portrait around
the face), ``mesh`` (the triangulated rig), ``rig`` (how the mesh deforms), ``audio`` (speech features per
video frame), ``motion`` (blinks and head sway), ``warp`` (piecewise-affine rendering) and ``mouth``
(shading the parted lips).
"""
