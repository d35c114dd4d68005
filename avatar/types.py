"""The core vocabulary: the contracts every engine honours and the plain results they return.

Stages depend on these protocols, never on a concrete engine, so a configuration switch or a test swaps
the backend without touching the stage. Every method here is blocking: stages call them in a worker
thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

AudioArray = npt.NDArray[np.float32]
"""Mono float32 samples in [-1, 1]."""

FrameArray = npt.NDArray[np.uint8]
"""Video frames, shape (n, height, width, 3), RGB."""

ImageArray = npt.NDArray[np.uint8]
"""One RGB image, shape (height, width, 3)."""

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]

ASR_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float = 1.0  # how sure the recogniser is of it (Whisper's word probability)


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    segments: tuple[Segment, ...] = ()


KOKORO_SOUNDS_EARLY_S = 0.04
"""Kokoro's voices (hibari is distilled from it) sound each phone about this long before the time their
duration predictor gives it: over 12 sentences the vowels' spans line up best with the loudness 45 ms
(hibari) and 52 ms (Kokoro) earlier, and the first sound starts 27 / 22 ms before its phone (medians).
Both engines move their phones this much earlier, so lips drawn from them are not late."""


@dataclass(frozen=True)
class Phone:
    """One speech sound as spoken: a symbol of the misaki/Kokoro phoneme alphabet (the one hibari and
    Kokoro speak from) and where it lies, in seconds from the start of the audio it belongs to."""

    symbol: str
    start: float
    end: float


@dataclass(frozen=True)
class Speech:
    """Synthesised audio and, where the engine knows them, the sounds in it with their times."""

    audio: AudioArray
    phones: tuple[Phone, ...] | None = None
    """``None`` when the engine cannot say (XTTS, a failed phonemizer): animators fall back to the audio."""


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class VoiceSpec:
    """What a synthesiser needs to speak as a persona.

    ``key`` names the voice for caches (the persona's name); ``voice`` is an engine voice name (hibari's
    bundled voice), ``sample`` a recording to clone (XTTS).
    """

    key: str
    language: str = "en"
    voice: str | None = None
    sample: str | None = None
    speed: float = 1.0


@runtime_checkable
class Backend(Protocol):
    """Lifecycle shared by every engine: built (loaded) by its factory, warmed once, closed once."""

    name: str

    def warmup(self) -> None: ...

    def close(self) -> None: ...


class SpeechRecognizer(Backend, Protocol):
    def transcribe(self, audio: AudioArray, *, language: str | None = None) -> Transcript:
        """Transcribe 16 kHz mono audio. ``language`` None means detect it."""
        ...


class ChatModel(Backend, Protocol):
    tokens_generated: int
    """Every token generated since loading (monotonic): metrics, and proof that a cancelled reply stopped."""

    def reply(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> str:
        """The assistant's next message, whole."""
        ...

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        """The assistant's next message as text pieces, as they are generated."""
        ...

    def prefill(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> None:
        """Read ``messages`` now, ahead of a reply to them that may be asked for soon (live mode, while
        waiting to be sure the user has finished): a model that caches its prompt then starts at once."""
        ...

    def share_cores(self) -> None:
        """Other stages now run beside the stream under way (the first piece of the reply has been handed
        on): a model that took every core for itself gives some back. Called between two tokens."""
        ...


class SpeechSynthesizer(Backend, Protocol):
    sample_rate: int

    def prepare_voice(self, voice: VoiceSpec) -> None:
        """Compute and cache whatever the voice needs (speaker latents), once per persona."""
        ...

    def synthesize(self, text: str, voice: VoiceSpec) -> AudioArray:
        """Speak ``text`` at ``sample_rate``."""
        ...


@runtime_checkable
class TimedSynthesizer(SpeechSynthesizer, Protocol):
    """A synthesiser that also says which sounds it spoke when (hibari, Kokoro): the face shapes its
    lips to them. Engines without it (XTTS) are spoken with ``synthesize`` and animated from the audio."""

    def synthesize_timed(self, text: str, voice: VoiceSpec) -> Speech:
        """``synthesize``'s audio and its phones (``None`` where they cannot be told for this text)."""
        ...


def speak_timed(tts: SpeechSynthesizer, text: str, voice: VoiceSpec) -> Speech:
    """``text`` spoken by ``tts``, with its phones when the engine knows them."""
    timed = getattr(tts, "synthesize_timed", None)
    if timed is None:
        return Speech(tts.synthesize(text, voice))
    speech: Speech = timed(text, voice)
    return speech


def shift_phones(phones: Sequence[Phone] | None, seconds: float, duration: float) -> tuple[Phone, ...] | None:
    """``phones`` moved by ``seconds`` (audio cut or padded at its start) and kept to what lies in
    ``[0, duration)``, the audio they now belong to."""
    if phones is None:
        return None
    moved = (Phone(p.symbol, p.start + seconds, p.end + seconds) for p in phones)
    return tuple(
        Phone(p.symbol, max(p.start, 0.0), min(p.end, duration)) for p in moved if p.end > 0 and p.start < duration
    )


class PreparedFace(Protocol):
    """Whatever an animator computed once from a reference photo (opaque to the pipeline)."""


class FaceAnimator(Backend, Protocol):
    fps: int

    def prepare(self, image: FrameArray) -> PreparedFace:
        """Locate and prepare the face in an RGB photo (h, w, 3). Raises NoFaceError."""
        ...

    def render(
        self,
        face: PreparedFace,
        audio: AudioArray,
        sample_rate: int,
        *,
        start_frame: int = 0,
        phones: Sequence[Phone] | None = None,
    ) -> FrameArray:
        """Frames of the face speaking ``audio``: ``frame_count(len(audio)/sample_rate, fps)``.

        ``start_frame`` is the clip's first frame on the reply's timeline, so idle motion (blinks,
        head sway) continues across clips rendered one sentence at a time. ``phones`` are the sounds
        in ``audio`` with their times (seconds from its start) where the voice knows them: an animator
        that can shapes the lips to them; without them (or an animator that cannot) the motion
        follows the audio alone.
        """
        ...

    def render_chunks(
        self,
        face: PreparedFace,
        audio: AudioArray,
        sample_rate: int,
        chunk_frames: int = 25,
        *,
        start_frame: int = 0,
        phones: Sequence[Phone] | None = None,
    ) -> Iterator[FrameArray]:
        """The frames of ``render`` in consecutive chunks, each yielded as soon as it is drawn."""
        ...


def frame_count(seconds: float, fps: int) -> int:
    """The number of video frames that cover ``seconds`` of audio (at least one)."""
    return max(1, round(seconds * fps))
