"""Whisper's short window: a spoken question is encoded in a window just longer than itself, gives the
same words as the usual 30 s window in a fraction of the time, and anything the short window cannot do
well goes the usual way."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from avatar import media
from avatar.backends.whisper import WINDOW_MAX_S, WhisperOptions, WhisperRecognizer, _timed_pieces
from avatar.bench.fixtures import BACKCHANNELS, NOISES, sound_audio
from avatar.config import PROJECT_ROOT
from avatar.server.live.finishing import is_backchannel, is_vocal_sound
from avatar.types import ASR_SAMPLE_RATE, AudioArray

FIXTURES = PROJECT_ROOT / "bench" / "fixtures"


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


@pytest.fixture(scope="module")
def recognizers(prepared_models: Path) -> tuple[WhisperRecognizer, WhisperRecognizer]:
    folder = prepared_models / "whisper-tiny.en"
    short = WhisperRecognizer(folder, WhisperOptions(device="cpu", threads=1))
    usual = WhisperRecognizer(folder, WhisperOptions(device="cpu", threads=1, short_window=False))
    short.warmup()
    usual.warmup()
    return short, usual


def clip(name: str) -> AudioArray:
    return media.decode_audio(FIXTURES / name, ASR_SAMPLE_RATE)


@pytest.mark.parametrize("name", ["question-short.flac", "question-medium.flac", "asr/tts-library.flac"])
def test_a_question_gets_the_same_words_sooner(
    recognizers: tuple[WhisperRecognizer, WhisperRecognizer], name: str
) -> None:
    short, usual = recognizers
    audio = clip(name)
    taken = short.short_windows
    timings = {}
    for asr in (short, usual):
        started = time.perf_counter()
        timings[asr] = (asr.transcribe(audio), time.perf_counter() - started)
    (fast, fast_s), (slow, slow_s) = timings[short], timings[usual]
    assert short.short_windows == taken + 1  # this call took the short window
    assert usual.short_windows == 0
    assert words(fast.text) == words(slow.text) != []
    assert fast.language == "en"
    assert fast.segments and fast.segments[-1].end <= audio.size / ASR_SAMPLE_RATE + 0.05
    # Not a timed test (shared machines are noisy): the times are printed for a person to read.
    print(f"{name}: short window {fast_s:.3f} s, usual {slow_s:.3f} s")


def test_speech_longer_than_the_window_goes_the_usual_way(
    recognizers: tuple[WhisperRecognizer, WhisperRecognizer],
) -> None:
    short, _ = recognizers
    question = clip("question-medium.flac")
    gap = np.zeros(ASR_SAMPLE_RATE // 2, np.float32)
    long = np.concatenate([question, gap] * int(WINDOW_MAX_S / (question.size / ASR_SAMPLE_RATE) + 1))
    taken = short.short_windows
    transcript = short.transcribe(long)
    assert short.short_windows == taken
    assert words(transcript.text).count("flying") >= 2


def test_silence_has_no_words(recognizers: tuple[WhisperRecognizer, WhisperRecognizer]) -> None:
    short, _ = recognizers
    transcript = short.transcribe(np.zeros(2 * ASR_SAMPLE_RATE, np.float32))
    assert transcript.text == "" and transcript.segments == ()


def test_word_timestamps_go_the_usual_way(recognizers: tuple[WhisperRecognizer, WhisperRecognizer]) -> None:
    short, _ = recognizers
    taken = short.short_windows
    transcript = short.transcribe(clip("question-short.flac"), word_timestamps=True)
    assert short.short_windows == taken
    assert [w for s in transcript.segments for w in s.words]


def test_text_after_the_speech_has_ended_is_dropped() -> None:
    begin = 50363  # tiny.en's <|0.00|>
    at = lambda seconds: begin + round(seconds / 0.02)  # noqa: E731
    ids = [at(0.0), 1, 2, at(1.5), at(1.5), 3, at(2.9), at(3.2), 4, 5, at(6.0), 6]
    pieces = _timed_pieces(ids, begin, seconds=3.0)
    assert [(round(s, 2), round(e, 2), t) for s, e, t in pieces] == [(0.0, 1.5, [1, 2]), (1.5, 2.9, [3])]
    # Text with no closing timestamp ends at the end of the speech.
    assert _timed_pieces([at(0.4), 7, 8], begin, seconds=2.0) == [(pytest.approx(0.4), 2.0, [7, 8])]


@pytest.mark.parametrize("name", [name for name, _ in BACKCHANNELS] + list(NOISES))
def test_a_glance_at_a_backchannel_or_a_noise_tells_it_from_words(
    recognizers: tuple[WhisperRecognizer, WhisperRecognizer], name: str
) -> None:
    """What a live session resumes a paused reply on at once: a backchannel, no words, or (unsure) a hum."""
    short, _ = recognizers
    glanced = short.glance(sound_audio(name), language="en")
    assert glanced is not None
    text, sure = glanced
    assert is_backchannel(text) or (not sure and is_vocal_sound(text)), (text, sure)


@pytest.mark.parametrize("name", ["question-short.flac", "asr/tts-library.flac"])
def test_a_glance_at_words_reads_them_as_the_transcript_does(
    recognizers: tuple[WhisperRecognizer, WhisperRecognizer], name: str
) -> None:
    short, usual = recognizers
    audio = clip(name)
    glanced = short.glance(audio, language="en")
    assert glanced is not None
    text, sure = glanced
    assert sure and words(text) == words(usual.transcribe(audio).text)
    assert not is_backchannel(text) and not is_vocal_sound(text)


def test_no_glance_at_speech_longer_than_the_window(recognizers: tuple[WhisperRecognizer, WhisperRecognizer]) -> None:
    short, _ = recognizers
    question = clip("question-medium.flac")
    long = np.concatenate([question] * int(WINDOW_MAX_S / (question.size / ASR_SAMPLE_RATE) + 1))
    assert short.glance(long, language="en") is None
