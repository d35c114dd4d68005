"""A reply's video made as it is drawn: one fragmented MP4, handed out in playable segments.

Frames and audio are encoded once, as they arrive, into a fragmented MP4 (every packet its own
``moof``+``mdat``; the ``moov`` up front is empty). ``cut()`` hands out whatever whole boxes have been
written since the last cut, so a client appends segment after segment to one Media Source Extensions
``SourceBuffer`` (segment 0 starts with the initialisation boxes) and the picture plays gap-free while
later sentences are still being written. When the reply is complete the same encoded packets are
copied, without re-encoding, into an ordinary MP4 with its index up front: the seekable file that is
downloaded and kept.

Two formats, because no single one plays everywhere out of the box: H.264 + AAC (every browser that has
an H.264 decoder, and every player and phone; Debian's Firefox only with FFmpeg's libavcodec
installed) and VP9 + Opus (Chromium and Firefox as they come). Both live in MP4, so the page asks Media
Source Extensions which it can play and requests that one.

Every function here is blocking; callers in the event loop run them in a worker thread.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.error
import numpy as np

from avatar.errors import InvalidRequestError
from avatar.media import atomic_path
from avatar.types import AudioArray, FrameArray

KEYFRAME_SECONDS = 2  # a keyframe every 2 s: the finished MP4 seeks to within 2 s without decoding much
AUDIO_BLOCK = 1024
AUDIO_RATE = 48_000


@dataclass(frozen=True)
class VideoFormat:
    """A video codec and an audio codec that play together in MP4, and how to encode them for streaming
    (no look-ahead and no reordered frames, so each frame's packet comes out as soon as it goes in)."""

    name: str
    video_codec: str
    video_options: dict[str, str]
    audio_codec: str
    audio_bit_rate: int
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def mime(self, video: av.video.stream.VideoStream | None) -> str:
        """The MIME type with the RFC 6381 codec strings Media Source Extensions asks about."""
        if self.name == "h264":
            data = bytes(video.codec_context.extradata or b"") if video is not None else b""
            # avcC: version, profile, compatibility, level; x264 writes it as the stream's extradata.
            avc = f"avc1.{data[1]:02x}{data[2]:02x}{data[3]:02x}" if len(data) > 3 and data[0] == 1 else "avc1.64001f"
            return f'video/mp4; codecs="{avc},mp4a.40.2"'
        return 'video/mp4; codecs="vp09.00.21.08,opus"'


FORMATS: dict[str, VideoFormat] = {
    "h264": VideoFormat(
        name="h264",
        video_codec="libx264",
        video_options={"preset": "veryfast", "tune": "zerolatency", "crf": "23"},
        audio_codec="aac",
        audio_bit_rate=96_000,
        description="H.264 + AAC",
    ),
    "vp9": VideoFormat(
        name="vp9",
        video_codec="libvpx-vp9",
        video_options={
            "deadline": "realtime",
            "cpu-used": "8",
            "lag-in-frames": "0",
            "row-mt": "1",
            "crf": "32",
            "b": "0",
        },
        audio_codec="libopus",
        audio_bit_rate=64_000,
        description="VP9 + Opus",
    ),
}
DEFAULT_FORMAT = "h264"


def video_format(name: str | None) -> VideoFormat:
    """The named format (``h264`` when None); InvalidRequestError (422) for another name."""
    chosen = FORMATS.get(name or DEFAULT_FORMAT)
    if chosen is None:
        raise InvalidRequestError(f"Unknown video format {name!r}; choose one of: {', '.join(FORMATS)}.")
    return chosen


class _Sink(io.RawIOBase):
    """Where the muxer writes: bytes collect here until ``SegmentWriter.cut`` takes them."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def whole_boxes(data: bytes | bytearray) -> int:
    """How many leading bytes of ``data`` are complete top-level MP4 boxes (the muxer's writes may end
    inside a box; a segment must not)."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1:  # a 64-bit size follows the type
            if pos + 16 > len(data):
                break
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8 or pos + size > len(data):
            break
        pos += size
    return pos


class SegmentWriter:
    """Encodes a reply's frames and audio once, into a fragmented MP4 handed out in segments.

    Feed matching lengths of video and audio (each clip's audio padded to whole frames) and call
    ``cut()`` whenever a piece is complete; ``finish()`` flushes the encoders and returns the rest.
    Each stream is timed by its own count of frames or samples, so they stay in step.
    """

    def __init__(self, sample_rate: int, fps: int, fmt: VideoFormat = FORMATS[DEFAULT_FORMAT]) -> None:
        self.sample_rate = sample_rate
        self.fps = fps
        self.format = fmt
        self._sink = _Sink()
        self._out = av.open(
            self._sink,
            mode="w",
            format="mp4",
            # One fragment per packet, written as soon as the next packet shows its duration; with no
            # edit list in fragments, the muxer delays the video by the audio encoder's priming instead.
            options={"movflags": "empty_moov+default_base_moof", "frag_duration": "1"},
        )
        self._video: av.video.stream.VideoStream | None = None
        # 48 kHz whatever the voice's rate: AAC's priming (1024 samples, which delays the first frame's
        # end by as much) lasts 21 ms there, and Opus runs at 48 kHz anyway.
        audio = self._out.add_stream(fmt.audio_codec, rate=AUDIO_RATE, layout="mono")
        self._audio = cast(av.audio.stream.AudioStream, audio)
        self._audio.bit_rate = fmt.audio_bit_rate
        self._samples = 0
        self.frames = 0
        self.closed = False

    @property
    def mime(self) -> str:
        return self.format.mime(self._video)

    @property
    def seconds(self) -> float:
        """Media time written so far (video frames)."""
        return self.frames / self.fps

    def write(self, frames: FrameArray, audio: AudioArray) -> None:
        """Append frames, shape (n, h, w, 3) or (h, w, 3), RGB uint8, and the audio that plays with them.

        Video and audio of the same span go in together: the muxer interleaves the two streams by time
        and holds packets back until the other stream has caught up.
        """
        batch = frames[None] if frames.ndim == 3 else frames
        self._video_stream(batch)
        self._write_audio(audio)
        self._write_video(batch)

    def _video_stream(self, batch: FrameArray) -> av.video.stream.VideoStream:
        # Added before anything is muxed: the file's header is written with the first packet.
        if self._video is None:
            options = {**self.format.video_options, "g": str(KEYFRAME_SECONDS * self.fps)}
            video = self._out.add_stream(self.format.video_codec, rate=Fraction(self.fps), options=options)
            self._video = cast(av.video.stream.VideoStream, video)
            self._video.height, self._video.width = int(batch.shape[1]), int(batch.shape[2])
            self._video.pix_fmt = "yuv420p"
        return self._video

    def _write_video(self, batch: FrameArray) -> None:
        video = self._video_stream(batch)
        for image in batch:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            frame.time_base = Fraction(1, self.fps)
            for packet in video.encode(frame):
                packet.duration = int(1 / (self.fps * packet.time_base)) if packet.time_base else 0
                self._out.mux(packet)
            self.frames += 1

    def _write_audio(self, audio: AudioArray) -> None:
        for start in range(0, audio.size, AUDIO_BLOCK):
            piece = np.ascontiguousarray(audio[start : start + AUDIO_BLOCK], dtype=np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self._samples
            frame.time_base = Fraction(1, self.sample_rate)
            self._samples += piece.shape[1]
            self._out.mux(self._audio.encode(frame))

    def cut(self) -> bytes:
        """The whole boxes written since the last cut (empty when there are none yet)."""
        end = whole_boxes(self._sink.data)
        segment = bytes(self._sink.data[:end])
        del self._sink.data[:end]
        return segment

    def finish(self) -> bytes:
        """Flush both encoders, end the file, and return everything not yet cut."""
        if self._video is None:
            raise ValueError("a video needs at least one frame")
        self._out.mux(self._video.encode(None))
        self._out.mux(self._audio.encode(None))
        self._out.close()
        self.closed = True
        rest = bytes(self._sink.data)
        self._sink.data.clear()
        return rest

    def abort(self) -> None:
        """Stop without finishing (nothing is kept: the caller owns any segments already cut)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._out.close()
        except (av.error.FFmpegError, ValueError):
            pass


def _sample_at(frame: int, sample_rate: int, fps: int) -> int:
    return round(frame * sample_rate / fps)


def remux_to_mp4(fragmented: Path, target: Path) -> Path:
    """Copy a fragmented MP4's packets, without re-encoding, into an ordinary MP4 with its index up
    front (seekable anywhere, playable by any player); ``target`` appears only when complete."""
    with atomic_path(target) as tmp, av.open(os.fspath(fragmented)) as source:
        with av.open(os.fspath(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            streams = {s.index: out.add_stream_from_template(s) for s in (*source.streams.video, *source.streams.audio)}
            for packet in source.demux(*source.streams.video, *source.streams.audio):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return target


def write_mp4(
    path: Path,
    frames: Iterable[FrameArray],
    audio: AudioArray,
    sample_rate: int,
    fps: int,
    fmt: VideoFormat = FORMATS[DEFAULT_FORMAT],
) -> Path:
    """Frames and mono audio of the same length into an ordinary MP4, by the same encoder the
    streamed turns use. ``frames`` may be an (n, h, w, 3) array or an iterable of frames or chunks."""
    writer = SegmentWriter(sample_rate, fps, fmt)
    fragmented = path.with_name(f".{path.name}.fragmented")
    try:
        with fragmented.open("wb") as fh:
            start = 0
            for chunk in frames:
                batch = chunk[None] if chunk.ndim == 3 else chunk
                stop = start + len(batch)
                writer.write(batch, audio[_sample_at(start, sample_rate, fps) : _sample_at(stop, sample_rate, fps)])
                fh.write(writer.cut())
                start = stop
            fh.write(writer.finish())
        return remux_to_mp4(fragmented, path)
    finally:
        writer.abort()
        fragmented.unlink(missing_ok=True)
