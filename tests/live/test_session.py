"""A live session's turn-taking on its own: ``LiveSession`` built directly, with doubles of our own
protocols for the four models (a scripted recogniser, the scripted chat, a tone for a voice, a still
face) and of the turn detector, driven by scripted ``Heard`` events. The real pipeline, turn runner,
model queue, playout and encoders run; the timeline's clock is a counter, so a turn takes milliseconds."""

from __future__ import annotations

import asyncio
import dataclasses
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
from avatar.server.live.finishing import FinishOptions, TurnEndModel
from avatar.server.live.idle import IdleLoop
from avatar.server.live.listener import Heard, ListenOptions
from avatar.server.live.playout import Playout
from avatar.server.live.session import BACKCHANNEL_MAX_S, HUSH_MAX_S, LiveSession, SessionOptions
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


class GlancingAsr(ScriptedAsr):
    """Also has Whisper's quick first reading (``glance``): the text and whether it is sure of it, for
    an utterance of a given length; its full transcripts take ``slow_s`` (the usual 30 s window)."""

    def __init__(self, words: dict[int, str], glances: dict[int, tuple[str, bool]], slow_s: float) -> None:
        super().__init__(words)
        self.glances = glances
        self.slow_s = slow_s

    def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        time.sleep(self.slow_s)
        return super().transcribe(audio, language=language)

    def glance(self, audio: np.ndarray, *, language: str | None = None) -> tuple[str, bool] | None:
        return self.glances.get(audio.size)


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

    def render(
        self, face: object, audio: np.ndarray, sample_rate: int, *, start_frame: int = 0, phones: object = None
    ) -> FrameArray:
        frames = max(1, round(audio.size / sample_rate * FPS))
        return np.full((frames, SIZE, SIZE, 3), 128, np.uint8)

    def render_chunks(
        self,
        face: object,
        audio: np.ndarray,
        sample_rate: int,
        chunk_frames: int = 25,
        *,
        start_frame: int = 0,
        phones: object = None,
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
        self.talking = False  # in speech and not in a pause of it
        self.version = 0
        self.windows = 0
        self.face_speaking = False
        self.waits: list[tuple[int, int]] = []  # (version, ms) the session set for a pause

    def reset(self) -> None:
        self.in_speech = False
        self.resets = getattr(self, "resets", 0) + 1

    def end_after(self, version: int, silence_ms: int) -> bool:
        self.waits.append((version, silence_ms))
        return self.in_speech and version == self.version


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

    def __init__(
        self,
        words: dict[int, str],
        *,
        timeout_s: float = 60.0,
        voice_delay_s: float = 0.0,
        finishing: FinishOptions | None = None,
        turn_end: TurnEndModel | None = None,
        answer: str = ANSWER,
        glances: dict[int, tuple[str, bool]] | None = None,
        slow_asr_s: float = 0.0,
    ) -> None:
        self.finishing = finishing
        self.turn_end = turn_end
        self.asr = ScriptedAsr(words) if glances is None else GlancingAsr(words, glances, slow_asr_s)
        self.chat = ScriptedChat(answer)
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
                finishing=self.finishing,
            ),
            detector=self.detector,  # type: ignore[arg-type]
            turn_end=self.turn_end,
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
            self.detector.in_speech = self.detector.talking = True
        if kind in ("paused", "turn_ended"):
            self.detector.talking = False
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


def _turn_model(probability: float) -> TurnEndModel:
    """The turn-end model, answering ``probability`` for any audio (its own tests run the real one)."""
    model = TurnEndModel("smart-turn", lambda: lambda audio: probability)
    model.load()
    return model


FINISHING = FinishOptions(finished_ms=200, unsure_ms=700, unfinished_ms=1500, fallback_ms=400)


