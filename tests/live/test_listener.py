"""Hearing turns in a microphone stream: the streaming VAD and the turn detector, on real speech."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from faster_whisper.vad import get_vad_model

from avatar.server.live.listener import Heard, ListenOptions, TurnDetector
from avatar.server.live.vad import WINDOW, StreamingVad
from avatar.types import AudioArray

RATE = 16_000


def silence(seconds: float) -> AudioArray:
    return np.zeros(int(seconds * RATE), np.float32)


def feed(detector: TurnDetector, audio: AudioArray, piece: int = 320) -> list[Heard]:
    """As a microphone delivers it: 20 ms at a time."""
    heard: list[Heard] = []
    for i in range(0, audio.size, piece):
        heard += detector.feed(audio[i : i + piece])
    return heard


def test_streaming_vad_equals_faster_whispers_pass_over_the_whole_recording(
    fixture_speech: Callable[[str, int], AudioArray],
) -> None:
    audio = fixture_speech("question-medium", RATE)
    audio = audio[: audio.size // WINDOW * WINDOW]
    whole = np.asarray(get_vad_model()(audio)).reshape(-1)
    vad = StreamingVad()
    pieces = [vad.feed(audio[i : i + 700]) for i in range(0, audio.size, 700)]  # pieces cut across windows
    streamed = np.concatenate(pieces)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    assert 0.4 < (streamed > 0.5).mean() < 0.95  # mostly speech, some silence at the ends


def test_a_question_then_silence_is_one_turn(fixture_speech: Callable[[str, int], AudioArray]) -> None:
    speech = fixture_speech("question-medium", RATE)
    detector = TurnDetector(ListenOptions(end_silence_ms=400, partial_seconds=1.0))
    heard = feed(detector, np.concatenate([silence(1.0), speech, silence(1.5)]))
    kinds = [h.kind for h in heard]
    assert kinds[0] == "speech_started" and kinds[-1] == "turn_ended", kinds
    assert kinds.count("turn_ended") == 1 and "partial" in kinds and "paused" in kinds
    ended = heard[-1]
    assert ended.audio is not None
    # The utterance is the speech, give or take the pre-roll and the tail.
    assert abs(ended.audio.size / RATE - speech.size / RATE) < 0.8
    # The turn ends the configured silence after the speech, and the speech's end is placed right.
    speech_end = 1.0 + _last_loud(speech)
    assert abs(ended.speech_end - speech_end) < 0.15, (ended.speech_end, speech_end)
    assert 0.38 <= ended.at - ended.speech_end <= 0.45
    # The last pause before the end carries the same audio: recognition begun there can be used.
    last_pause = [h for h in heard if h.kind == "paused"][-1]
    assert last_pause.version == ended.version and last_pause.audio is not None
    np.testing.assert_array_equal(last_pause.audio, ended.audio)


def test_a_short_pause_does_not_end_the_turn(fixture_speech: Callable[[str, int], AudioArray]) -> None:
    first, second = (_trimmed(fixture_speech(name, RATE)) for name in ("question-short", "question-medium"))
    detector = TurnDetector(ListenOptions(end_silence_ms=500))
    heard = feed(detector, np.concatenate([first, silence(0.25), second, silence(1.0)]))
    kinds = [h.kind for h in heard]
    assert kinds.count("speech_started") == 1 and kinds.count("turn_ended") == 1, kinds
    assert "resumed" in kinds
    ended = heard[-1].audio
    assert ended is not None and ended.size / RATE > (first.size + second.size) / RATE - 0.6


def test_clicks_and_noise_are_not_speech() -> None:
    rng = np.random.default_rng(0)
    click = np.zeros(RATE, np.float32)
    click[8000:8400] = 0.9 * np.sign(rng.standard_normal(400))  # 25 ms
    noise = (0.003 * rng.standard_normal(RATE * 2)).astype(np.float32)  # a quiet room
    detector = TurnDetector(ListenOptions())
    assert feed(detector, np.concatenate([click, noise, click])) == []


@pytest.mark.parametrize("face_speaking", [False, True])
def test_while_the_face_speaks_it_takes_longer_speech_to_interrupt(
    fixture_speech: Callable[[str, int], AudioArray], face_speaking: bool
) -> None:
    speech = fixture_speech("question-medium", RATE)
    detector = TurnDetector(ListenOptions(barge_in_ms=300))
    detector.face_speaking = face_speaking
    heard = feed(detector, np.concatenate([silence(0.5), speech]))
    started = next(h for h in heard if h.kind == "speech_started")
    onset = 0.5 + _first_loud(speech)
    delay = started.at - onset
    if face_speaking:
        assert 0.3 <= delay <= 0.6, delay
    else:
        assert 0.05 <= delay <= 0.3, delay


def _loud_frames(audio: AudioArray) -> np.ndarray:
    frames = audio[: audio.size // 320 * 320].reshape(-1, 320)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return np.flatnonzero(rms >= rms.max() * 0.03)


def _last_loud(audio: AudioArray) -> float:
    return float((_loud_frames(audio)[-1] + 1) * 320 / RATE)


def _trimmed(audio: AudioArray) -> AudioArray:
    return audio[int(_first_loud(audio) * RATE) : int(_last_loud(audio) * RATE)]


def _first_loud(audio: AudioArray) -> float:
    return float(_loud_frames(audio)[0] * 320 / RATE)
