"""The ``ReplyOutput`` of a live session: each chunk of frames the Animate stage draws, with its audio,
is encoded at once (VP8 and Opus, in a worker thread) and queued on the session's timeline, where it
plays when its time comes. Encoded media is small (about 0.1 MB a second), so the stages may run ahead
of playback by ``buffer_seconds`` and let go of the models early for other users; stopping the reply
drops whatever is queued, so it falls silent at once however far ahead the stages were."""

from __future__ import annotations

from avatar.pipeline.threads import run_blocking
from avatar.server.live.codecs import Encoded, VideoEncoder, VoiceEncoder
from avatar.server.live.playout import Playout, ReplyPlayback, Slot
from avatar.types import AudioArray, FrameArray


class LiveOutput:
    def __init__(
        self,
        playout: Playout,
        playback: ReplyPlayback,
        *,
        sample_rate: int,
        size: int,
        kbps: int,
        buffer_seconds: float,
    ) -> None:
        self.playout = playout
        self.playback = playback
        self.fps = playout.fps
        self.buffer_seconds = buffer_seconds
        self.video = VideoEncoder(size, self.fps, kbps)
        self.voice = VoiceEncoder(sample_rate)
        self.per_slot = len(playout.silence_slot)
        self.frames = 0  # frames written
        self._video: list[Encoded] = []
        self._voice: list[Encoded] = []

    @property
    def delivered_seconds(self) -> float:
        """Seconds of the reply handed to the connection (queued or played)."""
        return self.frames / self.fps

    async def write(self, frames: FrameArray, audio: AudioArray) -> None:
        slots = await run_blocking(self._encode, frames, audio)
        self.frames += len(frames)
        self.playout.push(self.playback, slots)
        while self.playout.reply is self.playback and self.playout.ahead_seconds > self.buffer_seconds:
            await self.playout.progress()

    async def finish(self, resume_index: int) -> None:
        """The reply is complete; after it the idle loop goes on at ``resume_index``."""
        slots = await run_blocking(self._flush)
        self.playout.push(self.playback, slots)
        self.playout.finish(self.playback, resume_index)

    def _encode(self, frames: FrameArray, audio: AudioArray) -> list[Slot]:
        for frame in frames:
            self._video.append(self.video.encode(frame, keyframe=self.frames == 0 and not self._video))
        self._voice += self.voice.encode(audio)
        return self._pair()

    def _flush(self) -> list[Slot]:
        self._voice += self.voice.flush()
        missing = len(self._video) * self.per_slot - len(self._voice)
        self._voice += [Encoded(self.playout.silence)] * max(0, missing)
        return self._pair()

    def _pair(self) -> list[Slot]:
        """Whole slots: a frame and its voice packets (a frame whose voice is not encoded yet waits)."""
        slots = []
        while self._video and len(self._voice) >= self.per_slot:
            voice, self._voice = self._voice[: self.per_slot], self._voice[self.per_slot :]
            frame = self._video.pop(0)
            slots.append(Slot(frame.data, tuple(v.data for v in voice), self.playback.id))
        return slots