def test_a_pause_judged_finished_ends_the_turn_after_a_short_silence_and_says_why() -> None:
    async def scenario() -> Scene:
        words = {8000: "What is your favourite planet?"}
        async with Scene(words, finishing=FINISHING, turn_end=_turn_model(0.98)) as scene:
            scene.heard("speech_started", 1)
            scene.heard("paused", 1, 8000)
            await scene.early_reply_made()
            assert scene.detector.waits == [(1, 200)]  # judged from the model and the words
            scene.heard("turn_ended", 1, 8000)
            await scene.until("timings")
        return scene

    scene = asyncio.run(scenario())
    (end,) = scene.events("end_of_turn")
    assert end["why"] == "finished" and end["wait_ms"] == 200 and end["probability"] == 0.98
    assert end["model_ms"] is not None and end["cue"] is None
    names = [e["event"] for e in scene.events()]
    assert names.index("end_of_turn") < names.index("transcript") < names.index("speaking")


def test_a_pause_after_an_unfinished_phrase_waits_longer_and_the_reply_begun_is_dropped_when_the_user_goes_on() -> None:
    async def scenario() -> Scene:
        together = "So what was it like, when you first saw the Earth?"
        words = {8000: "So what was it like, when you", 16000: together}
        async with Scene(words, finishing=FINISHING, turn_end=_turn_model(0.05)) as scene:
            scene.heard("speech_started", 1)
            scene.heard("paused", 1, 8000)
            await scene.early_reply_made()  # the early reply is still begun at the pause
            assert scene.detector.waits == [(1, 1500)]
            scene.heard("resumed", 2)
            scene.session.turn_end = _turn_model(0.97)
            scene.heard("paused", 2, 16000)
            while len(scene.detector.waits) < 2:
                await asyncio.sleep(0.005)
            scene.heard("turn_ended", 2, 16000)
            await scene.until("timings")
        return scene

    scene = asyncio.run(scenario())
    assert scene.detector.waits == [(1, 1500), (2, 200)]
    assert [e["text"] for e in scene.events("transcript")] == ["So what was it like, when you first saw the Earth?"]
    assert [e["why"] for e in scene.events("end_of_turn")] == ["finished"]
    assert [e["turn"] for e in scene.events("timings")] == [1]


def test_without_the_turn_end_model_the_silence_rule_ends_the_turn() -> None:
    def missing() -> object:
        raise FileNotFoundError("smart-turn-v3.2-cpu.onnx")

    broken = TurnEndModel("smart-turn", missing)  # type: ignore[arg-type]
    broken.load()

    async def scenario() -> Scene:
        async with Scene({8000: "Tell me about the"}, finishing=FINISHING, turn_end=broken) as scene:
            scene.heard("speech_started", 1)
            scene.heard("paused", 1, 8000)
            assert scene.detector.waits == [(1, 400)]  # at once: nothing to wait for
            scene.heard("turn_ended", 1, 8000)
            await scene.until("timings")
        return scene

    scene = asyncio.run(scenario())
    assert [(e["why"], e["wait_ms"]) for e in scene.events("end_of_turn")] == [("no_model", 400)]


STORY = " ".join(["Once upon a time a rocket flew to the Moon and back again."] * 8)  # 8 s of voice


async def _speaking(scene: Scene) -> None:
    """The typed question's reply has begun to play."""
    scene.session._on_message(json.dumps({"type": "say", "text": "Tell me a story."}))
    await scene.until("speaking")


async def _history(scene: Scene) -> list[Any]:
    session = await scene.pipeline.sessions.get(scene.session.session_id, scene.session.persona.name)
    return session.history


@pytest.mark.parametrize(("heard", "words"), [("a backchannel", "Mm-hmm."), ("a cough", None)])
def test_a_backchannel_or_a_noise_over_the_reply_pauses_it_and_it_resumes_where_it_stopped(
    heard: str, words: str | None
) -> None:
    async def scenario() -> tuple[Scene, list[Any], int]:
        async with Scene({4000: words} if words else {}, answer=STORY) as scene:
            await _speaking(scene)
            scene.detector.face_speaking = True
            scene.heard("speech_started", 1)
            playback = scene.session.turn.playback if scene.session.turn else None
            assert playback is not None and playback.paused  # silent at once, as for an interruption
            played = playback.played
            await asyncio.sleep(0.05)
            assert playback.played == played and playback.paused_slots > 0  # held where it was
            scene.heard("paused", 1, 4000)
            await scene.until("resumed")
            assert not playback.paused
            scene.detector.in_speech = False
            await scene.until("timings")
            return scene, await _history(scene), playback.played

    scene, history, played = asyncio.run(scenario())
    assert scene.events("interrupted") == [] and scene.events("transcript") == []  # no turn of its own
    (resumed,) = scene.events("resumed")
    assert resumed["turn"] == 1 and resumed["heard"] == (words or "")
    assert resumed["after_sound_s"] < 0.5
    assert played == scene.events("timings")[0]["reply_seconds"] * FPS  # every slot of it was played
    spoken = scene.events("timings")[0]["reply"]
    assert [m.role for m in history] == ["user", "assistant"] and history[1].content == spoken  # heard in full
    assert [e["turn"] for e in scene.events("timings")] == [1]


