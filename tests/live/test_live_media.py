"""The live connection's media, encoded ahead: voice packets, face frames and the idle loop, decoded
back with FFmpeg's own decoders (what a browser does with them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from avatar.backends.face_puppet import PuppetAnimator
from avatar.config import Settings
from avatar.pipeline.stages import load_image
from avatar.server.live.codecs import VideoEncoder, VoiceEncoder, silence_packet
from avatar.server.live.idle import IdleLoop, build_idle_loop
from avatar.types import AudioArray

FPS = 25


def decode_opus(packets: list[bytes]) -> np.ndarray:
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = 48_000
    decoder.format = "s16"
    decoder.layout = "mono"
    out = [f.to_ndarray().reshape(-1) for p in packets for f in decoder.decode(av.Packet(p))]
    return np.concatenate(out).astype(np.float32) / 32768.0


@pytest.mark.parametrize("rate", [24_000, 22_050])
def test_voice_packets_cover_the_audio_and_sound_like_it(
    fixture_speech: Callable[[str, int], AudioArray], rate: int
) -> None:
    speech = fixture_speech("question-short", rate)
    encoder = VoiceEncoder(rate)
    packets = []
    for i in range(0, speech.size, rate // FPS * 12):  # in chunks, as the face draws them
        packets += encoder.encode(speech[i : i + rate // FPS * 12])
    packets += encoder.flush()
    assert len(packets) == pytest.approx(speech.size / rate / 0.02, abs=2)
    decoded = decode_opus([p.data for p in packets])
    original = fixture_speech("question-short", 48_000)
    n = min(decoded.size, original.size)
    # Same loudness, and the same waveform up to the codec (Opus's delay is 6.5 ms).
    lag = 312
    correlation = np.corrcoef(decoded[lag:n], original[: n - lag])[0, 1]
    assert correlation > 0.8, correlation
    assert abs(np.std(decoded[:n]) / np.std(original[:n]) - 1) < 0.25


def test_the_silence_packet_decodes_to_silence() -> None:
    assert np.abs(decode_opus([silence_packet()] * 5)).max() < 1e-3


@pytest.fixture(scope="module")
def puppet(settings: Settings, prepared_models: Path, portrait: Path) -> Iterator[tuple[PuppetAnimator, object]]:
    animator = PuppetAnimator(settings.model_path(settings.face_model), size=128, fps=FPS)
    try:
        yield animator, animator.prepare(load_image(portrait.read_bytes(), max_pixels=settings.max_image_pixels))
    finally:
        animator.close()


def test_a_keyframe_starts_a_stream_anywhere(puppet: tuple[PuppetAnimator, object]) -> None:
    animator, face = puppet
    frames = animator.render(face, np.zeros(16_000, np.float32), 16_000)
    encoder = VideoEncoder(128, FPS, 400)
    encoded = [encoder.encode(f, keyframe=i in (0, 10)) for i, f in enumerate(frames)]
    assert [i for i, e in enumerate(encoded) if e.keyframe] == [0, 10]
    decoder = av.CodecContext.create("vp8", "r")  # a fresh decoder joins at frame 10
    pictures = [f for e in encoded[10:] for f in decoder.decode(av.Packet(e.data))]
    assert len(pictures) == len(frames) - 10
    error = np.abs(pictures[0].to_ndarray(format="rgb24").astype(int) - frames[10]).mean()
    assert error < 6, error


def test_the_idle_loop_is_seamless_and_joinable_at_its_keyframes(puppet: tuple[PuppetAnimator, object]) -> None:
    animator, face = puppet
    loop = IdleLoop(forward=60, keyframe_every=FPS)
    calls: list[int] = []

    async def model_work(fn: Callable[[], list[bytes]]) -> list[bytes]:
        calls.append(1)
        return fn()

    async def build() -> None:
        await build_idle_loop(loop, animator, face, size=128, fps=FPS, kbps=300, model_work=model_work)

    asyncio.run(build())
    assert loop.ready.is_set() and len(loop.packets) == loop.cycle == 118
    assert len(calls) >= 4  # drawn a second at a time, each its own piece of model work
    decoder = av.CodecContext.create("vp8", "r")
    pictures = [f.to_ndarray(format="rgb24") for p in loop.packets * 2 for f in decoder.decode(av.Packet(p))]
    assert len(pictures) == 2 * loop.cycle  # round and round, every frame decodes
    drawn = animator.render(face, np.zeros(16_000 * 60 // FPS, np.float32), 16_000)
    for index in (0, 30, 59, 60, 90, 117):  # the loop shows frame position(index) of the idle motion
        error = np.abs(pictures[index].astype(int) - drawn[loop.position(index)]).mean()
        assert error < 6, (index, error)
    # Going round, the last frame of the way back and the first frame are neighbours of the motion.
    assert loop.position(loop.cycle - 1) == 1 and loop.position(loop.cycle) == 0
    for index in range(0, loop.cycle, FPS):
        fresh = av.CodecContext.create("vp8", "r")
        assert len(fresh.decode(av.Packet(loop.packets[index]))) == 1, index  # joinable here
