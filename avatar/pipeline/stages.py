"""The stages of a conversation turn. Each is a small class with one async method; the model comes in
through the constructor, and every blocking call runs in a worker thread so the event loop never stalls.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from avatar import media
from avatar.errors import NoAudioError, NoSpeechError
from avatar.fmp4 import FORMATS, VideoFormat, write_mp4
from avatar.images import DEFAULT_MAX_PIXELS, labelled, load_image
from avatar.knowledge import ORDERS
from avatar.personas import Persona
from avatar.pipeline.pieces import PieceSplitter
from avatar.pipeline.text import unfinished
from avatar.pipeline.threads import ModelCalls, run_blocking
from avatar.prompt import build_messages
from avatar.types import (
    AudioArray,
    ChatMessage,
    ChatModel,
    FaceAnimator,
    FrameArray,
    PreparedFace,
    Speech,
    SpeechRecognizer,
    SpeechSynthesizer,
    Transcript,
    frame_count,
    speak_timed,
)
from avatar.visitor import introduction

log = logging.getLogger(__name__)

SILENCE_DBFS = -60.0


def _gives_words(asr: SpeechRecognizer) -> bool:
    return "word_probabilities" in inspect.signature(asr.transcribe).parameters


class TranscribeStage:
    """16 kHz audio → the words in it. No words → NoSpeechError."""

    def __init__(self, asr: SpeechRecognizer, calls: ModelCalls | None = None) -> None:
        self.asr = asr
        self.calls = calls or ModelCalls()

    async def __call__(self, audio: AudioArray, language: str | None = None, *, words: bool = False) -> Transcript:
        """``words``: with how sure the recogniser was of each word, where it says (Whisper)."""
        if media.rms_dbfs(audio) < SILENCE_DBFS:
            raise NoSpeechError("The recording is silent: no speech was heard. Check the microphone and try again.")
        sure = {"word_probabilities": True} if words and _gives_words(self.asr) else {}
        transcript = await self.calls(self.asr.transcribe, audio, language=language, **sure)
        if not any(ch.isalnum() for ch in transcript.text):
            raise NoSpeechError("No speech was recognised in the recording. Speak clearly and try again.")
        return transcript

    async def glance(self, audio: AudioArray, language: str | None = None) -> tuple[str, bool] | None:
        """A quick first reading of a short sound and whether the recogniser is sure of it (Whisper's
        ``glance``); None where the recogniser has none, or the sound is too long for one."""
        glance = getattr(self.asr, "glance", None)
        if glance is None:
            return None
        result: tuple[str, bool] | None = await self.calls(glance, audio, language=language)
        return result


@dataclass(frozen=True)
class ReplyPart:
    """What the Respond stage hands on while the model writes: ``delta`` text to show (``shown`` is the
    whole reply so far), or a finished ``piece`` of speech (``fallback`` when it is the persona's
    fallback line instead of the model's words)."""

    kind: Literal["delta", "piece"]
    text: str
    shown: str = ""
    fallback: bool = False
    reason: str = ""  # why the fallback line was used


class RespondStage:
    """The persona's reply to what the user said, short and speakable, piece by piece.

    The model's tokens are read one at a time, each in a worker thread, so cancelling the turn stops the
    model within one token (the token iterator is closed, which ends generation). Generation also stops
    once ``max_sentences`` are complete. A failed or empty generation gives the persona's fallback
    reply instead of an error.
    """

    def __init__(
        self, llm: ChatModel, *, max_new_tokens: int = 60, max_sentences: int = 2, calls: ModelCalls | None = None
    ) -> None:
        self.llm = llm
        self.calls = calls or ModelCalls()
        self.max_new_tokens = max_new_tokens
        self.max_sentences = max_sentences

    def messages(
        self, persona: Persona, history: Sequence[ChatMessage], user_text: str, visitor: Sequence[str] = ()
    ) -> list[ChatMessage]:
        """The prompt (``avatar.prompt``): the persona's instructions and knowledge, the
        conversation so far, what bears on this turn, and the visitor's words."""
        return build_messages(persona, history, user_text, visitor)

    async def prefill(
        self, persona: Persona, history: Sequence[ChatMessage], user_text: str, visitor: Sequence[str] = ()
    ) -> None:
        """Have the model read the prompt of a reply that may be asked for soon (a failure is left for
        that reply to meet)."""
        # In a worker thread: the first prompt of a persona with long knowledge builds its search index.
        messages = await run_blocking(self.messages, persona, history, user_text, visitor)
        try:
            await self.calls(self.llm.prefill, messages, max_new_tokens=self.max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - only a head start; the reply itself reports a failure
            log.info("llm prefill failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    async def stream(
        self,
        persona: Persona,
        history: Sequence[ChatMessage],
        user_text: str,
        visitor: Sequence[str] = (),
        *,
        quick_start: bool = False,
    ) -> AsyncGenerator[ReplyPart, None]:
        """Display deltas and pieces of speech, as the model writes them (``visitor``: what the visitor
        has said about themself in this session; ``quick_start``: the voice is slow, so its first piece
        is shorter, ``PieceSplitter``)."""
        canned = canned_reply(persona, user_text)
        if canned is not None:
            yield ReplyPart("delta", canned, canned)
            yield ReplyPart("piece", canned)
            return
        messages = await run_blocking(self.messages, persona, history, user_text, visitor)
        splitter = PieceSplitter(self.max_sentences, messages, persona.unknown_reply, quick_start=quick_start)
        spoken = 0
        tokens = self.llm.stream(messages, max_new_tokens=self.max_new_tokens)
        try:
            while not splitter.complete:
                token = await self.calls(next, tokens, None)
                if token is None:
                    break
                shown = splitter.shown
                pieces = splitter.feed(token)
                if splitter.shown.startswith(shown) and len(splitter.shown) > len(shown):
                    yield ReplyPart("delta", splitter.shown[len(shown) :], splitter.shown)
                elif splitter.caught and splitter.shown != shown:  # made-up words on screen: replaced whole
                    yield ReplyPart("delta", "", splitter.shown)
                for piece in pieces:
                    spoken += 1
                    yield ReplyPart("piece", piece)
                    if spoken == 1:  # the voice and the face start on it: they need cores now
                        self.llm.share_cores()
            for piece in splitter.finish():
                spoken += 1
                yield ReplyPart("piece", piece)
        except Exception as exc:  # noqa: BLE001 - any model failure degrades to the fallback reply
            failure = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
            log.warning("llm failed", extra={"error": failure})
        else:
            failure = "the model's reply had nothing to say aloud"
        finally:
            await run_blocking(_close, tokens)  # the model is never left running into the next turn
        if spoken == 0:
            log.warning("llm reply empty or failed; using fallback reply", extra={"reason": failure})
            yield ReplyPart("piece", persona.fallback_reply, persona.fallback_reply, fallback=True, reason=failure)

    async def __call__(
        self, persona: Persona, history: Sequence[ChatMessage], user_text: str, visitor: Sequence[str] = ()
    ) -> tuple[str, str | None]:
        """The whole reply, and why it is the persona's fallback line (None when it is the model's)."""
        parts = [part async for part in self.stream(persona, history, user_text, visitor) if part.kind == "piece"]
        fallback = next((part.reason for part in parts if part.fallback), None)
        return " ".join(part.text for part in parts), fallback


def canned_reply(persona: Persona, user_text: str) -> str | None:
    """The persona's own line for what no model should answer: an order to drop its instructions (it
    stays itself), a sentence the visitor broke off (it waits for the rest), or the visitor saying who
    they are and nothing more (it greets them by name). None otherwise."""
    if ORDERS.search(user_text):
        return persona.deflect_reply
    if unfinished(user_text):
        return persona.listening_reply
    name = introduction(user_text)
    if name is not None:  # a small model answers "Hi, I'm Kofi": the visitor's name taken for its own
        return persona.greeting_reply.format(name=name)
    return None


def _close(tokens: Iterator[str]) -> None:
    close = getattr(tokens, "close", None)
    if close is None:
        return
    try:
        close()  # a generator closed early stops generation
    except ValueError:  # still generating, in a call left running past its time limit (the model is "hung")
        log.warning("llm stream left running: its call passed the stage time limit; it ends when that call returns")


class SpeakStage:
    """Text → the persona's voice, loudness-normalised."""

    def __init__(self, tts: SpeechSynthesizer, calls: ModelCalls | None = None) -> None:
        self.tts = tts
        self.calls = calls or ModelCalls()

    @property
    def sample_rate(self) -> int:
        return self.tts.sample_rate

    async def __call__(self, text: str, persona: Persona) -> AudioArray:
        return (await self.speech(text, persona)).audio

    def quick_start(self, persona: Persona) -> bool:
        """Whether the persona's voice is slow to start, and so is handed a shorter first piece (an
        engine says so with ``quick_start(voice)``; the fast ones have none)."""
        says = getattr(self.tts, "quick_start", None)
        try:
            return bool(says(persona.voice_spec)) if says is not None else False
        except Exception:  # noqa: BLE001 - a voice it cannot find fails where it speaks (a degraded turn)
            return False

    async def speech(self, text: str, persona: Persona) -> Speech:
        """The spoken ``text`` and, where the voice knows them, the sounds in it and their times."""
        speech = await self.calls(speak_timed, self.tts, text, persona.voice_spec)
        if speech.audio.size == 0:
            raise NoAudioError(f"The speech synthesiser produced no audio for {text[:80]!r}.")
        return speech


class AnimateStage:
    """Reply audio + the persona's photo → video frames. Prepared faces are cached per photo."""

    def __init__(
        self,
        animator: FaceAnimator,
        cache_size: int = 16,
        calls: ModelCalls | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.animator = animator
        self.calls = calls or ModelCalls()
        self.max_image_pixels = max_image_pixels
        self._faces: OrderedDict[str, PreparedFace] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def fps(self) -> int:
        return self.animator.fps

    def prepare_path(self, image_path: Path) -> PreparedFace:
        """The prepared face of a photo file, from the cache when the file is unchanged (blocking)."""
        return self._prepared(
            _path_key(image_path), lambda: load_image(image_path.read_bytes(), max_pixels=self.max_image_pixels)
        )

    def cached(self, image_path: Path) -> PreparedFace | None:
        """The prepared face of a photo file if it is prepared already (never prepares: no model work)."""
        try:
            key = _path_key(image_path)
        except FileNotFoundError:
            return None
        with self._lock:
            return self._faces.get(key)

    def prepare_bytes(self, data: bytes) -> PreparedFace:
        """The prepared face of an uploaded photo, cached by content (blocking)."""
        return self._prepared(
            hashlib.sha256(data).hexdigest(), lambda: load_image(data, max_pixels=self.max_image_pixels)
        )

    def _prepared(self, key: str, read: Callable[[], FrameArray]) -> PreparedFace:
        with self._lock:
            face = self._faces.get(key)
            if face is not None:
                self._faces.move_to_end(key)
                return face
        face = self.animator.prepare(read())
        with self._lock:
            self._faces[key] = face
            while len(self._faces) > self._cache_size:
                self._faces.popitem(last=False)
        return face

    async def face_for(self, image_path: Path) -> PreparedFace:
        return await self.calls(self.prepare_path, image_path)

    async def __call__(self, face: PreparedFace, audio: AudioArray, sample_rate: int) -> FrameArray:
        return await self.calls(self.animator.render, face, audio, sample_rate)

    async def to_mp4(
        self,
        face: PreparedFace,
        audio: AudioArray,
        sample_rate: int,
        path: Path,
        fmt: VideoFormat = FORMATS["h264"],
        *,
        sign: Callable[[Path], None] | None = None,
        label: str = "",
    ) -> Path:
        """The face speaking ``audio`` as an MP4 (the ``/animate`` route and ``avatar animate``), drawn
        and encoded chunk by chunk by the same writer a turn uses; marked like a turn's video (``sign``:
        the AI-generated manifest, ``label``: a visible one)."""
        frames = frame_count(audio.size / sample_rate, self.fps)
        fitted = media.fit_audio_to_frames(audio, sample_rate, frames, self.fps)
        chunks = self.animator.render_chunks(face, fitted, sample_rate, chunk_frames=self.fps)
        if label:
            chunks = (labelled(chunk, label) for chunk in chunks)
        written = await run_blocking(write_mp4, path, chunks, fitted, sample_rate, self.fps, fmt)
        if sign is not None:
            await run_blocking(sign, written)
        return written


def _path_key(image_path: Path) -> str:
    """A photo file's cache key: its place and when it last changed."""
    return f"{image_path.resolve()}:{image_path.stat().st_mtime_ns}"
