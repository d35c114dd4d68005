"""Audio decoding copes with streams that change shape part-way, and reports every failure as bad input."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from avatar import media
from avatar.errors import InvalidAudioError


def tone(fmt: str, codec: str, rate: int, layout: str, seconds: float = 1.0) -> bytes:
    """A 440 Hz tone encoded with ``codec`` in ``fmt``, in ``layout`` at ``rate``."""
    buf = io.BytesIO()
    channels = 2 if layout == "stereo" else 1
    samples = int(rate * seconds)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
    planes = np.tile(wave, (channels, 1))
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes[:, start : start + 1024]), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def test_chained_ogg_that_changes_rate_and_layout_decodes_whole() -> None:
    """Two Ogg FLAC streams back to back (a chained Ogg file): 44.1 kHz stereo, then 22.05 kHz mono.
    One resampler cannot take both shapes; the decoder starts a new one where the shape changes."""
    chained = tone("ogg", "flac", 44_100, "stereo") + tone("ogg", "flac", 22_050, "mono")
    audio = media.decode_audio(chained, 16_000)
    assert abs(audio.size / 16_000 - 2.0) < 0.05
    # Both halves are the tone (the stereo half, downmixed, is 3 dB louder), at 440 Hz.
    for half in (audio[: 16_000 - 800], audio[16_000 + 800 :]):
        assert media.rms_dbfs(half) > -16
        spectrum = np.abs(np.fft.rfft(half))
        assert abs(np.argmax(spectrum) * 16_000 / half.size - 440) < 5


@pytest.mark.parametrize(
    "parts",
    [
        [("mp3", "libmp3lame", 44_100, "stereo"), ("mp3", "libmp3lame", 22_050, "mono")],
        [("mp3", "libmp3lame", 22_050, "mono"), ("mp3", "libmp3lame", 44_100, "stereo")],
        [("ogg", "flac", 22_050, "mono"), ("ogg", "flac", 44_100, "stereo")],
    ],
    ids=["mp3-stereo-then-mono", "mp3-mono-then-stereo", "ogg-mono-then-stereo"],
)
def test_spliced_files_decode_or_are_invalid_audio(parts: list[tuple[str, str, int, str]]) -> None:
    data = b"".join(tone(*part) for part in parts)
    try:
        audio = media.decode_audio(data, 16_000)
    except InvalidAudioError:
        return
    assert audio.size > 0 and np.all(np.isfinite(audio))


@pytest.mark.parametrize("rate", [1, 100, 8_000, 192_000, 384_000])
def test_odd_sample_rates(rate: int) -> None:
    wav = media.wav_bytes(np.zeros(max(rate // 2, 1), np.float32), rate)
    try:
        audio = media.decode_audio(wav, 16_000)
    except InvalidAudioError:
        return
    assert audio.dtype == np.float32
