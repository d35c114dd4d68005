"""The live connection's encoders: the face as VP8, the voice as Opus, both made before they are sent.

aiortc can encode frames itself as it sends them, but then every frame of the idle face would be drawn
and encoded for every session, all the time. Here media is encoded ahead, into packets (aiortc sends a
packet a track returns as it is): the idle face once per persona (``idle.py``), a reply as it is drawn.
Sending then costs next to nothing, and a frame is never late because an encoder was busy.
VP8 is the codec every WebRTC browser must support. Encoders come from PyAV's FFmpeg (libvpx, libopus).
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass

import av
import numpy as np

from avatar.types import AudioArray, FrameArray

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000  # Opus's RTP clock, whatever the rate of the audio inside
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what libopus takes without resampling
PACKET_S = 0.020  # Opus frame: two per video frame at 25 fps
VOICE_BITRATE = 48_000


@dataclass(frozen=True)
class Encoded:
    """One encoded frame (video) or 20 ms (audio), ready for aiortc to packetise."""

    data: bytes
    keyframe: bool = False


class VideoEncoder:
    """RGB frames → VP8 frames, in real-time mode (one packet per frame, no look-ahead)."""

    def __init__(self, size: int, fps: int, kbps: int) -> None:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width = codec.height = size
        codec.pix_fmt = "yuv420p"
        codec.time_base = fractions.Fraction(1, fps)
        codec.framerate = fractions.Fraction(fps, 1)
        codec.bit_rate = kbps * 1000
        codec.gop_size = 10 * fps  # keyframes come when asked for (a reply's start, the idle loop's joins)
        codec.thread_count = 1  # libvpx's automatic thread count costs 15x the CPU on small frames here
        codec.options = {
            "deadline": "realtime",
            "cpu-used": "8",
            "lag-in-frames": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
            "overshoot-pct": "15",
        }
        codec.open()
        self._codec = codec
        self._count = 0

    def encode(self, frame: FrameArray, keyframe: bool = False) -> Encoded:
        """One (size, size, 3) RGB frame; ``keyframe`` forces a frame that decodes on its own."""
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format="yuv420p")
        return self.encode_yuv(picture, keyframe)

    def encode_yuv(self, picture: av.VideoFrame, keyframe: bool = False) -> Encoded:
        """One yuv420p frame of the encoder's size (a decoded one: what a client's decoder shows)."""
        picture.pts = self._count
        if keyframe:
            picture.pict_type = av.video.frame.PictureType.I
        self._count += 1
        packets = self._codec.encode(picture)
        data = b"".join(bytes(p) for p in packets)
        return Encoded(data, keyframe or any(p.is_keyframe for p in packets))


class VoiceEncoder:
    """Mono float audio → 20 ms Opus packets. Audio arrives in pieces of any length; a piece's samples
    that do not fill a packet wait for the next piece (``flush`` pads the last one with silence)."""

    def __init__(self, sample_rate: int) -> None:
        self.input_rate = sample_rate
        self.rate = sample_rate if sample_rate in OPUS_RATES else AUDIO_CLOCK
        self._resampler = (
            None if self.rate == sample_rate else av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        )
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = self.rate
        codec.format = "s16"
        codec.layout = "mono"
        codec.bit_rate = VOICE_BITRATE
        codec.time_base = fractions.Fraction(1, self.rate)
        codec.options = {"application": "voip", "frame_duration": "20"}
        codec.open()
        self._codec = codec
        self.packet_samples = round(self.rate * PACKET_S)
        self._fifo = np.zeros(0, np.int16)
        self._pts = 0

    def encode(self, audio: AudioArray) -> list[Encoded]:
        pcm = _to_s16(audio)
        if self._resampler is not None:
            frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
            frame.sample_rate = self.input_rate
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)] or [pcm[:0]])
        self._fifo = np.concatenate([self._fifo, pcm])
        whole = self._fifo.size // self.packet_samples * self.packet_samples
        out = [self._packet(self._fifo[i : i + self.packet_samples]) for i in range(0, whole, self.packet_samples)]
        self._fifo = self._fifo[whole:]
        return out

    def flush(self) -> list[Encoded]:
        """The last samples, padded with silence to a whole packet."""
        if self._resampler is not None:
            rest = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(None)]
            self._fifo = np.concatenate([self._fifo, *rest])
        if self._fifo.size == 0:
            return []
        padded = np.zeros(self.packet_samples, np.int16)
        padded[: self._fifo.size] = self._fifo[: self.packet_samples]
        self._fifo = np.zeros(0, np.int16)
        return [self._packet(padded)]

    def _packet(self, pcm: np.ndarray) -> Encoded:
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += pcm.size
        return Encoded(b"".join(bytes(p) for p in self._codec.encode(frame)))


def silence_packet() -> bytes:
    """20 ms of silence as Opus: sent whenever the face is not speaking (the same bytes every time)."""
    encoder = VoiceEncoder(AUDIO_CLOCK)
    packets = encoder.encode(np.zeros(encoder.packet_samples, np.float32))
    return packets[0].data


def _to_s16(audio: AudioArray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
