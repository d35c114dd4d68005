"""A Python live-mode client: aiortc plays recorded speech as its microphone and records what comes back.

Used by the live benchmark and the tests. It speaks like a browser (an SDP offer with the microphone,
a receive-only video section and a data channel named ``events``), keeps every event with the time it
arrived, and keeps the received voice (loudness per 20 ms) and, while asked to, the received frames
(downscaled). Times are ``time.perf_counter`` on this machine. Each received packet is also placed on
the server's own clock through the RTCP sender reports (the mapping browsers use for lip sync).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtcpSrPacket

from avatar.server.live.receiving import prompt_audio
from avatar.types import AudioArray, FrameArray

RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms
MAX_LAG_S = 0.1  # behind its schedule by more than this, the microphone skips ahead
FRAME_S = FRAME_SAMPLES / RATE
SILENT_RMS = 10 ** (-50 / 20)  # a received 20 ms below -50 dBFS is silence
KEPT_SIZE = 256  # received frames are kept at this size (enough to find the mouth)


@dataclass
class Utterance:
    """A clip the microphone played: when its first frame went out, and where its speech lies in it."""

    speech_start: float  # seconds into the clip
    speech_end: float
    started: float | None = None  # perf_counter of its first frame
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def spoke_at(self) -> float:
        assert self.started is not None
        return self.started + self.speech_start

    @property
    def ended_at(self) -> float:
        assert self.started is not None
        return self.started + self.speech_end


def speech_span(audio: AudioArray, rate: int = RATE) -> tuple[float, float]:
    """Where the speech in a clip starts and ends (seconds): the first and last 20 ms within 30 dB of
    its loudest 20 ms."""
    frames = audio[: audio.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-30 / 20))
    step = FRAME_SAMPLES / rate
    return float(loud[0] * step), float((loud[-1] + 1) * step)


class Microphone(MediaStreamTrack):
    """48 kHz mono in 20 ms frames, in real time: the clips given to ``say``, silence in between."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[tuple[np.ndarray, Utterance]] = deque()
        self._current: tuple[np.ndarray, Utterance] | None = None
        self._at = 0
        self._start: float | None = None
        self._count = 0

    def say(self, audio: AudioArray) -> Utterance:
        """Play ``audio`` (48 kHz mono) after whatever is queued; returns its timing (filled in as it plays)."""
        start, end = speech_span(audio)
        utterance = Utterance(start, end)
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        self._queue.append((pcm, utterance))
        return utterance

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        due = self._start + self._count * FRAME_S
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > MAX_LAG_S:
            # The event loop was held up (the caller ran something long): go on from now, as a real
            # microphone would. Catching up in a burst would deliver a clip faster than it is timed.
            self._start = now - self._count * FRAME_S
        chunk = np.zeros(FRAME_SAMPLES, np.int16)
        if self._current is None and self._queue:
            self._current, self._at = self._queue.popleft(), 0
            self._current[1].started = time.perf_counter()
        if self._current is not None:
            pcm, utterance = self._current
            piece = pcm[self._at : self._at + FRAME_SAMPLES]
            chunk[: piece.size] = piece
            self._at += FRAME_SAMPLES
            if self._at >= pcm.size:
                utterance.done.set()
                self._current = None
        frame = av.AudioFrame.from_ndarray(chunk[None], format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._count * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, RATE)
        self._count += 1
        return frame


@dataclass
class SenderClock:
    """A received frame's time → the sender's wall clock, from the last RTCP sender report of a stream.

    aiortc gives decoded frames the RTP timestamp less the stream's first one (its receiver's
    timestamp mapper), so that first timestamp is read back from the mapper to compare with reports."""

    clock_rate: int
    receiver: Any = None
    ntp: float | None = None
    rtp: int = 0

    def at(self, pts: int) -> float | None:
        mapper = getattr(self.receiver, "_RTCRtpReceiver__timestamp_mapper", None)
        origin = getattr(mapper, "_origin", None)
        if self.ntp is None or origin is None:
            return None
        delta = (pts + origin - self.rtp + 2**31) % 2**32 - 2**31  # RTP timestamps wrap at 32 bits
        return self.ntp + delta / self.clock_rate


@dataclass
class Heard:
    """One received 20 ms of voice."""

    arrived: float
    sent: float | None  # on the server's clock (sender report), when known
    pts: int  # RTP timestamp
    rms: float
    pcm: np.ndarray  # mono float32, 48 kHz


@dataclass
class Seen:
    """One received video frame."""

    arrived: float
    sent: float | None
    pts: int
    image: FrameArray | None  # RGB, KEPT_SIZE square, while recording


