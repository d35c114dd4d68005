"""`avatar eval`'s voices section: every named voice speaks the same sentences, the embedded Whisper writes
down what it hears (word error rate, per voice), and its median pitch is measured (librosa's pYIN), a
listen-free check that the male voice sounds lower than the female ones."""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from avatar import media
from avatar.bench.wer import WordErrors, word_errors
from avatar.types import ASR_SAMPLE_RATE, AudioArray, SpeechRecognizer, VoiceSpec
from avatar.voices import Voice, voices_for


class Checks(Protocol):
    def add(
        self, name: str, label: str, value: float | None, limit_key: str, unit: str = "", higher: bool = False
    ) -> None: ...


class Speaker(Protocol):
    sample_rate: int

    def synthesize(self, text: str, voice: VoiceSpec) -> AudioArray: ...


def median_pitch_hz(audio: AudioArray, sample_rate: int) -> float:
    """The median fundamental frequency of the voiced frames (pYIN, 60-400 Hz); NaN with none voiced."""
    import librosa  # the eval's own dependency (installed with the test and bench tools), not the service's

    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=400, sr=sample_rate, frame_length=1024)
    return float(np.nanmedian(f0[voiced])) if voiced.any() else float("nan")


def voices_section(
    tts: Speaker, asr: SpeechRecognizer, tts_backend: str, checks: Checks, sentences: tuple[str, ...]
) -> dict[str, Any]:
    """Each voice's round-trip word error rate (limit ``voice_roundtrip_wer_max_pct``) and median pitch."""
    rows = []
    for voice in voices_for(tts_backend):
        errors, pitch, rtf = _judge(tts, asr, voice, sentences)
        rows.append(
            [voice.name, voice.engine, voice.gender, f"{100 * errors.rate:.1f} %", f"{pitch:.0f}", f"{rtf:.2f}"]
        )
        checks.add(
            f"voice_wer_{voice.name}",
            f"voice {voice.name}: ASR round-trip word error rate",
            100 * errors.rate,
            "voice_roundtrip_wer_max_pct",
            "%",
        )
    text = (
        f"{len(sentences)} sentences per voice, heard back by the embedded Whisper; median pitch of the voiced "
        "frames (pYIN); RTF: synthesis seconds per second of speech, on this machine as loaded as it was."
        if rows
        else f"The speech engine ({tts_backend}) has no named voices."
    )
    return {
        "title": "Voices",
        "text": text,
        "headers": ["voice", "engine", "gender", "WER", "median pitch (Hz)", "RTF"],
        "rows": rows,
    }


def _judge(
    tts: Speaker, asr: SpeechRecognizer, voice: Voice, sentences: tuple[str, ...]
) -> tuple[WordErrors, float, float]:
    total, pitches, busy, spoken = WordErrors(), [], 0.0, 0.0
    for sentence in sentences:
        started = time.perf_counter()
        audio = tts.synthesize(sentence, VoiceSpec("eval", voice=voice.name))
        busy += time.perf_counter() - started
        spoken += audio.size / tts.sample_rate
        heard = asr.transcribe(media.decode_audio(media.wav_bytes(audio, tts.sample_rate), ASR_SAMPLE_RATE)).text
        total = total + word_errors(sentence, heard)
        pitches.append(median_pitch_hz(audio, tts.sample_rate))
    return total, float(np.nanmedian(pitches)), busy / max(spoken, 1e-9)
