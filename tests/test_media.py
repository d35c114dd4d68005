"""Decoding, validation and muxing on real FFmpeg (PyAV) with real speech."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from avatar import fmp4, media
from avatar.errors import InvalidAudioError


def encode(audio: np.ndarray, rate: int, fmt: str, codec: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "codec"), [("mp3", "libmp3lame"), ("ogg", "libopus"), ("flac", "flac")])
def test_decodes_common_formats_to_16k_mono(speech, fmt: str, codec: str) -> None:
    voice = speech("Testing one two three.")
    rate = 48_000 if codec == "libopus" else 24_000
    if rate != 24_000:
        voice = np.repeat(voice, 2)
    audio = media.decode_audio(encode(voice, rate, fmt, codec), 16_000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / 16_000 - voice.size / rate) < 0.1
    assert media.rms_dbfs(audio) > -40


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is plainly not audio at all" * 50, "not audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not audio"),
    ],
)
def test_bad_bytes_are_invalid_audio(data: bytes, message: str) -> None:
    with pytest.raises(InvalidAudioError, match=message):
        media.decode_audio(data, 16_000)


def test_truncated_wav_is_rejected(spoken_wav) -> None:
    wav = spoken_wav("This file will be cut in half.")
    with pytest.raises(InvalidAudioError, match="truncated"):
        media.decode_audio(wav[: len(wav) // 2], 16_000)


def test_too_long_is_rejected() -> None:
    wav = media.wav_bytes(np.zeros(24_000 * 5, np.float32), 24_000)
    with pytest.raises(InvalidAudioError, match="limit is 2 s"):
        media.decode_audio(wav, 16_000, max_seconds=2)


def test_loudness_normalisation_reaches_target(speech) -> None:
    quiet = speech("Make me louder please.") * 0.05
    loud = media.normalize_loudness(quiet, target_dbfs=-20)
    assert np.max(np.abs(loud)) <= 0.95
    voiced = loud[np.abs(loud) > 0.01]
    assert -24 < media.rms_dbfs(voiced) < -16


def test_mp4_streams_end_together(tmp_path: Path, speech) -> None:
    audio = speech("Short clip for muxing.")
    fps, rate = 25, 24_000
    n = round(audio.size / rate * fps)
    frames = np.full((n, 64, 96, 3), 128, np.uint8)
    path = fmp4.write_mp4(tmp_path / "x.mp4", frames, media.fit_audio_to_frames(audio, rate, n, fps), rate, fps)
    info = media.probe_mp4(path)
    assert info["frames"] == n and (info["width"], info["height"]) == (96, 64)
    assert abs(info["video_seconds"] - info["audio_seconds"]) <= 1 / fps
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]  # no temporary file left


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        fmp4.write_mp4(tmp_path / "x.mp4", iter(()), np.zeros(100, np.float32), 24_000, 25)
    assert list(tmp_path.iterdir()) == []
