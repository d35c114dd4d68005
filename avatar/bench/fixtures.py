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
class HesitantQuestion:
    """A question with pauses inside (``parts``: text, seconds of silence, text ...), in
    ``hesitant/<name>.flac``. The whole question is spoken at once by the embedded TTS, so the voice at
    each pause is that of a sentence going on, then cut after the word before the pause (found by
    Whisper's word timings) and the silence put in: a pause turn-taking must not take for the end."""

    name: str
    parts: tuple[str | float, ...]

    @property
    def filename(self) -> str:
        return f"hesitant/{self.name}.flac"

    @property
    def question(self) -> str:
        return " ".join(p for p in self.parts if isinstance(p, str))

    @property
    def pauses(self) -> list[float]:
        return [p for p in self.parts if isinstance(p, float)]


# Pauses of 0.6-1.2 s after phrases that are not over: some end in a word that says so ("about", "and",
# "the", a comma), some only in how they sound ("What did you"), so both the words and the turn-end
# model are needed.
HESITANT: tuple[HesitantQuestion, ...] = (
    HesitantQuestion("like-when", ("So what was it like,", 0.9, "when you first saw the Earth from orbit?")),
    HesitantQuestion("tell-about", ("Could you tell me more about", 1.1, "life on the space station?")),
    HesitantQuestion("eat-and", ("What did you eat, and", 0.8, "how did you sleep up there?")),
    HesitantQuestion("the-training", ("Tell me about the", 1.2, "training you did before the flight.")),
    HesitantQuestion("came-back", ("When you came back to Earth,", 0.6, "what was the first thing you did?")),
    HesitantQuestion("what-did-you", ("What did you", 1.0, "miss the most while you were", 0.7, "up in space?")),
    HesitantQuestion("if-you", ("I was wondering if you", 0.9, "ever felt afraid up there.")),
    HesitantQuestion("because", ("I want to fly one day because", 1.0, "it looks so peaceful.")),
)
FADE_S = 0.01  # each side of a cut fades out or in, so it does not click

# Sounds played over a reply that must not stop it: backchannels spoken by the embedded TTS, and noises
# (a laugh spoken by it; a cough and a knock made here from seeded noise and damped tones).
BACKCHANNELS: tuple[tuple[str, str], ...] = (
    ("mm-hm", "Mm hm."),  # spelt so that the voice says it as people do
    ("uh-huh", "Uh-huh."),
    ("yeah", "Yeah."),
    ("okay", "Okay."),
    ("right", "Right."),
    ("i-see", "I see."),
    ("laugh", "Ha ha!"),
    ("ahem", "Ahem!"),
)
NOISES: tuple[str, ...] = ("cough", "knock")


def sound_audio(name: str, root: Path = FIXTURES_DIR) -> AudioArray:
    """A backchannel or noise of ``sounds/`` at 16 kHz."""
    path = root / "sounds" / f"{name}.flac"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `avatar bench --make-fixtures` once and commit the files.")
    return load_audio(path)


def make_noise(name: str) -> AudioArray:
    """A cough (two bursts of band-limited noise, each dying away in 0.15 s) or a knock (three damped
    150 Hz thuds), 16 kHz, from a fixed seed: the same file every time."""
    rng = np.random.default_rng(19)
    rate = ASR_SAMPLE_RATE
    out = np.zeros(rate, np.float32)
    if name == "cough":
        for start in (0.05, 0.35):
            n = round(0.22 * rate)
            noise = rng.standard_normal(n)
            smooth = np.convolve(noise, np.ones(6) / 6, mode="same") - np.convolve(noise, np.ones(40) / 40, mode="same")
            burst = smooth * np.exp(-np.arange(n) / (0.06 * rate)) * np.minimum(1.0, np.arange(n) / (0.01 * rate))
            at = round(start * rate)
            out[at : at + n] += (0.5 * burst / np.abs(burst).max()).astype(np.float32)
    elif name == "knock":
        t = np.arange(round(0.12 * rate)) / rate
        thud = np.sin(2 * np.pi * 150 * t) * np.exp(-t / 0.02) + 0.3 * rng.standard_normal(t.size) * np.exp(-t / 0.004)
        for start in (0.1, 0.35, 0.6):
            at = round(start * rate)
            out[at : at + t.size] += (0.6 * thud / np.abs(thud).max()).astype(np.float32)
    else:
        raise ValueError(f"no noise named {name!r}; there are: {', '.join(NOISES)}")
    return out


def hesitant_audio(question: HesitantQuestion, root: Path = FIXTURES_DIR) -> AudioArray:
    path = root / question.filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `avatar bench --make-fixtures` once and commit the files.")
    return load_audio(path)