SLOW_S = 1.5  # a full transcript of a lone "mm-hm" over Whisper's 30 s window, on a busy machine


@pytest.mark.parametrize(
    ("glanced", "resumes_at_once"),
    [
        (("Right.", False), True),  # a backchannel, though Whisper would read it again
        (("M'hama.", False), True),  # an "mm-hm" Whisper cannot spell: a hum
        (("Yeah.", True), True),
        (("", True), True),  # no words: a noise
        (("Emma.", True), False),  # said clearly: a word, so the transcript decides
        (("Wait.", False), False),  # unsure, but not a hum
    ],
)
def test_a_quick_reading_of_the_sound_resumes_the_reply_without_waiting_for_its_transcript(
    glanced: tuple[str, bool], resumes_at_once: bool
) -> None:
    async def scenario() -> tuple[Scene, float]:
        glances = {4000: glanced}
        async with Scene({4000: "Mm-hmm."}, answer=STORY, glances=glances, slow_asr_s=SLOW_S) as scene:
            await _speaking(scene)
            scene.heard("speech_started", 1)
            started = time.perf_counter()
            scene.heard("paused", 1, 4000)
            await scene.until("resumed")  # the transcript ("Mm-hmm.") resumes it in any case
            return scene, time.perf_counter() - started

    scene, waited = asyncio.run(scenario())
    (resumed,) = scene.events("resumed")
    assert scene.events("interrupted") == []
    if resumes_at_once:
        assert waited < SLOW_S / 2 and resumed["heard"] == glanced[0]
    else:
        assert waited >= SLOW_S and resumed["heard"] == "Mm-hmm."


def test_a_quick_reading_does_not_resume_a_reply_the_user_has_gone_on_talking_over() -> None:
    async def scenario() -> Scene:
        glances = {2000: ("Yeah.", True)}
        words = {2000: "Yeah,", 6000: "Yeah, but what about Mars?"}
        async with Scene(words, answer=STORY, glances=glances, slow_asr_s=0.3) as scene:
            await _speaking(scene)
            scene.heard("speech_started", 1)
            scene.heard("paused", 1, 2000)
            scene.heard("resumed", 2)  # before the quick reading has come back
            await asyncio.sleep(0.5)
            assert scene.events("resumed") == []
            scene.heard("paused", 2, 6000)
            scene.heard("turn_ended", 2, 6000)
            await scene.until("interrupted")
        return scene

    scene = asyncio.run(scenario())
    assert scene.events("resumed") == []


def test_words_over_the_paused_reply_stop_it_for_good_and_are_answered() -> None:
    async def scenario() -> tuple[Scene, list[Any]]:
        async with Scene({4000: "Wait, tell me about Mars instead."}, answer=STORY) as scene:
            await _speaking(scene)
            scene.heard("speech_started", 1)
            scene.heard("paused", 1, 4000)
            while scene.session._hush is not None and not scene.session._hush.words:
                await asyncio.sleep(0.005)  # words at the pause: perhaps half a "mm-hm", so not yet stopped
            assert scene.events("interrupted") == []
            scene.heard("turn_ended", 1, 4000)
            await scene.until("interrupted")
            await scene.until("timings", 2)
            return scene, await _history(scene)

    scene, history = asyncio.run(scenario())
    assert scene.events("resumed") == []
    assert [e["turn"] for e in scene.events("interrupted")] == [1]
    assert [e["text"] for e in scene.events("transcript")] == ["Wait, tell me about Mars instead."]
    assert len(history[1].content) < len(scene.events("timings")[0]["reply"])  # only what was heard
    assert history[2].content == "Wait, tell me about Mars instead."


