"""A reply kept as files: video segments handed out while it is made, then an MP4 and a WAV.

Each chunk of frames is encoded (with its audio) into one fragmented MP4 as it is drawn; whatever whole
boxes that produced become the next segment, stored in ``segments/`` and announced with a ``segment``
event. When the reply is complete the segments, end to end, are copied without re-encoding into an
ordinary, seekable ``reply.mp4``; the audio is written to ``reply.wav`` as it goes. Nothing is left
behind when the reply fails or is cancelled.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from avatar import media
from avatar.fmp4 import SegmentWriter, VideoFormat, remux_to_mp4
from avatar.images import labelled
from avatar.pipeline.reply import TurnEvents
from avatar.pipeline.threads import run_blocking
from avatar.pipeline.timing import TurnTimings
from avatar.types import AudioArray, FrameArray

VIDEO_NAME = "reply.mp4"
AUDIO_NAME = "reply.wav"
SUMMARY_NAME = "turn.json"
SEGMENTS_DIR = "segments"
STREAM_NAME = ".stream.mp4"  # the segments end to end, while the turn runs (remuxed into reply.mp4)
MADE = (VIDEO_NAME, AUDIO_NAME, SUMMARY_NAME, STREAM_NAME, SEGMENTS_DIR)


def segment_name(index: int) -> str:
    return f"{index:04d}.m4s"


class ReplyFiles:
    """The ``ReplyOutput`` of the HTTP routes and the CLI: segments, then reply.mp4 and reply.wav."""

    def __init__(
        self,
        out_dir: Path,
        sample_rate: int,
        fps: int,
        fmt: VideoFormat,
        emit: TurnEvents,
        timings: TurnTimings,
        *,
        sign: Callable[[Path], None] | None = None,
        label: str = "",
    ) -> None:
        """``sign`` marks the finished reply.mp4 (``Provenance.sign_mp4``: the AI-generated manifest);
        ``label``, when set, is drawn on every frame (AVATAR_VISIBLE_LABEL)."""
        self.out_dir = out_dir
        self.sign = sign
        self.label = label
        self.fps = fps
        self.emit = emit
        self.timings = timings
        self.writer = SegmentWriter(sample_rate, fps, fmt)
        self.wav = media.WavWriter(out_dir / AUDIO_NAME, sample_rate)
        self.segments = 0
        self._cut_at = 0  # the frame where the last segment ended

    @property
    def delivered_seconds(self) -> float:
        return self._cut_at / self.fps

    @property
    def frames(self) -> int:
        return self.writer.frames

    @property
    def audio_seconds(self) -> float:
        return self.wav.samples / self.wav.sample_rate

    async def open(self) -> None:
        await run_blocking((self.out_dir / SEGMENTS_DIR).mkdir, parents=True, exist_ok=True)

    async def write(self, frames: FrameArray, audio: AudioArray) -> None:
        with self.timings.stage("mux"):
            segment = await run_blocking(self._encode, frames, audio)
        await self._publish(segment)

    def _encode(self, frames: FrameArray, audio: AudioArray) -> bytes:
        if self.label:
            frames = labelled(frames, self.label)
        self.wav.write(audio)
        self.writer.write(frames, audio)
        return self.writer.cut()

    async def close(self) -> None:
        """The reply is complete: the last segment, then reply.mp4 and reply.wav (neither when nothing
        could be spoken: a text-only reply)."""
        if not self.writer.frames:
            await self.abort()
            return
        await self._publish(await run_blocking(self.writer.finish))
        with self.timings.stage("mux"):
            await run_blocking(remux_to_mp4, self.out_dir / STREAM_NAME, self.out_dir / VIDEO_NAME)
            if self.sign is not None:
                await run_blocking(self.sign, self.out_dir / VIDEO_NAME)
            await run_blocking(self.wav.close)
        await run_blocking(_remove, [self.out_dir / STREAM_NAME])

    async def abort(self) -> None:
        await run_blocking(self.writer.abort)
        await run_blocking(self.wav.abort)
        await run_blocking(_remove, [self.out_dir / name for name in MADE])

    async def drop_segments(self) -> None:
        await run_blocking(_remove, [self.out_dir / SEGMENTS_DIR])

    async def _publish(self, segment: bytes) -> None:
        """Store a segment (and append it to the whole stream) and tell the client it exists."""
        if not segment:
            return
        index = self.segments
        path = self.out_dir / SEGMENTS_DIR / segment_name(index)
        await run_blocking(_store, path, self.out_dir / STREAM_NAME, segment)
        self.segments += 1
        start = self._cut_at
        self._cut_at = self.writer.frames
        self.timings.mark("first_frame")
        await self.emit(
            "segment",
            {
                "index": index,
                "name": segment_name(index),
                "start": round(start / self.fps, 3),
                "duration": round((self._cut_at - start) / self.fps, 3),
                "bytes": len(segment),
                "mime": self.writer.mime,
                "final": self.writer.closed,
            },
        )


def _store(path: Path, stream: Path, data: bytes) -> None:
    path.write_bytes(data)
    with stream.open("ab") as fh:
        fh.write(data)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