def speak_hesitant(tts: SpeechSynthesizer, question: HesitantQuestion) -> AudioArray:
    """The question spoken whole (16 kHz), cut after the last word before each pause, silence put in.

    Where that word ends in the whole question is found by aligning the words before the pause, spoken
    on their own, with the start of the whole (dynamic time warping of their log-mel spectra, open at
    the end); the cut goes at the quietest 10 ms near the aligned end, so it falls between two words."""
    voice = VoiceSpec("bench")
    speech = _to_asr_rate(tts.synthesize(question.question, voice), tts.sample_rate)
    whole = _log_mel(speech)
    pieces, start, said = [], 0, []
    for part in question.parts:
        if isinstance(part, str):
            said.append(part)
            continue
        prefix = _trim_end(_to_asr_rate(tts.synthesize(" ".join(said), voice), tts.sample_rate))
        cut = _quietest(speech, _aligned_end(_log_mel(prefix), whole) * HOP)
        pieces += [_faded(speech[start:cut]), np.zeros(round(part * ASR_SAMPLE_RATE), np.float32)]
        start = cut
    return np.concatenate([*pieces, _faded(speech[start:])])


HOP = 160  # samples per spectrum frame (10 ms)


def _log_mel(audio: AudioArray) -> np.ndarray:
    from faster_whisper.feature_extractor import FeatureExtractor

    mel = FeatureExtractor(feature_size=80)(audio, padding=0)
    return np.asarray(mel.T, np.float64)  # frames x bands


def _trim_end(audio: AudioArray, floor_db: float = -45.0) -> AudioArray:
    """Without the silence after the last sound (the TTS ends every sentence with some)."""
    frame = HOP
    level = np.array([np.sqrt(np.mean(np.square(audio[i : i + frame])) + 1e-12) for i in range(0, audio.size, frame)])
    loud = np.flatnonzero(20 * np.log10(level / (level.max() + 1e-12)) > floor_db)
    return audio[: (loud[-1] + 1) * frame] if loud.size else audio


def _aligned_end(prefix: np.ndarray, whole: np.ndarray) -> int:
    """The frame of ``whole`` where ``prefix`` (aligned from the start of both) ends: open-end DTW."""
    a = prefix / (np.linalg.norm(prefix, axis=1, keepdims=True) + 1e-9)
    b = whole / (np.linalg.norm(whole, axis=1, keepdims=True) + 1e-9)
    cost = 1.0 - a @ b.T
    n, m = cost.shape
    total = np.full((n, m), np.inf)
    total[0] = np.cumsum(cost[0])
    for i in range(1, n):
        row, above = total[i], total[i - 1]
        diagonal = np.concatenate([[np.inf], above[:-1]])
        best = np.minimum(above, diagonal) + cost[i]
        row[0] = above[0] + cost[i, 0]
        for j in range(1, m):  # the step from the left depends on this row: one pass along it
            row[j] = min(best[j], row[j - 1] + cost[i, j])
    return int(np.argmin(total[-1] / (n + np.arange(1, m + 1))))


def _quietest(audio: AudioArray, around: int, span_s: float = 0.06) -> int:
    """The middle of the quietest 10 ms window within ``span_s`` of sample ``around``."""
    frame = round(0.01 * ASR_SAMPLE_RATE)
    lo = max(0, around - round(span_s * ASR_SAMPLE_RATE))
    hi = max(lo + 1, min(audio.size - frame, around + round(span_s * ASR_SAMPLE_RATE)))
    starts = range(lo, hi, frame // 4)
    energy = [float(np.square(audio[i : i + frame]).sum()) for i in starts]
    return starts[int(np.argmin(energy))] + frame // 2


def _faded(audio: AudioArray) -> AudioArray:
    n = min(round(FADE_S * ASR_SAMPLE_RATE), audio.size // 2)
    out = audio.astype(np.float32, copy=True)
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    out[:n] *= ramp
    out[out.size - n :] *= ramp[::-1]
    return out


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
    """Speak the questions, the synthetic clips and the hesitant questions with ``tts`` into ``root``;
    human clips are kept as they are."""
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
    (root / "sounds").mkdir(exist_ok=True)
    for name, text in BACKCHANNELS:
        speech = _to_asr_rate(tts.synthesize(text, VoiceSpec("bench")), tts.sample_rate)
        written.append(write_flac(root / "sounds" / f"{name}.flac", speech, ASR_SAMPLE_RATE))
    for name in NOISES:
        written.append(write_flac(root / "sounds" / f"{name}.flac", make_noise(name), ASR_SAMPLE_RATE))
    (root / "hesitant").mkdir(exist_ok=True)
    for question in HESITANT:
        written.append(write_flac(root / question.filename, speak_hesitant(tts, question), ASR_SAMPLE_RATE))
    return written


def _to_asr_rate(audio: AudioArray, sample_rate: int) -> AudioArray:
    return media.decode_audio(media.wav_bytes(audio, sample_rate), ASR_SAMPLE_RATE)