def test_a_backchannel_in_two_parts_resumes_the_reply_at_its_second_pause() -> None:
    async def scenario() -> Scene:
        async with Scene({2000: "Let's...", 4000: "Mm-hmm."}, answer=STORY) as scene:
            await _speaking(scene)
            scene.heard("speech_started", 1)
            scene.heard("paused", 1, 2000)  # "Mm" alone, which Whisper hears as a word
            while scene.session._hush is not None and not scene.session._hush.words:
                await asyncio.sleep(0.005)
            scene.heard("resumed", 2)
            scene.heard("paused", 2, 4000)  # "Mm ... hm"
            await scene.until("resumed")
        return scene

    scene = asyncio.run(scenario())
    assert scene.events("interrupted") == [] and scene.events("resumed")[0]["heard"] == "Mm-hmm."


def test_a_slow_transcript_of_a_short_sound_does_not_stop_the_paused_reply() -> None:
    async def scenario() -> Scene:
        async with Scene({4000: "Right."}, answer=STORY) as scene:
            await _speaking(scene)
            scene.heard("speech_started", 1)
            scene.session._speculate = _late(scene.session._speculate, BACKCHANNEL_MAX_S + 0.1)  # type: ignore[method-assign]
            scene.heard("paused", 1, 4000)  # the sound is over; its words take longer than 1 s to come
            await asyncio.sleep(BACKCHANNEL_MAX_S + 0.05)
            scene.session._check_hush()  # the pause, waiting to be understood, is not more speech
            await scene.until("resumed")
        return scene

    scene = asyncio.run(scenario())
    assert scene.events("interrupted") == []


def test_a_reply_paused_for_a_sound_whose_words_never_come_goes_on() -> None:
    async def scenario() -> Scene:
        async with Scene({4000: "Right."}, answer=STORY) as scene:
            await _speaking(scene)
            scene.heard("speech_started", 1)
            scene.session._speculate = _late(scene.session._speculate, 60)  # type: ignore[method-assign]
            scene.heard("paused", 1, 4000)
            scene.session._check_hush()
            assert scene.events("resumed") == []
            await asyncio.sleep(HUSH_MAX_S + 0.05)
            scene.session._check_hush()
            await scene.until("resumed")
            scene.detector.in_speech = False
            await scene.until("timings")
        return scene

    scene = asyncio.run(scenario())
    assert scene.events("interrupted") == [] and scene.events("resumed")[0]["heard"] == ""


def _late(speculate: Any, delay_s: float) -> Any:
    async def later(*args: Any) -> Any:
        await asyncio.sleep(delay_s)
        return await speculate(*args)

    return later


def test_speech_over_the_paused_reply_longer_than_a_backchannel_stops_it() -> None:
    async def scenario() -> Scene:
        async with Scene({}, answer=STORY) as scene:
            await _speaking(scene)
            scene.heard("speech_started", 1)
            scene.session._check_hush()
            assert scene.events("interrupted") == []  # not yet: it may be a "yeah"
            await asyncio.sleep(BACKCHANNEL_MAX_S + 0.05)
            scene.session._check_hush()
            await scene.until("interrupted")
        return scene

    scene = asyncio.run(scenario())
    assert scene.events("resumed") == []


def test_with_backchannels_off_any_speech_over_the_reply_stops_it() -> None:
    async def scenario() -> Scene:
        async with Scene({4000: "Mm-hmm."}, answer=STORY) as scene:
            scene.session.options = dataclasses.replace(scene.session.options, backchannels=False)
            await _speaking(scene)
            scene.heard("speech_started", 1)
            await scene.until("interrupted")
        return scene

    scene = asyncio.run(scenario())
    assert scene.events("user_speech_started")[-1]["interrupted"] is True


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
