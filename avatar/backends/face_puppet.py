"""Embedded talking head: a portrait animated by warping a MediaPipe face mesh in step with speech.

``prepare`` finds the face once (MediaPipe FaceLandmarker), frames it as a square head-and-shoulders
picture and rigs a triangle mesh over it. ``render`` turns audio into per-frame controls (jaw
opening from loudness, mouth shape from the spectrum, blinks and head sway from the frame index)
and warps the picture triangle by triangle. Only the head region is ever touched; every pixel
outside it is the prepared picture's own.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from avatar import types as base
from avatar.backends.puppet.audio import SpeechTrack, analyse, validate, with_visemes
from avatar.backends.puppet.framing import face_height, frame_face
from avatar.backends.puppet.landmarks import Landmarker
from avatar.backends.puppet.mesh import Mesh, build_mesh
from avatar.backends.puppet.motion import (
    Listening,
    blinks,
    head_motion,
    listening_blinks,
    listening_motion,
    listening_sway,
)
from avatar.backends.puppet.mouth import MouthStyle, mouth_style, occlusion_split, shade_mouth
from avatar.backends.puppet.rig import Pose, Rig, build_rig
from avatar.backends.puppet.visemes import viseme_track
from avatar.backends.puppet.warp import Warper
from avatar.errors import InvalidAudioError, InvalidRequestError
from avatar.types import AudioArray, FloatArray, FrameArray, Phone, frame_count

log = logging.getLogger(__name__)


def _rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise InvalidAudioError(f"Sample rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


@dataclass(frozen=True, eq=False)
class PreparedFace:
    """Everything computed once from a portrait; reused for every reply."""

    image: FrameArray
    """(size, size, 3) RGB: the framed portrait, which is also the rest frame."""
    landmarks: FloatArray
    """(478, 3) MediaPipe landmarks (x, y, z) in ``image`` pixels."""
    mesh: Mesh
    rig: Rig
    mouth: MouthStyle
    warper: Warper
    transform: FloatArray
    """2×3 affine from the original photo's pixels to ``image``."""
    faces: int = 1
    """Faces found in the photo; the largest is the one animated."""

    @property
    def region(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the only pixels animation may change."""
        return self.mesh.region

    @property
    def size(self) -> int:
        """Frame side in pixels."""
        return int(self.image.shape[0])


class PuppetAnimator:
    """MediaPipe landmark puppet implementing ``avatar.types.FaceAnimator``.

    ``blink`` and ``head_motion`` switch off the idle animation (for tests and stills); ``seed``
    picks the blink schedule and sway pattern. ``threads`` > 1 renders frames in parallel.
    """

    name = "mediapipe-puppet"

    def __init__(
        self,
        landmarker_path: pathlib.Path,
        *,
        size: int = 512,
        fps: int = 25,
        threads: int = 1,
        blink: bool = True,
        head_motion: bool = True,
        seed: int = 0,
    ) -> None:
        if size < 64:
            raise ValueError(f"size must be at least 64 pixels, got {size}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.size = size
        self.threads = max(1, threads)
        self.blink = blink
        self.head_motion = head_motion
        self.seed = seed
        self._landmarker = Landmarker(pathlib.Path(landmarker_path))
        self._pool: ThreadPoolExecutor | None = None
        if self.threads > 1:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="puppet")

    def warmup(self) -> None:
        """Run the detector once and the warp/mouth/audio paths on a synthetic mesh."""
        self._landmarker.detect(np.zeros((192, 192, 3), np.uint8))
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        grid = np.stack(np.meshgrid(np.arange(8, 64, 16), np.arange(8, 64, 16)), axis=-1).reshape(-1, 2)
        rest = grid.astype(np.float32)
        tris = np.array([[0, 1, 4], [1, 5, 4], [5, 6, 10], [5, 10, 9]], np.int32)
        warper = Warper(image, rest, tris, (0, 0, 64, 64))
        warper.warp(rest + rng.normal(0, 1, rest.shape).astype(np.float32))
        analyse(rng.normal(0, 0.1, 16000).astype(np.float32), 16000, 25, self.fps)

    def close(self) -> None:
        """Release the detector and worker threads."""
        self._landmarker.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def prepare(self, image: FrameArray) -> PreparedFace:
        """Find, frame and rig the face in an RGB photo of any size.

        Raises NoFaceError when there is no face or it is too small, InvalidImageError for arrays
        that are not 8-bit images. With several faces, the largest is used.
        """
        framing = frame_face(self._landmarker, image, self.size)
        height = face_height(framing.landmarks)
        split = occlusion_split(framing.image, framing.landmarks, height)
        mesh = build_mesh(framing.landmarks, self.size, split)
        rig = build_rig(mesh)
        return PreparedFace(
            image=framing.image,
            landmarks=framing.landmarks,
            mesh=mesh,
            rig=rig,
            mouth=mouth_style(framing.image, framing.landmarks, height),
            warper=Warper(framing.image, mesh.vertices, mesh.triangles, mesh.region),
            transform=framing.transform,
            faces=framing.faces,
        )

    def render(
        self,
        face: base.PreparedFace,
        audio: AudioArray,
        sample_rate: int,
        *,
        start_frame: int = 0,
        phones: Sequence[Phone] | None = None,
    ) -> FrameArray:
        """All frames of ``face`` speaking ``audio``: ``frame_count(len(audio)/sample_rate, fps)``.

        ``start_frame`` places the clip on a longer timeline (a reply rendered sentence by sentence),
        so blinks and head motion continue across clips instead of restarting. ``phones`` (the sounds
        in the audio with their times) shape the lips to the words; without them the mouth follows
        the loudness and spectrum of the audio.
        """
        prepared = self._check(face)
        n = frame_count(len(validate(audio)) / _rate(sample_rate), self.fps)
        out = np.empty((n, prepared.size, prepared.size, 3), np.uint8)
        at = 0
        chunks = self.render_chunks(
            prepared, audio, sample_rate, chunk_frames=max(8, 4 * self.threads), start_frame=start_frame, phones=phones
        )
        for chunk in chunks:
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
        return out

    def render_chunks(
        self,
        face: base.PreparedFace,
        audio: AudioArray,
        sample_rate: int,
        chunk_frames: int = 25,
        *,
        start_frame: int = 0,
        phones: Sequence[Phone] | None = None,
        listening: Listening | None = None,
    ) -> Iterator[FrameArray]:
        """The frames of ``render`` in consecutive chunks of ``chunk_frames`` (the last may be short).

        Every frame depends only on its index and the whole audio, so the chunks concatenate to
        exactly what ``render`` returns.
        """
        prepared = self._check(face)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
        samples = validate(audio)
        n = frame_count(len(samples) / _rate(sample_rate), self.fps)
        track = self._track(samples, sample_rate, n, phones)
        for start in range(0, n, chunk_frames):
            stop = min(start + chunk_frames, n)
            poses = self._poses(track, start, stop, start_frame, listening)
            if self._pool is not None:
                frames = list(self._pool.map(lambda p: self._frame(prepared, p), poses))
            else:
                frames = [self._frame(prepared, p) for p in poses]
            yield np.stack(frames)

    def _track(self, samples: AudioArray, sample_rate: int, n: int, phones: Sequence[Phone] | None) -> SpeechTrack:
        """The clip's controls: from the audio, with the mouth shaped by the phones where there are any."""
        track = analyse(samples, sample_rate, n, self.fps)
        if not phones:
            return track
        try:
            shapes = viseme_track(phones, n, self.fps)
        except (ValueError, IndexError) as exc:  # odd timings: the audio alone still drives the mouth
            log.warning("phones unusable; the mouth follows the audio", extra={"reason": str(exc)})
            return track
        return track if shapes is None else with_visemes(track, shapes, self.fps)

    def _check(self, face: base.PreparedFace) -> PreparedFace:
        if not isinstance(face, PreparedFace):
            raise InvalidRequestError(f"{self.name} cannot render a face prepared by another animator")
        return face

    def _poses(
        self, track: SpeechTrack, start: int, stop: int, offset: int = 0, listening: Listening | None = None
    ) -> list[Pose]:
        n = stop - start
        first, last = start + offset, stop + offset  # on the reply's whole timeline
        closed = blinks(first, last, self.fps, self.seed) if self.blink else np.zeros(n, np.float32)
        if self.head_motion:
            activity, emphasis = track.activity[start:stop], track.emphasis[start:stop]
            sway = head_motion(first, last, self.fps, self.seed, activity, emphasis)
        else:
            sway = np.zeros((n, 5), np.float32)
        if listening is not None:  # the face listens to the user (motion.py): added to the idle motion
            added, weight = listening_motion(first, last, self.fps, listening)
            sway = listening_sway(sway, weight) + added
            closed = listening_blinks(first, last, self.fps, self.seed, weight) if self.blink else closed
        return [
            Pose(
                open=float(track.open[start + i]),
                width=float(track.width[start + i]),
                seal=0.0 if track.seal is None else float(track.seal[start + i]),
                tuck=0.0 if track.tuck is None else float(track.tuck[start + i]),
                pucker=0.0 if track.pucker is None else float(track.pucker[start + i]),
                brow=float(track.emphasis[start + i]) if self.head_motion else 0.0,
                blink_right=float(closed[i]),
                blink_left=float(closed[i]),
                roll=float(sway[i, 0]),
                yaw=float(sway[i, 1]),
                pitch=float(sway[i, 2]),
                shift_x=float(sway[i, 3]),
                shift_y=float(sway[i, 4]),
            )
            for i in range(n)
        ]

    @staticmethod
    def _frame(face: PreparedFace, pose: Pose) -> FrameArray:
        frame = face.image.copy()
        if pose.is_rest():
            return frame
        vertices = face.rig.pose(pose)
        warped = face.warper.warp(vertices)
        x0, y0, x1, y1 = face.region
        if pose.open > 0 or pose.tuck > 0 or pose.seal > 0 or pose.pucker > 0:
            shade_mouth(warped, vertices[face.mesh.upper_mid], vertices[face.mesh.lower_mid], (x0, y0), face.mouth)
        frame[y0:y1, x0:x1] = warped.pixels
        return frame
