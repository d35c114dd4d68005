"""The committed fixtures: present, small, decodable, each with its reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.bench.fixtures import (
    BACKCHANNELS,
    FIXTURES_DIR,
    HESITANT,
    NOISES,
    TURNS,
    hesitant_audio,
    load_audio,
    make_noise,
    question_audio,
    read_clips,
    sound_audio,
    write_flac,
)
from avatar.types import ASR_SAMPLE_RATE


def test_questions_are_committed_and_ordered_by_length() -> None:
    seconds = [question_audio(t).size / ASR_SAMPLE_RATE for t in TURNS]
    assert [t.name for t in TURNS] == ["short", "medium", "long"]
    assert seconds == sorted(seconds) and 1.0 < seconds[0] and seconds[-1] < 15.0


def test_clips_have_references_sources_and_stay_small() -> None:
    clips = read_clips()
    assert {c.kind for c in clips} == {"tts", "human"}
    for clip in clips:
        assert clip.path.is_file(), clip.path
        assert clip.reference.strip()
    sources = (FIXTURES_DIR / "SOURCES.md").read_text()
    assert all(c.path.name in sources or c.path.name.startswith(("tts-", "human-librivox-")) for c in clips)
    total = sum(p.stat().st_size for p in FIXTURES_DIR.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024


def test_flac_round_trip_is_lossless_at_16_bits(tmp_path: Path) -> None:
    t = np.arange(ASR_SAMPLE_RATE, dtype=np.float32) / ASR_SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    back = load_audio(write_flac(tmp_path / "tone.flac", tone, ASR_SAMPLE_RATE))
    assert back.size == tone.size
    assert np.max(np.abs(back - tone)) < 2 / 32768


def test_hesitant_questions_hold_their_long_pauses_where_written() -> None:
    for question in HESITANT:
        audio = hesitant_audio(question)
        loud = np.flatnonzero(np.abs(audio) > 0)
        gaps = np.diff(loud)[np.diff(loud) > 0.5 * ASR_SAMPLE_RATE] / ASR_SAMPLE_RATE
        assert len(gaps) == len(question.pauses), question.name
        # the silence put in, plus the quiet either side of the cut
        assert all(p <= g < p + 0.1 for g, p in zip(gaps, question.pauses, strict=True)), (question.name, gaps)
        assert all(0.6 <= p <= 1.2 for p in question.pauses)


def test_sounds_over_replies_are_committed_and_the_noises_are_made_the_same_each_time() -> None:
    for name in [n for n, _ in BACKCHANNELS] + list(NOISES):
        audio = sound_audio(name)
        assert 0.5 < audio.size / ASR_SAMPLE_RATE < 2.0 and np.abs(audio).max() > 0.1, name
    for name in NOISES:
        assert np.max(np.abs(sound_audio(name) - make_noise(name))) < 2 / 32768
    sources = (FIXTURES_DIR / "SOURCES.md").read_text()
    assert "sounds/" in sources and "hesitant/" in sources
