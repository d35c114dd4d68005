"""The stages of a conversation turn. Each is a small class with one async method; the model comes in
through the constructor, and every blocking call runs in a worker thread so the event loop never stalls.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path

import numpy as np

from avatar import media
from avatar.errors import InvalidImageError, ModelError, NoSpeechError
from avatar.personas import Persona
from avatar.pipeline.text import clean_reply, split_sentences, usable_piece
from avatar.pipeline.threads import run_blocking
from avatar.types import (
    AudioArray,
    ChatMessage,
    ChatModel,
    FaceAnimator,
    FrameArray,
    PreparedFace,
    SpeechRecognizer,
    SpeechSynthesizer,
    Transcript,
)

log = logging.getLogger(__name__)

SILENCE_DBFS = -60.0
FIRST_CLAUSE_WORDS = 4
_CONJUNCTIONS = "and|but|when|because|so|while|which|where|who|until|before|after"
FIRST_PAUSE_WORDS = 2
# The start of a sentence up to its first clause break: a comma, semicolon, colon, dash or ellipsis, or
# the space before a conjunction (which opens the next piece). A mark counts as soon as it is written,
# before the next token, unless a digit precedes it (1,000; 10:30; 1990-2000); a conjunction counts once
# the word after it has begun (until then "and" may still become "android").
_FIRST_CLAUSE = re.compile(
    rf"^(?:\S+\s+){{{FIRST_CLAUSE_WORDS - 1},}}?\S*?"
    rf"(?:(?<!\d)(?:[,;:\u2013\u2014\u2026]|\.\.\.)(?=\s|$)|\w(?=\s+(?:{_CONJUNCTIONS})\s))",
    re.IGNORECASE,
)
# An ellipsis is a pause the voice makes anyway ("The stars... that was"), so it may end a shorter piece.
_FIRST_PAUSE = re.compile(rf"^(?:\S+\s+){{{FIRST_PAUSE_WORDS - 1},}}?\S*?(?:\u2026|\.\.\.)(?=\s|$)")


def first_clause(sentence: str) -> str | None:
    """The opening of ``sentence`` that may be spoken before the rest is written, if it has one yet."""
    found = [m.group(0) for m in (_FIRST_PAUSE.match(sentence), _FIRST_CLAUSE.match(sentence)) if m]
    return min(found, key=len) if found else None


class TranscribeStage:
    """16 kHz audio → the words in it. No words → NoSpeechError."""

    def __init__(self, asr: SpeechRecognizer) -> None:
        self.asr = asr

    async def __call__(self, audio: AudioArray, language: str | None = None) -> Transcript:
        if media.rms_dbfs(audio) < SILENCE_DBFS:
            raise NoSpeechError("The recording is silent: no speech was heard. Check the microphone and try again.")
        transcript = await run_blocking(self.asr.transcribe, audio, language=language)
        if not any(ch.isalnum() for ch in transcript.text):
            raise NoSpeechError("No speech was recognised in the recording. Speak clearly and try again.")
        return transcript


class RespondStage:
    """The persona's reply to what the user said, short and speakable, sentence by sentence.

    The model's tokens are streamed; each sentence is cleaned and handed on as soon as the next one
    begins, and generation stops once ``max_sentences`` are complete. A failed or empty generation
    gives the persona's fallback reply instead of an error.
    """

    def __init__(self, llm: ChatModel, *, max_new_tokens: int = 60, max_sentences: int = 2) -> None:
        self.llm = llm
        self.max_new_tokens = max_new_tokens
        self.max_sentences = max_sentences

    def messages(self, persona: Persona, history: Sequence[ChatMessage], user_text: str) -> list[ChatMessage]:
        return [ChatMessage("system", persona.system_prompt), *history, ChatMessage("user", user_text)]

    def generate_sentences(self, messages: list[ChatMessage], emit: Callable[[str], object]) -> int:
        """Stream the model, calling ``emit`` with each finished, cleaned piece of speech (blocking).

        Pieces are whole sentences, except that the first sentence is handed on at its first clause
        break (a comma, semicolon, colon, dash or conjunction after at least ``FIRST_CLAUSE_WORDS``
        words, an ellipsis after ``FIRST_PAUSE_WORDS``): the voice and the face start on it while the
        model finishes the sentence. Returns how many sentences were emitted. A trailing fragment cut off by the token
        limit is kept only if it is all there is.
        """
        text, used, emitted, head = "", 0, 0, 0  # head: characters of parts[used] already emitted

        def take(part: str) -> bool:
            piece = clean_reply(part, 1)
            if usable_piece(piece, messages):  # words, and not off the rails (else not spoken)
                emit(piece)
                return True
            return False

        def finish_sentence() -> None:
            """Emit what is left of sentence ``used``; it counts if any of it was spoken."""
            nonlocal emitted, used, head
            if take(parts[used][head:]) or head > 0:
                emitted += 1
            used, head = used + 1, 0

        pieces = self.llm.stream(messages, max_new_tokens=self.max_new_tokens)
        try:
            for piece in pieces:
                text += piece
                parts = split_sentences(text)
                # A sentence is complete once the next one has begun.
                while used < len(parts) - 1 and emitted < self.max_sentences:
                    finish_sentence()
                if emitted >= self.max_sentences:
                    break
                if emitted == 0 and head == 0 and used < len(parts):
                    clause = first_clause(parts[used])
                    if clause and take(clause):
                        head = len(clause)
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # stops generation early
        parts = split_sentences(text)
        if emitted < self.max_sentences and used < len(parts):
            # The last sentence may be cut off by the token limit: keep it only if it ends properly,
            # if its head is already spoken, or if it is all there is.
            if emitted == 0 or head > 0 or parts[used].rstrip().endswith((".", "!", "?")):
                finish_sentence()
        return emitted

    async def sentences(
        self, persona: Persona, history: Sequence[ChatMessage], user_text: str
    ) -> AsyncGenerator[tuple[str, bool], None]:
        """(sentence, is_fallback) pairs as the model finishes them, while it keeps generating."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        messages = self.messages(persona, history, user_text)

        def work() -> None:
            try:
                self.generate_sentences(messages, lambda s: loop.call_soon_threadsafe(queue.put_nowait, s))
            except Exception as exc:  # noqa: BLE001 - any model failure degrades to the fallback reply
                log.warning("llm failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = asyncio.ensure_future(run_blocking(work))
        count = 0
        try:
            while (sentence := await queue.get()) is not None:
                count += 1
                yield sentence, False
            if count == 0:
                log.warning("llm reply empty; using fallback reply")
                yield persona.fallback_reply, True
        finally:
            await worker  # the model is never left running into the next turn

    async def __call__(self, persona: Persona, history: Sequence[ChatMessage], user_text: str) -> tuple[str, bool]:
        """The whole reply and whether it is the fallback."""
        parts = [part async for part in self.sentences(persona, history, user_text)]
        return " ".join(text for text, _ in parts), any(fallback for _, fallback in parts)


class SpeakStage:
    """Text → the persona's voice, loudness-normalised."""

    def __init__(self, tts: SpeechSynthesizer) -> None:
        self.tts = tts

    @property
    def sample_rate(self) -> int:
        return self.tts.sample_rate

    async def __call__(self, text: str, persona: Persona) -> AudioArray:
        audio = await run_blocking(self.tts.synthesize, text, persona.voice_spec)
        if audio.size == 0:
            raise ModelError(f"The speech synthesiser produced no audio for {text[:80]!r}.")
        return audio


class AnimateStage:
    """Reply audio + the persona's photo → video frames. Prepared faces are cached per photo."""

    def __init__(self, animator: FaceAnimator, cache_size: int = 16) -> None:
        self.animator = animator
        self._faces: OrderedDict[str, PreparedFace] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def fps(self) -> int:
        return self.animator.fps

    def prepare_path(self, image_path: Path) -> PreparedFace:
        """The prepared face of a photo file, from the cache when the file is unchanged (blocking)."""
        key = f"{image_path.resolve()}:{image_path.stat().st_mtime_ns}"
        return self._prepared(key, lambda: load_image(image_path.read_bytes()))

    def prepare_bytes(self, data: bytes) -> PreparedFace:
        """The prepared face of an uploaded photo, cached by content (blocking)."""
        return self._prepared(hashlib.sha256(data).hexdigest(), lambda: load_image(data))

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
        return await run_blocking(self.prepare_path, image_path)

    async def __call__(self, face: PreparedFace, audio: AudioArray, sample_rate: int) -> FrameArray:
        return await run_blocking(self.animator.render, face, audio, sample_rate)


class MuxStage:
    """Frames + audio → an H.264/AAC MP4 whose streams start and end together."""

    async def __call__(self, path: Path, frames: FrameArray, audio: AudioArray, sample_rate: int, fps: int) -> Path:
        fitted = media.fit_audio_to_frames(audio, sample_rate, len(frames), fps)
        return await run_blocking(media.write_mp4, path, frames, fitted, sample_rate, fps)


def load_image(data: bytes) -> FrameArray:
    """Decode a photo to RGB uint8, honouring EXIF orientation."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            upright = ImageOps.exif_transpose(opened)
            return np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError:
        raise InvalidImageError("The photo has too many pixels; upload a smaller image.") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidImageError("The photo could not be read; upload a JPEG or PNG image.") from None
