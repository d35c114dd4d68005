"""A live session's turn-taking on its own: ``LiveSession`` built directly, with doubles of our own
protocols for the four models (a scripted recogniser, the scripted chat, a tone for a voice, a still
face) and of the turn detector, driven by scripted ``Heard`` events. The real pipeline, turn runner,
model queue, playout and encoders run; the timeline's clock is a counter, so a turn takes milliseconds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from scripted import ScriptedChat

from avatar.config import PROJECT_ROOT
from avatar.errors import NoSpeechError
from avatar.health import ModelHealth
from avatar.personas import PersonaStore
from avatar.pipeline import Pipeline
from avatar.pipeline.queue import ModelQueue
from avatar.pipeline.sessions import MemorySessionStore
from avatar.pipeline.stages import AnimateStage, RespondStage, SpeakStage, TranscribeStage
from avatar.pipeline.threads import ModelCalls
from avatar.server.live.codecs import silence_packet
from avatar.server.live.idle import IdleLoop
from avatar.server.live.listener import Heard, ListenOptions
from avatar.server.live.playout import Playout
from avatar.server.live.session import LiveSession, SessionOptions
from avatar.server.live.taking import EarlyReply
from avatar.server.live.turn import ReplySettings
from avatar.server.metrics import Metrics
from avatar.server.turns import Turns
from avatar.types import ChatMessage, FrameArray, Transcript, VoiceSpec

FPS = 25
SIZE = 64
ANSWER = "Jupiter is my favourite. It is huge."


class ScriptedAsr:
    """Hears the words it is told for an utterance of a given length (one text per sample count)."""

    name = "scripted-asr"

    def __init__(self, words: dict[int, str]) -> None:
        self.words = words
        self.heard: list[int] = []

    def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        self.heard.append(audio.size)
        text = self.words.get(audio.size)
        if text is None:
            raise NoSpeechError("No speech was heard in the audio.")
        return Transcript(text=text, language="en")

    def warmup(self) -> None: ...

    def close(self) -> None: ...


class Tone:
    """A voice: 0.1 s of a quiet tone per word (after ``delay_s``, as a slow model would take)."""

    name = "tone"
    sample_rate = 24_000

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def prepare_voice(self, voice: VoiceSpec) -> None: ...

    def synthesize(self, text: str, voice: VoiceSpec) -> np.ndarray:
        time.sleep(self.delay_s)
        n = int(0.1 * self.sample_rate) * len(text.split())
        return (0.2 * np.sin(np.arange(n) * 2 * np.pi * 220 / self.sample_rate)).astype(np.float32)

    def warmup(self) -> None: ...

    def close(self) -> None: ...


class StillFace:
    name = "still"
    fps = FPS

    def prepare(self, image: FrameArray) -> object:
        return object()

    def render(self, face: object, audio: np.ndarray, sample_rate: int, *, start_frame: int = 0) -> FrameArray:
        frames = max(1, round(audio.size / sample_rate * FPS))
        return np.full((frames, SIZE, SIZE, 3), 128, np.uint8)

    def render_chunks(
        self, face: object, audio: np.ndarray, sample_rate: int, chunk_frames: int = 25, *, start_frame: int = 0
    ) -> Iterator[FrameArray]:
        frames = self.render(face, audio, sample_rate)
        for first in range(0, len(frames), chunk_frames):
            yield frames[first : first + chunk_frames]

    def warmup(self) -> None: ...

    def close(self) -> None: ...


class Detector:
    """The turn detector as the session reads it (its audio input is not used here)."""

    def __init__(self) -> None:
        self.in_speech = False
        self.version = 0
        self.windows = 0
        self.face_speaking = False


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def utterance(samples: int) -> np.ndarray:
    """Something said (a murmur loud enough to be more than silence), ``samples`` long."""
    return (0.1 * np.sin(np.arange(samples) * 2 * np.pi * 150 / 16_000)).astype(np.float32)


class Scene:
    """A session with its doubles, and a player that takes the timeline's slots as fast as it can."""

    def __init__(self, words: dict[int, str], *, timeout_s: float = 60.0, voice_delay_s: float = 0.0) -> None:
        self.asr = ScriptedAsr(words)
        self.chat = ScriptedChat(ANSWER)
        self.pipeline = Pipeline(
            transcribe=TranscribeStage(self.asr),
            respond=RespondStage(self.chat),
            speak=SpeakStage(Tone(voice_delay_s)),
            animate=AnimateStage(StillFace()),
            personas=PersonaStore(PROJECT_ROOT / "assets" / "personas"),
            sessions=MemorySessionStore(ttl_seconds=600, max_turns=6),
        )
        self.queue = ModelQueue(limit=4)
        self.metrics = Metrics()
        self.turns = Turns(self.queue, self.metrics, lambda: self.pipeline, timeout_s=timeout_s)
        self.detector = Detector()
        self.clock = Clock()
        self.closed: list[LiveSession] = []
        self.playing = True  # whether the player takes the timeline's slots

    async def __aenter__(self) -> Scene:
        idle = IdleLoop(forward=4, keyframe_every=2)
        idle.packets = [b"idle"] * idle.cycle
        idle.ready.set()
        self.playout = Playout(FPS, idle, silence_packet(), clock=self.clock)
        persona = self.pipeline.personas.get(self.pipeline.default_persona)
        self.session = LiveSession(
            id="s" * 32,
            pc=RTCPeerConnection(),
            persona=persona,
            session_id="c" * 32,
            playout=self.playout,
            pipeline=lambda: self.pipeline,
            admitted=self.queue.run,
            turns=self.turns,
            on_close=self.closed.append,
            options=SessionOptions(
                listen=ListenOptions(end_silence_ms=200),
                reply=ReplySettings(size=SIZE, kbps=200, buffer_seconds=0.5),
                idle_timeout_s=60,
            ),
            detector=self.detector,  # type: ignore[arg-type]
        )
        self.player = asyncio.ensure_future(self._play())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close("the test is over")
        self.player.cancel()

    async def _play(self) -> None:
        n = 0
        while True:
            self.clock.now += 1 / FPS
            if self.playing:
                self.playout.slot(n)
                n += 1
            await asyncio.sleep(0.002)

    def heard(self, kind: str, version: int = 0, samples: int = 0) -> None:
        """The detector noticed ``kind`` (and keeps the state it implies)."""
        if kind in ("speech_started", "resumed"):
            self.detector.in_speech = True
        if kind == "turn_ended":
            self.detector.in_speech = False
        self.detector.version = version or self.detector.version
        audio = utterance(samples) if samples else None
        self.session._on_heard(Heard(kind, 0.0, audio, version), time.perf_counter())  # type: ignore[arg-type]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        sent = [json.loads(raw) for raw in self.session.events.sent]
        return [e for e in sent if name is None or e["event"] == name]

    async def early_reply_made(self, timeout: float = 10.0) -> EarlyReply:
        """The early reply begun at the pause, once its text is written (its events wait)."""
        async with asyncio.timeout(timeout):
            while True:
                early = self.session._early
                if early is not None and any(event == "reply" for event, _ in early.pending):
                    return early
                await asyncio.sleep(0.005)

    async def until(self, name: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.events(name)) < count:
                await asyncio.sleep(0.005)
        return self.events(name)


