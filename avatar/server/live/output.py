"""The ``ReplyOutput`` of a live session: each chunk of frames the Animate stage draws, with its audio,
is encoded at once (VP8 and Opus, in a worker thread) and queued on the session's timeline, where it
plays when its time comes. Encoded media is small (about 0.1 MB a second), so the stages may run ahead
of playback by ``buffer_seconds`` and let go of the models early for other users; stopping the reply
drops whatever is queued, so it falls silent at once however far ahead the stages were.

The voice's silence before the reply's first sound is not played (the embedded voice begins every
clip with 0.4 s of it): after the user stops, every moment of silence is waiting."""

from __future__ import annotations

import numpy as np

from avatar.pipeline.threads import run_blocking
from avatar.server.live.codecs import Encoded, VideoEncoder, VoiceEncoder
from avatar.server.live.holding import REJOIN_EVERY_S
from avatar.server.live.playout import Playout, ReplyPlayback, Slot
from avatar.types import AudioArray, FrameArray

SILENT_DBFS = -50.0  # a frame whose audio is quieter than this is silence
LEAD_IN_FRAMES = 0  # silent frames kept before the first sound (one was 40 ms more to wait for the voice)
MAX_SKIP_S = 1.0  # a reply that opens with a longer silence keeps the rest of it


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
        self.encoded = 0  # frames encoded (a keyframe every ``REJOIN_EVERY_S``: a held reply rejoins there)
        self._rejoin_every = max(1, round(REJOIN_EVERY_S * self.fps))
        self.skipped = 0  # silent frames at the start, not played
        self._sounded = False
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
        if not self._sounded:
            frames, audio = self._skip_silence(frames, audio)
        for frame in frames:
            self._video.append(self.video.encode(frame, keyframe=self.encoded % self._rejoin_every == 0))
            self.encoded += 1
        self._voice += self.voice.encode(audio)
        return self._pair()

    def _skip_silence(self, frames: FrameArray, audio: AudioArray) -> tuple[FrameArray, AudioArray]:
        """The chunk from its first sound on (less ``LEAD_IN_FRAMES``); all of it once past ``MAX_SKIP_S``."""
        per_frame = audio.size // max(1, len(frames))
        loud = np.flatnonzero(_frame_dbfs(audio, per_frame, len(frames)) >= SILENT_DBFS)
        room = max(0, round(MAX_SKIP_S * self.fps) - self.skipped)
        skip = min(len(frames), room) if loud.size == 0 else min(max(0, int(loud[0]) - LEAD_IN_FRAMES), room)
        if loud.size or skip < len(frames):
            self._sounded = True
        self.skipped += skip
        self.playback.skipped = self.skipped
        return frames[skip:], audio[skip * per_frame :]

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
            slots.append(Slot(frame.data, tuple(v.data for v in voice), self.playback.id, keyframe=frame.keyframe))
        return slots


def _frame_dbfs(audio: AudioArray, per_frame: int, frames: int) -> np.ndarray:
    """The loudness (dBFS RMS) of each frame's audio."""
    if per_frame == 0:
        return np.full(frames, -np.inf)
    pieces = audio[: per_frame * frames].reshape(frames, per_frame).astype(np.float64)
    rms = np.sqrt(np.mean(np.square(pieces), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))
