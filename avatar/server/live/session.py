"""One live conversation: a peer connection, the user's microphone in, the face's voice and video out.

The session listens all the time (``TurnDetector`` on the microphone, resampled to 16 kHz). While the
user speaks, the words so far are recognised now and then (``partial`` transcripts); at the first short
pause, the whole utterance is recognised at once and its reply is begun (an *early reply*): made, but
held back, with its events, until the pause has lasted ``end_silence_ms`` and so ends the turn; if the
user goes on instead, it is dropped unheard. How long the pause must last is judged at each pause
(``finishing.py``: the turn-end model and the words so far) unless the silence rule alone is set. The
reply is made and played by ``turn.py``. The user's voice during a reply stops it (barge-in); if none
of it had been heard yet, the two utterances are taken as one (the user had only paused). A session
ends when the peer goes away, stops sending audio, or is silent for
``AVATAR_LIVE_IDLE_TIMEOUT_SECONDS``; everything it started is stopped and released.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import structlog
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from avatar.errors import AvatarError, NoSpeechError
from avatar.personas import Persona
from avatar.pipeline import Pipeline
from avatar.pipeline.pipeline import TurnRequest
from avatar.pipeline.timing import TurnTimings
from avatar.prompt import OPENING_TEXT
from avatar.server.live.events import EventChannel
from avatar.server.live.finishing import (
    FinishOptions,
    TurnEndModel,
    Verdict,
    heard_words,
    is_backchannel,
    is_vocal_sound,
    judge,
)
from avatar.server.live.listener import Heard, ListenOptions, TurnDetector
from avatar.server.live.listening import LEAD_FRAMES as LISTEN_LEAD_FRAMES
from avatar.server.live.listening import ListenFeed, ListeningFace, can_listen
from avatar.server.live.playout import Playout, ReplyPlayback
from avatar.server.live.taking import Carried, EarlyReply, Hush, Speculation, with_carry
from avatar.server.live.tracks import FaceVideoTrack, VoiceAudioTrack
from avatar.server.live.turn import (
    Admitted,
    LiveTurn,
    ReplySettings,
    TurnRunner,
    interrupt,
    latency,
    run_turn,
    turn_request,
)
from avatar.server.live.vad import WINDOW_SECONDS
from avatar.types import ASR_SAMPLE_RATE, AudioArray

log = structlog.stdlib.get_logger(__name__)

LOST_PEER_S = 4.0  # no microphone audio for this long: the peer has gone (browsers send it continuously)
CLOSE_WAIT_S = 30.0  # the longest a closing session waits for its reply's model call to return
FIRST_LEAD_FRAMES = 20  # first guess of slots between starting a reply and its first frame playing
MAX_TEXT_MESSAGE = 4000
ECHO_TAIL_S = 0.4  # after the face stops, its voice may still come back from the client this long
BACKCHANNEL_MAX_S = 1.0  # speech over a paused reply longer than this is an interruption, whatever it says
HUSH_MAX_S = 3.0  # a reply paused this long for a sound whose words never came goes on (it was no turn)


@dataclass(frozen=True)
class SessionOptions:
    listen: ListenOptions
    reply: ReplySettings
    idle_timeout_s: float
    early_reply: bool = True  # begin the reply at a pause (else only the prompt is read ahead)
    finishing: FinishOptions | None = None  # judge each pause (None: the silence rule alone)
    backchannels: bool = True  # a sound over the reply pauses it, and it resumes if it was no words

    @property
    def expected_end_ms(self) -> int:
        """The shortest pause that ends a turn: when an early reply may play at the soonest."""
        return self.finishing.finished_ms if self.finishing is not None else self.listen.end_silence_ms


class LiveSession:
    def __init__(
        self,
        *,
        id: str,
        pc: RTCPeerConnection,
        persona: Persona,
        session_id: str,
        playout: Playout,
        pipeline: Callable[[], Pipeline],
        admitted: Admitted[Any],
        turns: TurnRunner,
        on_close: Callable[[LiveSession], None],
        options: SessionOptions,
        detector: TurnDetector | None = None,
        turn_end: TurnEndModel | None = None,
        owner: str | None = None,
    ) -> None:
        """``pipeline`` gives the ready pipeline (NotReadyError while a model is not answering);
        ``admitted`` runs model work through the model queue; ``turns`` runs each reply (deadline, stop,
        metrics); ``on_close`` hears that the session has closed; ``turn_end`` is the turn-end model
        the pauses are judged with (when ``options.finishing`` is set)."""
        self.id = id
        self.pc = pc
        self.pipeline = pipeline
        self.admitted = admitted
        self.runner = turns
        self.on_close = on_close
        self.persona = persona
        self.session_id = session_id
        self.owner = owner  # the API key whose conversation it is (``Session.owner``)
        self.options = options
        self.playout = playout
        self.video = FaceVideoTrack(playout)
        self.voice = VoiceAudioTrack(playout)
        self.events = EventChannel()
        self.events.on_message = self._on_message
        self.events.on_close = lambda: self._close_soon("the client closed the connection")
        self.detector = detector or TurnDetector(options.listen)
        self.turn_end = turn_end
        self._judging: asyncio.Task[None] | None = None  # the latest pause being judged
        self._verdict: tuple[int, Verdict, float | None] | None = None  # (version, verdict, model ms)
        self._hush: Hush | None = None  # the reply paused while what the user said is not yet known
        self.turn: LiveTurn | None = None
        self.turns = 0
        self._runs = itertools.count(1)  # a dropped early reply's number is reused; its run's id is not
        self.opened = time.monotonic()
        self.last_activity = time.monotonic()
        self.lead_frames = float(FIRST_LEAD_FRAMES)
        self.skip_frames = 0.0  # silent frames a reply usually opens with (not played)
        self._turn_task: asyncio.Task[None] | None = None
        self._partial: asyncio.Task[None] | None = None
        self._speculation: Speculation | None = None  # the transcript begun at the latest pause
        self._reading_ahead: asyncio.Task[None] | None = None  # the model reading a speculative prompt
        self._early: EarlyReply | None = None  # a reply begun at the latest pause
        self._carry: Carried | None = None  # an utterance whose reply was stopped before it was heard
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._echo_until = 0.0
        self._listening: ListeningFace | None = None  # the face listening while the user speaks
        self._sure_words: tuple[int, str] | None = None  # (version, the words at its pause the recogniser was sure of)
        self.closed = asyncio.Event()
        playout.on_first_slot = self._first_slot
        playout.on_reply_done = self._reply_done

    # ------------------------------------------------------------------------------ life

    def start(self, microphone: MediaStreamTrack) -> None:
        self._spawn(self._listen(microphone), "listen")
        self._spawn(self._watch(), "watch")

        @self.pc.on("connectionstatechange")
        def changed() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self._close_soon(f"the connection is {self.pc.connectionState}")

        self.events.send("listening", session_id=self.session_id, live_session=self.id)
        self._reading_ahead = self._spawn(self._read_ahead(OPENING_TEXT), "read-prompt")

    def _close_soon(self, reason: str) -> None:
        if not self._closing:
            self._spawn(self.close(reason), "close")

    async def close(self, reason: str) -> None:
        """Stop everything the session started and release the connection (idempotent)."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        log.info("live session closing", live_session=self.id, reason=reason, turns=self.turns)
        with contextlib.suppress(Exception):
            self.events.send("closed", reason=reason)
        if self.turn is not None:
            interrupt(self.turn, self.playout, "the live session closed")
        current = asyncio.current_task()
        running = [task for task in self._tasks if task is not current and not task.done()]
        for task in running:
            task.cancel()  # a reply's stages stop at their next await; a model call in a thread finishes
        if running:
            await asyncio.wait(running, timeout=CLOSE_WAIT_S)
        self.video.stop()
        self.voice.stop()
        await self.pc.close()
        self.on_close(self)
        self.closed.set()
        log.info("live session closed", live_session=self.id, seconds=round(time.monotonic() - self.opened, 1))

    def _spawn(self, work: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        task.set_name(f"live-{self.id[:8]}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("live session task failed", task=task.get_name(), exc_info=task.exception())
            self._close_soon("an internal error")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            quiet = time.monotonic() - self.last_activity
            if self.turn is None and not self.detector.in_speech and quiet > self.options.idle_timeout_s:
                message = f"Nobody spoke for {round(quiet)} s, so the live session was closed. Start it again."
                self.events.send("error", code="idle_timeout", message=message)
                self._close_soon("idle timeout")
                return

    # ------------------------------------------------------------------------------ hearing

    async def _listen(self, microphone: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=ASR_SAMPLE_RATE)
        while True:
            try:
                async with asyncio.timeout(LOST_PEER_S):  # not wait_for: it can swallow a cancellation
                    frame = await microphone.recv()
            except TimeoutError:
                self._close_soon(f"no audio from the client for {LOST_PEER_S:.0f} s")
                return
            except MediaStreamError:
                self._close_soon("the client's microphone track ended")
                return
            arrived = time.perf_counter()
            pcm = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]  # type: ignore[arg-type]
            if not pcm:
                continue
            self.detector.face_speaking = self.playout.speaking or time.monotonic() < self._echo_until
            for heard in self.detector.feed(np.concatenate(pcm).astype(np.float32)):
                self._on_heard(heard, arrived)
            self._check_hush()

    def _stream_to_clock(self, stream_seconds: float, arrived: float) -> float:
        """The ``perf_counter`` time at which the microphone stream was at ``stream_seconds``."""
        return arrived - (self.detector.windows * WINDOW_SECONDS - stream_seconds)

    def _on_heard(self, heard: Heard, arrived: float) -> None:
        """What the detector heard, decided by one small step per kind of event."""
        if heard.kind in ("resumed", "speech_started", "paused"):
            self._drop_early()  # the utterance it answered has grown (a new pause begins another)
        self._listen_face(heard, arrived)
        if heard.kind == "speech_started":
            self._speech_started()
        elif heard.audio is not None and heard.kind == "partial":
            self._partial_heard(heard.audio)
        elif heard.audio is not None and heard.kind == "paused":
            self._paused(heard.audio, heard.version, self._stream_to_clock(heard.speech_end, arrived))
        elif heard.audio is not None and heard.kind == "turn_ended":
            self._turn_ended(heard.audio, heard.version, self._stream_to_clock(heard.speech_end, arrived))

    def _listen_face(self, heard: Heard, arrived: float) -> None:
        """The listening face follows the user's turn: it begins at their first sound (when no reply
        plays), nods at each pause, and eases out when their turn ends."""
        face = self._listening
        if face is not None and (face.feed.done or face.feed.finished):
            face = self._listening = None
        if heard.kind in ("speech_started", "resumed"):
            if face is None:
                self._spawn(self._start_listening(), "listening-face")
            else:
                face.spoke()
            return
        if face is None:
            return
        if heard.kind == "paused":  # the slot playing when the pause began
            ago = time.perf_counter() - self._stream_to_clock(heard.speech_end, arrived)
            face.paused(face.seconds_at(self.playout.now_slot - ago * self.playout.fps))
        elif heard.kind == "turn_ended":
            face.turn_over(face.seconds_at(self.playout.now_slot))

    async def _start_listening(self) -> None:
        """Draw the face listening (``listening.py``) in the idle loop's place until the user's turn is over."""
        if self.playout.speaking or self.playout.listening is not None or not self.playout.idle.ready.is_set():
            return  # a reply plays (it pauses or stops itself), or the face listens already
        try:
            pipeline = self.pipeline()
            animate = pipeline.animate
            if not can_listen(animate.animator):
                return
            face = await animate.face_for(self.persona.image_path)
        except AvatarError:
            return  # not ready: the idle loop plays on
        if self.playout.speaking or self.playout.listening is not None:
            return
        first = self.playout.now_slot + LISTEN_LEAD_FRAMES
        feed = ListenFeed(first, self.playout.predicted_position(LISTEN_LEAD_FRAMES))
        listening = ListeningFace(
            feed,
            animate.animator,
            face,
            self.playout.idle,
            size=self.options.reply.size,
            kbps=self.options.reply.kbps,
            fps=self.playout.fps,
            begun=-LISTEN_LEAD_FRAMES / self.playout.fps,
            now_slot=lambda: self.playout.now_slot,
            reply_pending=lambda: self.playout.reply is not None and self.playout.reply.first_slot is None,
            draw_work=animate.calls,
        )
        self._listening = listening
        self.playout.listening = feed
        try:
            await listening.run()
        except Exception:  # a bug: the face goes back to its idle loop (at a keyframe), the session goes on
            log.exception("the live listening face failed", live_session=self.id)
        finally:
            if self._listening is listening:
                self._listening = None

    def _speech_started(self) -> None:
        """The user speaks: a reply playing pauses (or stops: barge-in); one not begun yet waits for the rest."""
        self.last_activity = time.monotonic()
        self._verdict = None
        if self._hush_reply():
            self.events.send("user_speech_started", interrupted=False, paused=True)
            return
        stopped = self._interrupt("the user spoke")
        if self.turn is None and self._turn_task is not None and not self._turn_task.done():
            self._turn_task.cancel()  # a turn not yet answered: what the user says now continues it
        self.events.send("user_speech_started", interrupted=stopped is not None)

    # ------------------------------------------------------------------------------ sounds over the reply

    def _hush_reply(self) -> bool:
        """Pause the reply playing (its frame held, silent) until what the user said is known; False
        when there is none to pause (or a sound over the reply should simply stop it)."""
        turn = self.turn
        playback = turn.playback if turn is not None else None
        if not self.options.backchannels or turn is None or playback is None or self._hush is not None:
            return False
        if self.playout.reply is not playback or not self.playout.speaking:
            return False
        playback.paused = True
        self._hush = Hush(turn, time.perf_counter())
        log.info("live reply paused", live_session=self.id, turn=turn.number)
        return True

    def _check_hush(self) -> None:
        """Speech over the paused reply that goes on too long for a backchannel stops it, and so do
        words heard in it once that long has passed; its pause, waiting to be understood, does not. A
        sound whose words have not come after ``HUSH_MAX_S`` leaves the reply to go on."""
        hush = self._hush
        if hush is None:
            return
        if not hush.fits(self.turn):
            self._hush = None
        elif (self.detector.talking or hush.words) and time.perf_counter() - hush.at > BACKCHANNEL_MAX_S:
            self._stop_hushed(hush)
        elif time.perf_counter() - hush.at > HUSH_MAX_S and hush.pending_end is None:
            self._resume(hush, "", hush.at)  # the recogniser is late (a busy machine): do not stay silent

    async def _settle(
        self, hush: Hush, version: int, transcript: asyncio.Task[str | None], ended: float, audio: AudioArray
    ) -> None:
        """At the pause after the sound: resume the reply if it was no words or a backchannel. A quick
        first reading decides at once when it shows one (or, unsure, a hum); else the transcript does."""
        glanced = await self._glance(audio)
        if glanced is not None and self._hush is hush and hush.fits(self.turn):
            seen, sure = glanced
            went_on = hush.pending_end is None and self.detector.version != version
            if not went_on and (is_backchannel(seen) or (not sure and is_vocal_sound(seen))):
                self._resume(hush, seen, ended)
                return
        await asyncio.wait([transcript])
        text = None if transcript.cancelled() or transcript.exception() is not None else transcript.result()
        if self._hush is not hush or not hush.fits(self.turn):
            return
        if hush.pending_end is None and self.detector.version != version:
            return  # the user went on: the next pause settles it (or its length does)
        if is_backchannel(text):
            self._resume(hush, text or "", ended)
        elif hush.pending_end is not None:
            self._stop_hushed(hush)  # the user's turn is over, and it was words
        else:  # words so far: perhaps the first half of a "mm-hm"; the next pause, or its length, decides
            hush.words = True

    async def _glance(self, audio: AudioArray) -> tuple[str, bool] | None:
        """The recogniser's quick first reading of a sound over the paused reply (``glance``), if it has one."""
        try:
            return await self.pipeline().transcribe.glance(audio, self.persona.language)
        except Exception:  # only a shortcut: the transcript begun at the same pause decides
            log.warning("a quick reading of a sound over the reply failed", live_session=self.id, exc_info=True)
            return None

    def _resume(self, hush: Hush, text: str, ended: float) -> None:
        """The sound was no turn: the reply goes on where it stopped, and the sound is forgotten."""
        self._hush = None
        if hush.turn.playback is not None:
            hush.turn.playback.paused = False
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.running:
            speculation.task.cancel()
        if self._judging is not None and not self._judging.done():
            self._judging.cancel()
        self.detector.reset()  # not an utterance: nothing is answered, nothing carried
        after = time.perf_counter() - ended
        paused = time.perf_counter() - hush.at
        log.info("live reply resumed", live_session=self.id, turn=hush.turn.number, heard=text, after_s=round(after, 3))
        self.events.send(
            "resumed", turn=hush.turn.number, heard=text, paused_seconds=round(paused, 3), after_sound_s=round(after, 3)
        )

    def _stop_hushed(self, hush: Hush) -> None:
        """The sound was words: the paused reply stops for good, and the user's turn goes on as ever."""
        self._hush = None
        self._interrupt("the user spoke")
        if hush.pending_end is not None:
            self._turn_ended(*hush.pending_end)

    def _partial_heard(self, audio: AudioArray) -> None:
        """Now and then while the user speaks: the words so far, unless the utterance is being recognised."""
        if (self._partial is None or self._partial.done()) and not self._speculating:
            self._partial = self._spawn(self._show_partial(audio), "partial")

    def _paused(self, audio: AudioArray, version: int, ended: float) -> None:
        """A short pause: the utterance so far is recognised at once, and its reply begun (held back)."""
        if self._speculation is not None and self._speculation.running:
            self._speculation.task.cancel()  # an earlier pause's: the utterance has grown since
        if self._reading_ahead is not None and not self._reading_ahead.done():
            self._reading_ahead.cancel()
        if self._partial is not None and not self._partial.done():
            self._partial.cancel()  # the whole utterance goes first (a partial already running finishes)
        carry = self._carry
        heard = with_carry(audio, carry)  # the whole utterance: recognised, glanced at and judged alike
        speculation = self._speculate(heard, audio, version, carry, ended)
        self._speculation = Speculation(version, carry, self._spawn(speculation, "speculative"))
        if self._hush is not None:
            self._spawn(self._settle(self._hush, version, self._speculation.task, ended, heard), "settle")
        if self.options.finishing is not None:
            self._judge_pause(heard, version, self._speculation.task)

    def _judge_pause(self, audio: AudioArray, version: int, transcript: asyncio.Task[str | None]) -> None:
        """Decide how long this pause must last to end the turn (see ``finishing.py``)."""
        finishing = self.options.finishing
        assert finishing is not None
        if self._judging is not None and not self._judging.done():
            self._judging.cancel()  # an earlier pause's: the user has spoken since
        if self.turn_end is None or not self.turn_end.available:  # the silence rule decides
            self.detector.end_after(version, finishing.fallback_ms)
            self._verdict = (version, Verdict(finishing.fallback_ms, "no_model"), None)
            return
        self._judging = self._spawn(self._judge(audio, version, transcript, finishing), "judge")

    async def _judge(
        self, audio: AudioArray, version: int, transcript: asyncio.Task[str | None], finishing: FinishOptions
    ) -> None:
        """The turn-end model's P(complete) for the audio, then the words (the transcript begun at the
        same pause: waited for, never cancelled from here), then the wait they decide together."""
        assert self.turn_end is not None
        started = time.perf_counter()
        probability = await asyncio.to_thread(self.turn_end.probability, audio)
        model_ms = (time.perf_counter() - started) * 1000
        await asyncio.wait([transcript])
        text = None if transcript.cancelled() or transcript.exception() is not None else transcript.result()
        sure = self._sure_words[1] if self._sure_words is not None and self._sure_words[0] == version else None
        verdict = judge(probability, text, finishing, sure)
        if self.detector.end_after(version, verdict.wait_ms):
            self._verdict = (version, verdict, model_ms)
        log.info(
            "live pause judged",
            live_session=self.id,
            why=verdict.why,
            wait_ms=verdict.wait_ms,
            probability=None if probability is None else round(probability, 3),
            cue=verdict.cue,
            unsure_words_left_out=sure is not None and sure != text,
            model_ms=round(model_ms, 1),
            in_time=self._verdict is not None and self._verdict[0] == version,
        )

    def _turn_ended(self, audio: AudioArray, version: int, ended: float) -> None:
        """The pause has lasted: the early reply that answers this utterance plays, or its turn begins."""
        self.last_activity = time.monotonic()
        if self._hush is not None and self._hush.fits(self.turn):  # first: was it a turn at all?
            self._hush.pending_end = (audio, version, ended)
            if self._hush.words:  # its words are known: the reply stops, and this turn is taken
                self._stop_hushed(self._hush)
            return
        self._end_of_turn(version)
        early = self._early
        if early is not None and early.answers(version, self._carry):
            self._early = None
            self._release_early(early)
            return
        self._drop_early()
        self._begin_turn(self._take_turn(audio=audio, version=version, ended=ended))

    def _end_of_turn(self, version: int) -> None:
        """Tell the client what ended the turn: the judged pause (``end_of_turn``), if it was judged."""
        judged, self._verdict = self._verdict, None
        if self.options.finishing is None:
            return
        if judged is None or judged[0] != version:  # not judged in time: the longest wait passed
            self.events.send("end_of_turn", why="waited", wait_ms=self.options.listen.end_silence_ms)
            return
        _, verdict, model_ms = judged
        self.events.send(
            "end_of_turn",
            why=verdict.why,
            wait_ms=verdict.wait_ms,
            probability=None if verdict.probability is None else round(verdict.probability, 3),
            cue=verdict.cue,
            model_ms=None if model_ms is None else round(model_ms, 1),
        )

    @property
    def _speculating(self) -> bool:
        return self._speculation is not None and self._speculation.running

    async def _transcribe(self, audio: AudioArray, *, queued: bool = True, version: int | None = None) -> str:
        """The words of ``audio``. ``queued=False``: without waiting for the model queue, which the reply
        being made holds (and, paused, may hold until it resumes): a sound over the reply is short and
        must be known within a moment, and Whisper takes concurrent calls. ``version``: the utterance
        at a pause, whose words the recogniser is sure of are kept for judging it (``heard_words``)."""
        pipeline = self.pipeline()
        words = version is not None
        if not queued:
            transcript = await pipeline.transcribe(audio, self.persona.language, words=words)
        else:
            transcript = await self.admitted(lambda: pipeline.transcribe(audio, self.persona.language, words=words))
        if version is not None:
            self._sure_words = (version, heard_words(transcript))
        return str(transcript.text)

    async def _speculate(
        self, audio: AudioArray, utterance: AudioArray, version: int, carry: Carried | None, ended: float
    ) -> str | None:
        """The transcript of an utterance that may be over; None if it could not be had (asked again
        at the end of the turn, which then reports the error). With words in it, its reply is begun
        meanwhile (or, without early replies, the model reads the prompt of it)."""
        try:
            text = await self._transcribe(audio, queued=self._hush is None, version=version)
        except AvatarError:
            return None
        if not text.strip() or not self.detector.in_speech or self.detector.version != version:
            return text  # no words; the turn has ended meanwhile (and takes this); or the user went on
        if self._hush is not None:
            return text  # a sound over the paused reply: a reply to it only if it is words (then at its end)
        if self.options.early_reply:
            early = EarlyReply(version, utterance, carry, text, ended)
            self._early = early
            early.task = self._begin_turn(self._take_early_turn(early))
        else:
            self._reading_ahead = self._spawn(self._read_ahead(text), "read-ahead")
        return text

    async def _read_ahead(self, text: str) -> None:
        """The model reads the prompt a reply to ``text`` would have, now: while the user speaks (a
        partial transcript: the final prompt shares its beginning) or while the session waits to be sure
        they have finished. At the end of the turn the model then reads only what is new (with the
        embedded model 0.1-0.4 s sooner). Wasted, and harmless, when the words change."""
        with contextlib.suppress(AvatarError):
            pipeline = self.pipeline()
            request = await turn_request(pipeline, self.persona, self.session_id, text, time.perf_counter(), self.owner)
            session, user_text = request.session, request.text or ""
            await self.admitted(
                lambda: pipeline.respond.prefill(request.persona, session.history, user_text, session.visitor)
            )

    async def _show_partial(self, audio: AudioArray) -> None:
        with contextlib.suppress(AvatarError):
            text = await self._transcribe(with_carry(audio, self._carry))
            if self.detector.in_speech:  # not stale: the turn has not ended meanwhile
                self.events.send("transcript", text=text, final=False)
                if text.strip():  # the reply's prompt will begin with these words: read them now
                    await self._read_ahead(text)

    # ------------------------------------------------------------------------------ turns

    def _interrupt(self, reason: str) -> float | None:
        turn = self.turn
        if self._hush is not None and self._hush.turn is turn:
            self._hush = None  # stopped for good: nothing to resume
        if turn is None:
            return None
        if self._early is not None and self._early.turn is turn:  # not released: nobody knows of it yet
            self._drop_early()
            return None
        heard = interrupt(turn, self.playout, reason)
        if heard is not None:
            log.info("live turn interrupted", live_session=self.id, turn=turn.number, heard_s=round(heard, 3))
            self.events.send(
                "interrupted", turn=turn.number, heard_seconds=round(heard, 3), heard=turn.spoken.heard(heard)
            )
        return heard

    def _begin_turn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        previous = self._turn_task

        async def after_previous() -> None:
            try:
                if previous is not None and not previous.done():
                    await asyncio.wait([previous])
            except asyncio.CancelledError:
                if asyncio.iscoroutine(work):
                    work.close()  # stopped before it began (the session closed): it never runs
                raise
            await work

        self._turn_task = self._spawn(after_previous(), "turn")
        return self._turn_task

    async def _take_early_turn(self, early: EarlyReply) -> None:
        """An early reply: the turn of ``early.text``, its playback and events held until released."""
        send = early.sender(self.events.send)
        timings = TurnTimings(origin=early.ended)
        timings.mark("first_transcript")  # known at the pause
        try:
            request = await turn_request(
                self.pipeline(), self.persona, self.session_id, early.text, early.ended, self.owner
            )
        except AvatarError:
            early.dropped = True  # the turn's end asks again, and reports the error
            return
        self.turns += 1
        turn = LiveTurn(self.turns, request.text or "", request.session, timings)
        early.turn = turn
        self.turn = turn
        send("transcript", text=early.text, final=True, merged=early.shown)
        await self._answer(turn, request, send=send, early=early)
        if turn.interrupted is not None and not turn.heard_anything and early.released:
            # Stopped before a word of it was heard: the next utterance continues this one.
            self._carry = Carried(with_carry(early.audio, early.carry), shown=True)

    def _release_early(self, early: EarlyReply) -> None:
        """The user's turn is over: the early reply plays as soon as its first frame is ready."""
        self._carry = None  # the early reply answered it
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.running:
            speculation.task.cancel()
        early.release(self.events.send)
        log.info("live early reply released", live_session=self.id, turn=early.turn.number if early.turn else None)

    def _drop_early(self) -> None:
        """The user goes on: the early reply is stopped, unheard and unrecorded, and its events dropped."""
        early, self._early = self._early, None
        if early is None or early.released:
            return
        early.drop()
        if early.turn is not None and self.turn is early.turn:
            self.turn = None
        if early.task is not None and not early.task.done():
            early.task.cancel()
        if early.turn is not None and early.turn.number == self.turns:
            self.turns -= 1  # its number goes to the next turn (the client never heard of this one)
        log.info("live early reply dropped", live_session=self.id, version=early.version)

    async def _take_turn(
        self, *, audio: AudioArray | None = None, version: int = 0, text: str | None = None, ended: float
    ) -> None:
        """One turn: the utterance's words (or typed ``text``), then the reply, made and played."""
        timings = TurnTimings(origin=ended)
        carry, self._carry = self._carry, None
        shown = carry is not None and carry.shown
        try:
            if text is None and audio is not None:
                text = await self._understand(audio, version, carry, timings)
            request = await turn_request(self.pipeline(), self.persona, self.session_id, text or "", ended, self.owner)
        except asyncio.CancelledError:  # the user went on talking before the reply began: it continues this
            self._carry = Carried(with_carry(audio, carry), shown) if audio is not None else carry
            raise
        except AvatarError as exc:  # no words in it (a cough), or the text cannot be answered
            if not isinstance(exc, NoSpeechError):
                self.events.send("error", code=exc.code, message=exc.message)
            self._carry = carry  # still waiting for words to go with it
            self.events.send("listening", session_id=self.session_id)
            return
        self.turns += 1
        turn = LiveTurn(self.turns, request.text or "", request.session, timings)
        self.turn = turn
        await self._answer(turn, request)
        if turn.interrupted is not None and not turn.heard_anything and audio is not None:
            # Stopped before a word of it was heard: the next utterance continues this one.
            self._carry = Carried(with_carry(audio, carry), shown=True)

    async def _understand(self, audio: AudioArray, version: int, carry: Carried | None, timings: TurnTimings) -> str:
        """The utterance's words, as a final transcript event too (NoSpeechError when there are none)."""
        try:
            text = await self._final_transcript(audio, version, carry, timings)
        except NoSpeechError:
            self.events.send("transcript", text="", final=True, merged=False)
            raise
        # merged: it continues an utterance whose transcript was shown and whose reply nobody heard
        self.events.send("transcript", text=text, final=True, merged=carry is not None and carry.shown)
        return text

    async def _answer(
        self,
        turn: LiveTurn,
        request: TurnRequest,
        *,
        send: Callable[..., None] | None = None,
        early: EarlyReply | None = None,
    ) -> None:
        pipeline = self.pipeline()
        send = send or self.events.send
        begun = self.playout.now_slot
        lead = round(self.lead_frames)
        made = False
        if early is not None:  # it plays once the turn has ended (a pause after the speech), or later
            wait_s = early.ended + self.options.expected_end_ms / 1000 - time.perf_counter()
            lead = max(lead, round(wait_s * self.playout.fps))
        try:
            await run_turn(
                turn,
                turn_id=f"live-{self.id}-{next(self._runs)}",
                pipeline=pipeline,
                request=request,
                playout=self.playout,
                idle=self.playout.idle,
                turns=self.runner,
                send=send,
                options=self.options.reply,
                lead_frames=lead,
                skip_frames=round(self.skip_frames),
                held=early is not None and not early.released,
                listening=self._listening.listening() if self._listening is not None else None,
            )
            made = turn.interrupted is None  # a whole reply: its timings go into the latency metrics
        except AvatarError as exc:
            send("error", code=exc.code, message=exc.message, turn=turn.number)
        except Exception:  # a bug: the user hears about it, the session listens on
            log.exception("live turn failed", live_session=self.id, turn=turn.number)
            message = "The reply failed (a bug; the server's log has the details). Ask again."
            send("error", code="internal_error", message=message, turn=turn.number)
        finally:
            if self.turn is turn:
                self.turn = None
            self.last_activity = time.monotonic()
        playback = turn.playback
        if playback is not None and playback.first_slot is not None and early is None:
            self.lead_frames = 0.5 * self.lead_frames + 0.5 * max(0, playback.first_slot - begun)
            self.skip_frames = 0.5 * self.skip_frames + 0.5 * playback.skipped
        self._report(turn, playback, observe=made)

    async def _final_transcript(
        self, audio: AudioArray, version: int, carry: Carried | None, timings: TurnTimings
    ) -> str:
        """The utterance's transcript: the one begun at its last pause when nothing was said since."""
        speculation, self._speculation = self._speculation, None
        with timings.stage("asr"):
            text = None
            if speculation is not None and speculation.fits(version, carry):
                text = await speculation.task  # None if it failed: then again below, and its error is the answer
            elif speculation is not None:
                speculation.task.cancel()
            if text is None:
                text = await self._transcribe(with_carry(audio, carry))
        timings.mark("first_transcript")
        return text

    def _first_slot(self, playback: ReplyPlayback) -> None:
        turn = self.turn
        if turn is not None and turn.playback is playback:
            turn.timings.mark("first_sent")
            self.events.send("speaking", turn=turn.number)

    def _reply_done(self, playback: ReplyPlayback) -> None:
        if playback.first_slot is not None:
            self._echo_until = time.monotonic() + ECHO_TAIL_S

    def _report(self, turn: LiveTurn, playback: ReplyPlayback | None, *, observe: bool) -> None:
        timings, _ = turn.timings.summary(turn.timings.elapsed())
        if observe:
            self.runner.observe(latency(timings))
        extra = {
            "reply_seconds": round(playback.queued / self.playout.fps, 3) if playback else 0.0,
            "underruns": playback.underruns if playback else 0,
            "history_turns": len(turn.session.history) // 2,  # earlier turns the reply could see
            "degraded": turn.degraded,
            "reply": turn.text,  # what was spoken: a piece off the rails was written but not said
        }
        log.info("live turn", live_session=self.id, turn=turn.number, timings=timings, **extra)
        self.events.send("timings", turn=turn.number, timings=timings, **extra)
        self.events.send("listening", session_id=self.session_id)

    # ------------------------------------------------------------------------------ messages

    def _on_message(self, raw: object) -> None:
        """``{"type": "say", "text": …}`` (typed input) or ``{"type": "stop"}`` from the client."""
        try:
            message = json.loads(raw) if isinstance(raw, str) and len(raw) <= MAX_TEXT_MESSAGE else None
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "stop":
            self._interrupt("stopped by the client")
        elif kind == "say" and isinstance(message, dict) and isinstance(message.get("text"), str):
            try:  # the checks of every entry point, before anything playing is stopped for it
                text = self.pipeline().check_text(message["text"])
            except AvatarError as exc:
                self.events.send("error", code=exc.code, message=exc.message)
                return
            self.last_activity = time.monotonic()
            self._drop_early()
            self._interrupt("the user typed")
            self._begin_turn(self._take_turn(text=text, ended=time.perf_counter()))
        else:
            self.events.send(
                "error",
                code="invalid_message",
                message='Send JSON: {"type": "say", "text": "..."} or {"type": "stop"}.',
            )