def _metric(metrics: Metrics, line: str) -> bool:
    return line in metrics.exposition().decode()


def test_an_early_reply_begun_at_the_pause_is_released_when_the_turn_ends_and_counted() -> None:
    async def scenario() -> Scene:
        async with Scene({8000: "What is your favourite planet?"}) as scene:
            scene.heard("speech_started", 1)
            scene.heard("paused", 1, 8000)
            early = await scene.early_reply_made()  # made at the pause, and held back
            assert scene.events("transcript") == [] and scene.events("reply") == []
            assert not early.released
            scene.heard("turn_ended", 1, 8000)
            await scene.until("timings")
        return scene

    scene = asyncio.run(scenario())
    names = [e["event"] for e in scene.events()]
    assert names.index("transcript") < names.index("reply") < names.index("speaking") < names.index("timings")
    assert scene.events("transcript")[0]["text"] == "What is your favourite planet?"
    assert scene.asr.heard == [8000]  # recognised once, at the pause: the end of the turn took that
    timings = scene.events("timings")[0]
    assert timings["turn"] == 1 and timings["reply"] == ANSWER
    # The live turn is in the latency metrics, like an HTTP turn: its stages and its first frame.
    assert _metric(scene.metrics, 'avatar_stage_seconds_count{stage="llm"} 1.0')
    assert _metric(scene.metrics, "avatar_first_frame_seconds_count 1.0")
    assert scene.closed == [scene.session]


def test_the_user_going_on_after_the_pause_drops_the_early_reply_unheard() -> None:
    async def scenario() -> Scene:
        words = {8000: "What is your", 16000: "What is your favourite planet?"}
        async with Scene(words) as scene:
            scene.heard("speech_started", 1)
            scene.heard("paused", 1, 8000)
            await asyncio.sleep(0.05)  # the early reply is begun
            scene.heard("resumed", 2)
            scene.heard("paused", 2, 16000)
            scene.heard("turn_ended", 2, 16000)
            await scene.until("timings")
            await asyncio.sleep(0.05)
        return scene

    scene = asyncio.run(scenario())
    assert [e["text"] for e in scene.events("transcript")] == ["What is your favourite planet?"]
    assert [e["turn"] for e in scene.events("timings")] == [1]  # the dropped one never had a number
    assert scene.chat.seen[-1].content.endswith("What is your favourite planet?")


def test_a_reply_stopped_before_a_word_of_it_was_heard_is_answered_with_what_follows() -> None:
    async def scenario() -> Scene:
        together = 8000 + 3200 + 8000  # the first utterance, a short gap, the second
        async with Scene({8000: "What is your", together: "What is your favourite planet?"}) as scene:
            scene.playing = False  # the connection stalls: nothing of the reply is heard
            scene.heard("speech_started", 1)
            scene.heard("turn_ended", 1, 8000)
            await scene.until("transcript")
            scene.heard("speech_started", 2)  # the user goes on before any of it played
            scene.heard("turn_ended", 2, 8000)
            scene.playing = True
            await scene.until("timings", 2)
        return scene

    scene = asyncio.run(scenario())
    transcripts = scene.events("transcript")
    assert [(e["text"], e["merged"]) for e in transcripts] == [
        ("What is your", False),
        ("What is your favourite planet?", True),  # the client replaces the line it showed
    ]
    assert [e["heard_seconds"] for e in scene.events("interrupted")] == [0.0]
    assert scene.chat.seen[-1].content.endswith("What is your favourite planet?")


