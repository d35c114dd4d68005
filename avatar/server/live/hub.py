"""The service's live sessions: opened from a WebRTC offer, limited in number, all closed at shutdown.

The hub loads the turn-end model once (``finishing.TurnEndModel``; the silence rule ends turns while it
is not there) and keeps each persona's idle loop (``idle.py``), drawn once in the background and shared by
every session of that persona; the default persona's is drawn as soon as the models are ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from avatar.config import Settings
from avatar.errors import AvatarError, BusyError, InvalidRequestError, LiveUnavailableError
from avatar.personas import Persona
from avatar.pipeline import Pipeline
from avatar.pipeline.queue import ModelQueue
from avatar.server.error_responses import MalformedRequestError
from avatar.server.live import ice
from avatar.server.live.codecs import silence_packet
from avatar.server.live.finishing import FinishOptions, TurnEndModel
from avatar.server.live.idle import IdleLoop, build_idle_loop
from avatar.server.live.listener import ListenOptions
from avatar.server.live.playout import Playout
from avatar.server.live.receiving import prompt_audio
from avatar.server.live.session import LiveSession, SessionOptions
from avatar.server.live.turn import ReplySettings, TurnRunner
from avatar.server.security import Caller

log = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

RETRY_AFTER_S = 30  # a full house: sessions last minutes, so suggest a while
LOOPS_KEPT = 8  # personas whose idle loop is kept
BUSY_BACKOFF_S = 2.0  # drawing the idle loop waits this long when the model queue is full
KEYFRAME_EVERY_S = 1.0


@dataclass(frozen=True)
class LiveOffer:
    """A checked offer: the SDP, and whom to talk to in which conversation."""

    sdp: str
    persona: str | None = None
    session_id: str | None = None
    caller: Caller = field(default_factory=Caller)  # who sent it: its persona and session must be theirs


@dataclass(frozen=True)
class LiveParts:
    """What the live sessions use of the service, handed over by the app."""

    settings: Settings
    pipeline: Callable[[], Pipeline]  # the ready pipeline (NotReadyError while it is not)
    persona: Callable[[str | None, Caller], Persona]  # a persona by name the caller may use (default: None)
    queue: ModelQueue  # the models' admission, shared with every other transport
    turns: TurnRunner  # runs each reply like every other turn: deadline, stop, metrics
    ready: Callable[[], Awaitable[object]]  # returns once the models are ready (raises if they failed)
    count: Callable[[int], None]  # hears the number of open sessions (a gauge)


class LiveHub:
    def __init__(self, parts: LiveParts) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.sessions: dict[str, LiveSession] = {}
        self.opening = 0
        self.silence = silence_packet()
        self._loops: OrderedDict[str, IdleLoop] = OrderedDict()
        self._builds: set[asyncio.Task[None]] = set()
        self._closed = False
        ice.use_host_addresses(self.settings.host_addresses)
        self.turn_end = TurnEndModel(self.settings.live_turn_detector, self._load_turn_model)

    def _load_turn_model(self) -> Callable[[Any], float]:
        from avatar.backends.smart_turn import SmartTurn

        model = SmartTurn(self.settings.models_dir / "smart-turn")
        model.warmup()
        return model.probability

    def __len__(self) -> int:
        return len(self.sessions)

    # ------------------------------------------------------------------------------ sessions

    async def open(self, offer: LiveOffer) -> dict[str, Any]:
        """Answer ``offer`` with a new session (BusyError when ``max_live_sessions`` are open)."""
        parts, limit = self.parts, self.settings.max_live_sessions
        if limit == 0:
            raise LiveUnavailableError("Live mode is switched off on this server (AVATAR_MAX_LIVE_SESSIONS=0).")
        if 50 % self.settings.fps != 0:  # the voice goes in 20 ms packets, a whole number per frame
            raise LiveUnavailableError(
                f"Live mode needs AVATAR_FPS of 25 (or 50, 10, 5); this server runs at {self.settings.fps}."
            )
        pipeline = parts.pipeline()  # NotReadyError while the models load
        if len(self.sessions) + self.opening >= limit:
            raise BusyError(
                f"All {limit} live sessions are in use (AVATAR_MAX_LIVE_SESSIONS={limit}); "
                f"retry in about {RETRY_AFTER_S} s, or use the push-to-talk mode.",
                RETRY_AFTER_S,
            )
        persona = parts.persona(offer.persona, offer.caller)
        conversation = await pipeline.sessions.get(offer.session_id, persona.name, offer.caller.key)
        self.opening += 1
        pc = RTCPeerConnection(ice.configuration(self.settings))
        try:
            return await self._answer(pc, offer, persona, conversation.id)
        except BaseException:
            await pc.close()
            raise
        finally:
            self.opening -= 1

    async def _answer(
        self, pc: RTCPeerConnection, offer: LiveOffer, persona: Persona, session_id: str
    ) -> dict[str, Any]:
        # Our transceivers first, so that the offer's sections take them and their codecs: the media
        # is encoded ahead, as Opus and VP8, so only those can be sent.
        audio = _transceiver(pc, "audio", "sendrecv", "audio/opus")
        video = _transceiver(pc, "video", "sendonly", "video/VP8")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except OperationError as exc:
            kind = "audio" if "audio" in str(exc) else "video"
            codec = "Opus" if kind == "audio" else "VP8"
            raise InvalidRequestError(
                f"The offer's {kind} section has no codec this server sends ({codec}); offer {codec}."
            ) from None
        except Exception as exc:  # noqa: BLE001 - aiortc raises many kinds for a malformed SDP
            raise InvalidSdpError(f"The SDP offer could not be read: {_reason(exc)}") from None
        if audio.mid is None or audio.receiver.track is None:
            raise InvalidRequestError(
                "The offer sends no microphone: add an audio transceiver with the microphone track (sendrecv)."
            )
        if video.mid is None:
            raise InvalidRequestError("The offer has no video section: add a video transceiver (recvonly).")
        prompt_audio(audio.receiver)
        s = self.settings
        playout = Playout(s.fps, self.idle_loop(persona), self.silence, kbps=s.live_video_kbps)
        finishing = None
        if s.live_turn_detector == "smart-turn":
            finishing = FinishOptions(
                finished_ms=s.live_finished_silence_ms,
                unsure_ms=s.live_unsure_silence_ms,
                unfinished_ms=s.live_unfinished_silence_ms,
                fallback_ms=s.live_end_silence_ms,
                threshold=s.live_turn_threshold,
            )
        session = LiveSession(
            id=secrets.token_hex(16),
            pc=pc,
            persona=persona,
            session_id=session_id,
            owner=offer.caller.key,
            playout=playout,
            pipeline=self.parts.pipeline,
            admitted=self.parts.queue.run,
            turns=self.parts.turns,
            on_close=self.forget,
            options=SessionOptions(
                listen=ListenOptions(
                    threshold=s.live_vad_threshold,
                    # smart-turn: each pause is judged, and until it is the longest wait holds
                    end_silence_ms=s.live_unfinished_silence_ms if finishing else s.live_end_silence_ms,
                    barge_in_threshold=s.live_barge_in_threshold,
                    barge_in_ms=s.live_barge_in_ms,
                    partial_seconds=s.live_partial_seconds,
                    max_utterance_seconds=s.live_max_utterance_seconds,
                ),
                reply=ReplySettings(size=s.video_size, kbps=s.live_video_kbps, buffer_seconds=s.live_buffer_seconds),
                idle_timeout_s=s.live_idle_timeout_seconds,
                early_reply=s.live_early_reply,
                finishing=finishing,
                backchannels=s.live_backchannels,
            ),
            turn_end=self.turn_end,
        )
        audio.sender.replaceTrack(session.voice)
        video.sender.replaceTrack(session.video)
        pc.on("datachannel", session.events.attach)
        await pc.setLocalDescription(await pc.createAnswer())
        if self._closed:
            raise LiveUnavailableError("The server is shutting down.")
        self.sessions[session.id] = session
        self.parts.count(len(self.sessions))
        session.start(audio.receiver.track)
        log.info("live session opened", live_session=session.id, persona=persona.name, open=len(self.sessions))
        return {
            "sdp": pc.localDescription.sdp,
            "type": "answer",
            "session_id": session_id,
            "live_session": session.id,
        }

    def forget(self, session: LiveSession) -> None:
        self.sessions.pop(session.id, None)
        self.parts.count(len(self.sessions))

    async def close(self) -> None:
        """Close every session (at shutdown) and stop drawing idle loops."""
        self._closed = True
        for task in self._builds:
            task.cancel()
        sessions = list(self.sessions.values())
        if sessions:
            await asyncio.gather(*(s.close("the server is shutting down") for s in sessions), return_exceptions=True)
        if self._builds:
            await asyncio.wait(self._builds)

    # ------------------------------------------------------------------------------ idle loops

    def idle_loop(self, persona: Persona) -> IdleLoop:
        """The persona's idle loop; drawn in the background the first time it is asked for."""
        key = f"{persona.name}:{persona.image_path}"
        loop = self._loops.get(key)
        if loop is not None and loop.failed is None:
            self._loops.move_to_end(key)
            return loop
        s = self.settings
        loop = IdleLoop(
            forward=max(2, round(s.live_idle_loop_seconds * s.fps)), keyframe_every=round(KEYFRAME_EVERY_S * s.fps)
        )
        self._loops[key] = loop
        while len(self._loops) > LOOPS_KEPT:
            self._loops.popitem(last=False)
        task = asyncio.ensure_future(self._draw(loop, persona))
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)
        return loop

    async def prepare(self) -> None:
        """Draw the default persona's idle loop once the models are ready (run in the background)."""
        await asyncio.to_thread(self.turn_end.load)  # small (~0.3 s): the sessions use silence until then
        with contextlib.suppress(AvatarError):
            await self.parts.ready()
            if self.settings.max_live_sessions > 0:
                await self.idle_loop(self.parts.persona(None, Caller())).ready.wait()

    async def _draw(self, loop: IdleLoop, persona: Persona) -> None:
        pipeline = self.parts.pipeline()
        s, queue = self.settings, self.parts.queue

        async def model_work(fn: Callable[[], T]) -> T:
            # Only while nobody waits for the models: drawn between requests, never ahead of them.
            while True:
                await queue.idle.wait()
                try:
                    return await queue.run(lambda: pipeline.animate.calls(fn))
                except BusyError:
                    await asyncio.sleep(BUSY_BACKOFF_S)

        try:
            face = await model_work(lambda: pipeline.animate.prepare_path(persona.image_path))
            await build_idle_loop(
                loop,
                pipeline.animate.animator,
                face,
                size=s.video_size,
                fps=s.fps,
                kbps=s.live_video_kbps,
                model_work=model_work,
            )
            log.info(
                "idle loop ready", persona=persona.name, frames=loop.cycle, kib=sum(map(len, loop.packets)) // 1024
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - sessions keep the first frame; logged for the operator
            loop.failed = loop.failed or f"{type(exc).__name__}: {exc}"
            log.error("idle loop failed", persona=persona.name, error=loop.failed)


class InvalidSdpError(MalformedRequestError):
    code = "invalid_sdp"


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or "it is not well-formed"
    return text[:200]


def _transceiver(pc: RTCPeerConnection, kind: str, direction: str, mime: str) -> RTCRtpTransceiver:
    """A transceiver of ``kind`` that sends only ``mime`` (and its retransmissions)."""
    transceiver = pc.addTransceiver(kind, direction=direction)
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    transceiver.setCodecPreferences(
        [c for c in capabilities if c.mimeType.lower() == mime.lower()]
        + [c for c in capabilities if c.mimeType.lower().endswith("/rtx")]
    )
    return transceiver
