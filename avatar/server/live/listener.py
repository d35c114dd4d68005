"""Hearing when the user speaks and when their turn ends, from the microphone stream (16 kHz).

Each 32 ms window gets a speech probability (``StreamingVad``). Speech starts after ``min_speech_ms``
of windows at or above the threshold (a cough or a click is shorter); it continues while windows stay
above a lower threshold (hysteresis, so quiet syllables do not break it up); a short silence is a
``paused`` event (recognition may start on what was said), and ``end_silence_ms`` of silence ends the
turn, unless the session has judged the pause meanwhile and set another wait for it (``end_after``:
shorter when the user has plainly finished, longer when the phrase is not over). While the face is
speaking, the threshold and the minimum duration are higher, so that what the browser's echo
cancellation leaves of the face's own voice does not interrupt it, while the user's voice still does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avatar.server.live.vad import WINDOW, WINDOW_SECONDS, StreamingVad
from avatar.types import AudioArray

HYSTERESIS = 0.15  # once speaking, windows down to threshold - this still count as speech
PRE_ROLL_S = 0.3  # audio kept from before speech was detected (its first syllable's onset)
PAUSE_S = 0.064  # silence that makes a pause: recognition of the utterance may start
TAIL_S = 0.064  # silence kept after the last speech (its sound decays in the windows the VAD still calls speech)
MIN_SPEECH_MS = 96  # speech shorter than this (a click, a cough) is not a turn

HeardKind = Literal["speech_started", "paused", "resumed", "partial", "turn_ended"]


@dataclass(frozen=True)
class ListenOptions:
    threshold: float = 0.5
    end_silence_ms: int = 400
    barge_in_threshold: float = 0.8
    barge_in_ms: int = 96
    partial_seconds: float = 1.0  # 0: no partial transcripts
    max_utterance_seconds: float = 30.0


@dataclass(frozen=True)
class Heard:
    """Something the detector noticed, at ``at`` seconds into the stream.

    ``audio`` is the utterance so far (pre-roll, speech and a short tail) for ``paused``, ``partial``
    and ``turn_ended``; ``version`` counts the speech windows in it, so two events with the same
    version carry the same audio. ``speech_end`` is where the last speech ended (stream seconds)."""

    kind: HeardKind
    at: float
    audio: AudioArray | None = None
    version: int = 0
    speech_end: float = 0.0


class TurnDetector:
    """Feed it 16 kHz audio as it arrives; it says when speech starts, pauses, resumes and ends."""

    def __init__(self, options: ListenOptions, vad: StreamingVad | None = None) -> None:
        self.options = options
        self.vad = vad or StreamingVad()
        self.face_speaking = False  # set by the session: raises the bar for speech to start
        self.windows = 0  # windows fed so far
        self._pre_roll: deque[AudioArray] = deque(maxlen=round(PRE_ROLL_S / WINDOW_SECONDS))
        self._candidate: list[AudioArray] = []  # above-threshold windows not yet long enough to count
        self._utterance: list[AudioArray] = []
        self._speaking = False
        self._silent_windows = 0
        self._speech_windows = 0
        self._last_speech = 0  # windows of the utterance up to the end of its last speech
        self._paused = False
        self._partial_at = 0
        self._end_ms = options.end_silence_ms  # the silence that ends this pause (see ``end_after``)
        self._pending = np.zeros(0, np.float32)

    @property
    def in_speech(self) -> bool:
        return self._speaking

    @property
    def talking(self) -> bool:
        """Speech is going on now (in an utterance, and not in a pause of it)."""
        return self._speaking and not self._paused

    @property
    def version(self) -> int:
        """The version of the utterance being heard (its speech windows so far; see ``Heard``)."""
        return self._speech_windows

    def feed(self, audio: AudioArray) -> list[Heard]:
        samples = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        whole = samples.size // WINDOW * WINDOW
        self._pending = samples[whole:]
        if whole == 0:
            return []
        probs = self.vad.feed(samples[:whole])
        heard: list[Heard] = []
        for i, p in enumerate(probs):
            self.windows += 1
            heard += self._window(samples[i * WINDOW : (i + 1) * WINDOW], float(p))
        return heard

    def end_after(self, version: int, silence_ms: int) -> bool:
        """The pause after utterance ``version`` ends the turn once it has lasted ``silence_ms`` (from
        the end of the speech); False, and nothing changes, if the user has spoken since."""
        if not self._speaking or not self._paused or version != self._speech_windows:
            return False
        self._end_ms = silence_ms
        return True

    @property
    def silence_ms(self) -> float:
        """How long the current pause has lasted (0 while the user speaks)."""
        return self._silent_windows * WINDOW_SECONDS * 1000 if self._speaking else 0.0

    def reset(self) -> None:
        """Drop the utterance being heard (the session starts listening afresh)."""
        self._speaking = False
        self._utterance = []
        self._candidate = []

    # ------------------------------------------------------------------------------------------

    @property
    def _now(self) -> float:
        return self.windows * WINDOW_SECONDS

    def _window(self, window: AudioArray, p: float) -> list[Heard]:
        if not self._speaking:
            return self._while_silent(window, p)
        return self._while_speaking(window, p)

    def _while_silent(self, window: AudioArray, p: float) -> list[Heard]:
        threshold = self.options.barge_in_threshold if self.face_speaking else self.options.threshold
        needed_ms = max(self.options.barge_in_ms, MIN_SPEECH_MS) if self.face_speaking else MIN_SPEECH_MS
        if p < threshold:
            self._pre_roll.extend(self._candidate)
            self._candidate = []
            self._pre_roll.append(window)
            return []
        self._candidate.append(window)
        if len(self._candidate) * WINDOW_SECONDS * 1000 < needed_ms:
            return []
        self._utterance = [*self._pre_roll, *self._candidate]
        self._pre_roll.clear()
        self._candidate = []
        self._speaking, self._paused = True, False
        self._end_ms = self.options.end_silence_ms
        self._silent_windows = 0
        self._speech_windows = 0
        self._partial_at = 0
        self._last_speech = len(self._utterance)
        return [Heard("speech_started", self._now, speech_end=self._now)]

    def _while_speaking(self, window: AudioArray, p: float) -> list[Heard]:
        self._utterance.append(window)
        o = self.options
        if p >= o.threshold - HYSTERESIS:
            self._speech_windows += 1
            self._silent_windows = 0
            self._last_speech = len(self._utterance)
            heard: list[Heard] = []
            if self._paused:
                self._paused = False
                self._end_ms = o.end_silence_ms
                heard.append(Heard("resumed", self._now))
            if self._speech_seconds >= o.max_utterance_seconds:
                return [*heard, self._end()]
            speech_s = self._speech_windows * WINDOW_SECONDS
            if o.partial_seconds > 0 and speech_s - self._partial_at * WINDOW_SECONDS >= o.partial_seconds:
                self._partial_at = self._speech_windows
                heard.append(self._so_far("partial"))
            return heard
        self._silent_windows += 1
        silence_s = self._silent_windows * WINDOW_SECONDS
        if silence_s * 1000 >= self._end_ms - 1e-6:
            return [self._end()]
        if not self._paused and silence_s >= PAUSE_S - 1e-9:
            self._paused = True
            return [self._so_far("paused")]
        return []

    @property
    def _speech_seconds(self) -> float:
        return len(self._utterance) * WINDOW_SECONDS

    def _so_far(self, kind: HeardKind) -> Heard:
        tail = round(TAIL_S / WINDOW_SECONDS)
        kept = self._utterance[: self._last_speech + tail]
        speech_end = self._now - (len(self._utterance) - self._last_speech) * WINDOW_SECONDS
        return Heard(kind, self._now, np.concatenate(kept), self._speech_windows, speech_end)

    def _end(self) -> Heard:
        heard = self._so_far("turn_ended")
        self._speaking = False
        self._pre_roll.clear()
        for window in self._utterance[-self._pre_roll.maxlen :] if self._pre_roll.maxlen else []:
            self._pre_roll.append(window)
        self._utterance = []
        return heard