def test_a_live_turn_past_the_deadline_is_stopped_and_says_so() -> None:
    async def scenario() -> Scene:
        async with Scene({}, timeout_s=0.1, voice_delay_s=0.3) as scene:
            scene.session._on_message(json.dumps({"type": "say", "text": "Tell me a long story."}))
            await scene.until("error")
            await scene.until("listening", 1)
        return scene

    scene = asyncio.run(scenario())
    error = scene.events("error")[0]
    assert error["code"] == "turn_timeout" and error["turn"] == 1
    assert not _metric(scene.metrics, "avatar_first_frame_seconds_count 1.0")  # a stopped turn is not counted
    assert scene.queue.depth() == (0, 0)


def test_typed_text_stops_the_reply_playing_and_is_answered() -> None:
    async def scenario() -> Scene:
        async with Scene({}) as scene:
            scene.session._on_message(json.dumps({"type": "say", "text": "Hello there."}))
            await scene.until("speaking")
            scene.session._on_message(json.dumps({"type": "say", "text": "And then?"}))
            await scene.until("timings", 2)
        return scene

    scene = asyncio.run(scenario())
    interrupted = scene.events("interrupted")
    assert [e["turn"] for e in interrupted] == [1]
    assert [e["turn"] for e in scene.events("timings")] == [1, 2]
    assert scene.chat.seen[-1].content == "And then?"


def test_a_newer_turn_of_the_conversation_on_another_transport_stops_the_live_reply() -> None:
    async def scenario() -> tuple[Scene, list[Any]]:
        async with Scene({}) as scene:
            scene.playing = False  # nothing of the live reply is heard
            scene.session._on_message(json.dumps({"type": "say", "text": "Tell me about Mars."}))
            while scene.session.turn is None or scene.session.turn.playback is None:
                await asyncio.sleep(0.005)

            async def typed_elsewhere() -> str:
                return "answered over HTTP"

            # An HTTP turn of the same conversation, through the same turn runner: barge-in by session.
            assert await scene.turns.run("http-turn", scene.session.session_id, typed_elsewhere) == "answered over HTTP"
            scene.playing = True
            await scene.until("timings")
            session = await scene.pipeline.sessions.get(scene.session.session_id, scene.session.persona.name)
        return scene, session.history

    scene, history = asyncio.run(scenario())
    assert [e["turn"] for e in scene.events("timings")] == [1]  # the live turn ended, stopped ...
    assert history == []  # ... and nothing of it was heard, so nothing of it is kept
    assert scene.queue.depth() == (0, 0)


class TokenizingChat(ScriptedChat):
    """The scripted chat reading its prompt the way a model's tokenizer does: as UTF-8 (a lone
    surrogate fails there, as ``UnicodeEncodeError``, the way it fails in llama.cpp)."""

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        for message in messages:
            message.content.encode("utf-8")
        return super().stream(messages, max_new_tokens=max_new_tokens)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("\ud800 hello", "lone surrogate (U+D800)"),
        ("hello\x1b[2J", "control character U+001B"),
        ("   ", "empty"),
        ("a" * 1001, "the limit is 1,000"),
    ],
)
def test_typed_text_the_http_routes_refuse_is_refused_before_the_reply_playing_is_stopped(text: str, says: str) -> None:
    health = ModelHealth("llm")

    async def scenario() -> tuple[Scene, list[ChatMessage]]:
        async with Scene({}) as scene:
            scene.chat = TokenizingChat(ANSWER)
            scene.pipeline.respond.llm = scene.chat
            scene.pipeline.respond.calls = ModelCalls(health)
            scene.session._on_message(json.dumps({"type": "say", "text": "Hello there."}))
            await scene.until("speaking")
            scene.session._on_message(json.dumps({"type": "say", "text": text}))
            error = (await scene.until("error"))[0]
            assert error["code"] == "invalid_request" and says in error["message"], error
            scene.session._on_message(json.dumps({"type": "say", "text": "And then?"}))
            await scene.until("timings", 2)
            session = await scene.pipeline.sessions.get(scene.session.session_id, scene.session.persona.name)
        return scene, session.history

    scene, history = asyncio.run(scenario())
    assert [e["turn"] for e in scene.events("timings")] == [1, 2]  # the refused text made no turn ...
    assert [e["turn"] for e in scene.events("interrupted")] == [1]  # ... and stopped nothing; the next did
    assert [m.content for m in history if m.role == "user"] == ["Hello there.", "And then?"]
    assert scene.chat.seen[-1].content == "And then?"
    assert health.calls > 0 and health.failures == 0
