"""The fixed inputs of bench and eval: spoken questions and transcribed clips, kept in ``bench/fixtures/``.

The questions and the synthetic ASR clips are spoken once by the embedded TTS (``avatar bench
--make-fixtures``) and committed, so every later run hears exactly the same audio even if the TTS
changes. Human recordings are copied in by hand with their source and licence in ``SOURCES.md``.
Everything is 16 kHz mono FLAC: lossless and about half the size of WAV.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avatar import media
from avatar.config import PROJECT_ROOT
from avatar.types import ASR_SAMPLE_RATE, AudioArray, SpeechSynthesizer, VoiceSpec

FIXTURES_DIR = PROJECT_ROOT / "bench" / "fixtures"
TRANSCRIPTS = "asr/transcripts.tsv"


@dataclass(frozen=True)
class BenchTurn:
    """One benchmark question: ``name`` is its size class, the audio lives in ``question-<name>.flac``."""

    name: str
    question: str

    @property
    def filename(self) -> str:
        return f"question-{self.name}.flac"


TURNS: tuple[BenchTurn, ...] = (
    BenchTurn("short", "What is your name?"),
    BenchTurn("medium", "What did you enjoy most about flying the Space Shuttle?"),
    BenchTurn(
        "long",
        "When you looked down at the Earth from orbit at night, what did the cities and the thunderstorms "
        "look like, and did seeing them change how you think about home?",
    ),
)

# Sentences the TTS speaks once as committed ASR clips (not the round-trip list in eval, which is
# synthesised afresh each run to test the current TTS).
SYNTHETIC_CLIPS: tuple[tuple[str, str], ...] = (
    ("tts-weather", "The weather today is sunny with a light breeze from the west."),
    ("tts-train", "Please remember to take your umbrella when you leave the train."),
    ("tts-museum", "The museum opens at nine in the morning and closes at five."),
    ("tts-garden", "My sister planted tomatoes, beans and carrots in the garden last spring."),
    ("tts-launch", "The rocket launched on time and reached orbit eight minutes later."),
    ("tts-library", "Could you tell me where the nearest library is?"),
)


@dataclass(frozen=True)
class Clip:
    """A recording with what is said in it."""

    path: Path
    reference: str
    kind: str  # "tts" (made by the embedded TTS) or "human" (a real recording)


def write_flac(path: Path, audio: AudioArray, sample_rate: int) -> Path:
    """16-bit mono FLAC, written atomically."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    with media.atomic_path(path) as tmp, av.open(os.fspath(tmp), mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=sample_rate, layout="mono")
        block = 4096
        for start in range(0, pcm.size, block):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + block], format="s16", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    path.chmod(0o644)  # fixtures are committed; the temporary file was private
    return path


def load_audio(path: Path, sample_rate: int = ASR_SAMPLE_RATE) -> AudioArray:
    return media.decode_audio(path, sample_rate)


def question_audio(turn: BenchTurn, root: Path = FIXTURES_DIR) -> AudioArray:
    """The spoken question at 16 kHz; a clear error if the fixtures were never made."""
    path = root / turn.filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `avatar bench --make-fixtures` once and commit the files.")
    return load_audio(path)


def read_clips(root: Path = FIXTURES_DIR) -> list[Clip]:
    """Every transcribed clip listed in ``asr/transcripts.tsv`` (file, kind, reference)."""
    table = root / TRANSCRIPTS
    if not table.is_file():
        return []
    with table.open(newline="") as fh:
        rows = [row for row in csv.reader(fh, delimiter="\t") if row and not row[0].startswith("#")]
    return [Clip(path=table.parent / file, kind=kind, reference=reference) for file, kind, reference in rows[1:]]


def _write_clips(root: Path, clips: list[Clip]) -> None:
    table = root / TRANSCRIPTS
    with media.atomic_path(table) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["file", "kind", "reference"])
        for clip in sorted(clips, key=lambda c: (c.kind, c.path.name)):
            writer.writerow([clip.path.relative_to(table.parent).as_posix(), clip.kind, clip.reference])


def make_fixtures(tts: SpeechSynthesizer, root: Path = FIXTURES_DIR) -> list[Path]:
    """Speak the questions and synthetic clips with ``tts`` into ``root``; human clips are kept as they are."""
    voice = VoiceSpec("bench")
    written = []
    for turn in TURNS:
        speech = _to_asr_rate(tts.synthesize(turn.question, voice), tts.sample_rate)
        written.append(write_flac(root / turn.filename, speech, ASR_SAMPLE_RATE))
    clips = [c for c in read_clips(root) if c.kind != "tts"]
    for name, text in SYNTHETIC_CLIPS:
        path = root / "asr" / f"{name}.flac"
        write_flac(path, _to_asr_rate(tts.synthesize(text, voice), tts.sample_rate), ASR_SAMPLE_RATE)
        clips.append(Clip(path=path, reference=text, kind="tts"))
        written.append(path)
    _write_clips(root, clips)
    written.append(root / TRANSCRIPTS)
    return written


def _to_asr_rate(audio: AudioArray, sample_rate: int) -> AudioArray:
    return media.decode_audio(media.wav_bytes(audio, sample_rate), ASR_SAMPLE_RATE)
