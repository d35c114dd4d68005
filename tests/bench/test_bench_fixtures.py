"""The committed fixtures: present, small, decodable, each with its reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.bench.fixtures import FIXTURES_DIR, TURNS, load_audio, question_audio, read_clips, write_flac
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
