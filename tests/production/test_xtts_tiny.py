"""Coqui XTTS on a tiny random XTTS: voice cloning from a real sample, synthesis and streaming."""

from __future__ import annotations

import shutil
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.backends.xtts import XttsOptions, XttsSynthesizer
from avatar.config import PROJECT_ROOT, Settings
from avatar.errors import ConfigError, ModelError
from avatar.media import decode_audio, write_wav
from avatar.types import VoiceSpec

pytest.importorskip("TTS", reason="coqui-tts is not installed (the xtts extra): XTTS tests need it")

VOICE_SAMPLE = PROJECT_ROOT / "assets" / "personas" / "eileen" / "voice.wav"
EILEEN = VoiceSpec(key="eileen", language="en", sample=str(VOICE_SAMPLE))
# The tiny GPT makes at most 6 audio tokens per sentence: 6 x 1024 samples at 22.05 kHz ≈ 0.28 s.
MAX_SECONDS_PER_SENTENCE = 0.3


@pytest.fixture(scope="module")
def tts(tiny_xtts: Path) -> XttsSynthesizer:
    return XttsSynthesizer(tiny_xtts, options=XttsOptions(device="cpu", stream_chunk_size=3))


def test_loads_and_warms_through_the_registry(production_settings: Settings, tiny_xtts: Path, registry_for: Any):
    registry = registry_for(production_settings, "tts")
    assert registry.ready, registry.states()
    tts = registry.get("tts")
    assert isinstance(tts, XttsSynthesizer)
    assert tts.sample_rate == 24_000 and tts.languages == ("en",)
    assert tts.prepared_voices == ()  # warm-up conditioning is never cached


def test_speaker_conditioning_is_computed_once_per_voice(tts: XttsSynthesizer, tmp_path: Path):
    before = tts.conditioning_runs
    tts.prepare_voice(EILEEN)
    tts.prepare_voice(EILEEN)
    assert tts.conditioning_runs == before + 1
    tts.synthesize("Hello there.", EILEEN)
    assert tts.conditioning_runs == before + 1  # requests reuse the cached latents
    other = VoiceSpec(key="other", language="en", sample=str(shutil.copy(VOICE_SAMPLE, tmp_path / "other.wav")))
    tts.prepare_voice(other)
    assert tts.conditioning_runs == before + 2
    assert {"eileen", "other"} <= set(tts.prepared_voices)


def test_a_changed_sample_is_cloned_again(tts: XttsSynthesizer, tmp_path: Path):
    sample = Path(shutil.copy(VOICE_SAMPLE, tmp_path / "voice.wav"))
    voice = VoiceSpec(key="changing", language="en", sample=str(sample))
    tts.prepare_voice(voice)
    runs = tts.conditioning_runs
    recording = decode_audio(VOICE_SAMPLE, 24_000)
    write_wav(sample, recording[: recording.size // 2], 24_000)  # a new, shorter recording
    tts.prepare_voice(voice)
    assert tts.conditioning_runs == runs + 1


def test_an_unreadable_sample_is_a_config_error_naming_the_persona(tts: XttsSynthesizer, tmp_path: Path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(VOICE_SAMPLE.read_bytes()[:5000])  # its header promises more than is there
    with pytest.raises(ConfigError, match=r"Persona 'broken'.*cannot be read"):
        tts.prepare_voice(VoiceSpec(key="broken", language="en", sample=str(broken)))


def test_synthesize_returns_float32_audio_at_24khz(tts: XttsSynthesizer):
    tts.prepare_voice(EILEEN)
    audio = tts.synthesize("Hello there. How are you today?", EILEEN)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    seconds = audio.size / tts.sample_rate
    assert 0.2 < seconds < 2 * MAX_SECONDS_PER_SENTENCE + 0.5  # two sentences, pauses included


def test_stream_yields_audio_chunks_and_stops_when_closed(tts: XttsSynthesizer):
    tts.prepare_voice(EILEEN)
    chunks = list(tts.stream("Hello there.", EILEEN))
    assert len(chunks) >= 2  # 3 GPT tokens a chunk: the sentence arrives in pieces
    assert all(c.dtype == np.float32 and c.ndim == 1 and c.size for c in chunks)
    assert 0.05 < sum(c.size for c in chunks) / tts.sample_rate < MAX_SECONDS_PER_SENTENCE + 0.05
    stream = tts.stream("Hello there. And goodbye.", EILEEN)
    first = next(stream)
    assert isinstance(stream, Generator)  # what a stream is: closing it stops the model
    stream.close()
    assert first.size > 0


def test_the_model_computes_on_the_torch_thread_whoever_calls(tts: XttsSynthesizer, module_threads: Any):
    with module_threads(tts._model) as seen:
        tts.synthesize("Hello.", EILEEN)
        with ThreadPoolExecutor(1) as other:
            other.submit(lambda: list(tts.stream("Hello.", EILEEN))).result()
    assert seen == {"avatar-torch_0"}


def test_long_text_is_split_within_the_character_limit(tts: XttsSynthesizer):
    text = "Hello there, " * 40 + "and goodbye. Short one."
    pieces = tts.split_text(text, "en")
    assert len(pieces) >= 3 and pieces[-1] == "Short one."
    assert all(len(p) <= 250 for p in pieces)
    assert " ".join(pieces).split() == text.split()  # nothing lost


def test_persona_language_must_be_one_xtts_speaks(tts: XttsSynthesizer):
    assert tts.language_code("en-US") == "en"
    with pytest.raises(ConfigError, match="does not speak 'de'"):
        tts.prepare_voice(VoiceSpec(key="hans", language="de", sample=str(VOICE_SAMPLE)))


def test_a_voice_needs_a_sample(tts: XttsSynthesizer, tmp_path: Path):
    with pytest.raises(ConfigError, match="no voice sample"):
        tts.prepare_voice(VoiceSpec(key="mute", language="en"))
    with pytest.raises(ConfigError, match="does not exist"):
        tts.prepare_voice(VoiceSpec(key="gone", language="en", sample=str(tmp_path / "gone.wav")))


def test_missing_checkpoint_names_the_file(tiny_xtts: Path, copy_without: Any):
    broken = copy_without(tiny_xtts, "model.pth")
    with pytest.raises(ModelError, match=r"model\.pth"):
        XttsSynthesizer(broken, options=XttsOptions(device="cpu"))


@pytest.mark.gpu
def test_on_cuda(tiny_xtts: Path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    tts = XttsSynthesizer(tiny_xtts, options=XttsOptions(device="auto"))
    assert tts.device == "cuda"
    tts.prepare_voice(EILEEN)
    assert tts.synthesize("Hello.", EILEEN).dtype == np.float32