class LiveClient:
    """One live session, seen from the client's side. ``async with LiveClient(url) as client``."""

    def __init__(self, base_url: str, *, persona: str | None = None, session_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.persona = persona
        self.session_id = session_id
        self.live_session: str | None = None
        self.mic = Microphone()
        self.pc = RTCPeerConnection()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.heard: list[Heard] = []
        self.seen: list[Seen] = []
        self.recording = False  # keep received frames' pictures
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._clocks: dict[str, SenderClock] = {"audio": SenderClock(RATE), "video": SenderClock(90_000)}

    async def __aenter__(self) -> LiveClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------ connection

    async def connect(self, timeout: float = 30.0) -> None:
        pc = self.pc
        pc.addTransceiver(self.mic, direction="sendrecv")
        pc.addTransceiver("video", direction="recvonly")
        channel = pc.createDataChannel("events")
        channel.on("message", self._on_event)
        self.channel = channel

        @pc.on("track")
        def track(remote: MediaStreamTrack) -> None:
            consume = self._consume_audio if remote.kind == "audio" else self._consume_video
            self._tasks.append(asyncio.ensure_future(consume(remote)))

        await pc.setLocalDescription(await pc.createOffer())
        body: dict[str, str] = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if self.persona:
            body["persona"] = self.persona
        if self.session_id:
            body["session_id"] = self.session_id
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(f"{self.base_url}/api/v1/live", json=body)
        if response.status_code != 200:
            raise LiveRefused(response.status_code, response.json(), response.headers.get("Retry-After"))
        answer = response.json()
        self.session_id, self.live_session = answer["session_id"], answer["live_session"]
        for transceiver in pc.getTransceivers():
            self._watch_reports(transceiver.receiver, transceiver.kind)
            if transceiver.kind == "audio":
                prompt_audio(transceiver.receiver)  # 20 ms of buffer, like a browser on a LAN (aiortc: 80)
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await self.wait_event("listening", timeout=timeout)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _watch_reports(self, receiver: Any, kind: str) -> None:
        """Keep each sender report (aiortc has no public hook for them)."""
        clock = self._clocks[kind]
        clock.receiver = receiver
        handle = receiver._handle_rtcp_packet

        async def hooked(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                ntp = packet.sender_info.ntp_timestamp
                clock.ntp = (ntp >> 32) + (ntp & 0xFFFFFFFF) / 2**32
                clock.rtp = packet.sender_info.rtp_timestamp
            await handle(packet)

        receiver._handle_rtcp_packet = hooked

    # ------------------------------------------------------------------------------ events

    def _on_event(self, raw: object) -> None:
        with contextlib.suppress(ValueError, TypeError):
            self.events.append((time.perf_counter(), json.loads(raw)))  # type: ignore[arg-type]
            self._changed.set()

    def say_text(self, text: str) -> None:
        self.channel.send(json.dumps({"type": "say", "text": text}))

    def after(self, since: float, name: str) -> list[dict[str, Any]]:
        return [event for at, event in self.events if at >= since and event.get("event") == name]

    async def wait_event(
        self,
        name: str,
        *,
        since: float = 0.0,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = 60.0,
    ) -> tuple[float, dict[str, Any]]:
        """The first event ``name`` (arrived at or after ``since``, matching ``where``), waiting for it."""
        deadline = time.perf_counter() + timeout
        while True:
            for at, event in self.events:
                if at >= since and event.get("event") == name and where(event):
                    return at, event
            left = deadline - time.perf_counter()
            if left <= 0:
                seen = [e.get("event") for _, e in self.events[-12:]]
                raise TimeoutError(f"no {name!r} event within {timeout} s (last events: {seen})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    # ------------------------------------------------------------------------------ media

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        clock = self._clocks["audio"]
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                arrived = time.perf_counter()
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1) / 32768.0  # type: ignore[union-attr]
                pcm = samples.astype(np.float32)
                rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if pcm.size else 0.0
                pts = int(frame.pts or 0)
                self.heard.append(Heard(arrived, clock.at(pts), pts, rms, pcm))

    async def _consume_video(self, track: MediaStreamTrack) -> None:
        clock = self._clocks["video"]
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                arrived = time.perf_counter()
                image = None
                if self.recording:
                    small = frame.reformat(width=KEPT_SIZE, height=KEPT_SIZE, format="rgb24")  # type: ignore[union-attr]
                    image = small.to_ndarray()
                pts = int(frame.pts or 0)
                self.seen.append(Seen(arrived, clock.at(pts), pts, image))

    # ------------------------------------------------------------------------------ measures

    def first_voice(self, since: float) -> Heard | None:
        """The first received 20 ms of voice (not silence) that arrived after ``since``."""
        return next((h for h in self.heard if h.arrived >= since and h.rms >= SILENT_RMS), None)

    def fell_silent(self, since: float, until: float) -> float | None:
        """When the received voice stopped for good after ``since``: the arrival of the first silent
        20 ms after the last voice that arrived before ``until`` (``since`` itself if there was none).
        A pause between two sentences is not a stop: voice after it, before ``until``, moves the stop."""
        last_voice = None
        for h in self.heard:
            if since <= h.arrived <= until and h.rms >= SILENT_RMS:
                last_voice = h.arrived
        if last_voice is None:
            return since
        return next((h.arrived for h in self.heard if h.arrived > last_voice and h.rms < SILENT_RMS), None)

    def frame_rate(self, start: float, end: float) -> tuple[float, float]:
        """Frames per second received between ``start`` and ``end`` and the jitter of their arrival
        (standard deviation of the gaps, seconds)."""
        times = np.array([s.arrived for s in self.seen if start <= s.arrived <= end])
        if times.size < 3:
            return 0.0, 0.0
        gaps = np.diff(times)
        return float((times.size - 1) / (times[-1] - times[0])), float(np.std(gaps))

    def received_rate(self, start: float, end: float) -> float:
        """Frames a second received between ``start`` and ``end``, counted over that whole window: a
        stretch in which no frame came (a held frame not sent) counts, even at the window's end."""
        if end <= start:
            return 0.0
        return sum(1 for s in self.seen if start <= s.arrived < end) / (end - start)


class LiveRefused(Exception):
    """The server answered the offer with an error."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: str | None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.retry_after = retry_after
