"""faster-whisper on a tiny random multilingual Whisper, loaded through the production registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.backends.whisper import WhisperOptions, WhisperRecognizer
from avatar.config import Settings
from avatar.errors import InvalidRequestError, ModelError
from avatar.registry import ModelState
from avatar.types import ASR_SAMPLE_RATE, Transcript

NOISE = (np.random.default_rng(0).standard_normal(3 * ASR_SAMPLE_RATE) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def recognizer(tiny_whisper: Path) -> WhisperRecognizer:
    return WhisperRecognizer(tiny_whisper, WhisperOptions(device="cpu", vad=False, threads=2))


def test_loads_and_warms_through_the_registry(production_settings: Settings, tiny_whisper: Path, registry_for: Any):
    registry = registry_for(production_settings, "asr")
    assert registry.ready, registry.states()
    asr = registry.get("asr")
    assert isinstance(asr, WhisperRecognizer)
    assert asr.name == "faster-whisper:tiny-whisper"
    assert (asr.device, asr.compute_type) == ("cpu", "int8")  # 'auto' on a machine without CUDA
    assert asr.multilingual and not asr.english_only


def test_transcribe_returns_a_transcript_within_the_audio(recognizer: WhisperRecognizer):
    transcript = recognizer.transcribe(NOISE)
    assert isinstance(transcript, Transcript)
    assert isinstance(transcript.text, str)
    assert transcript.language in recognizer.languages  # detected: no language was given
    for segment in transcript.segments:
        assert 0.0 <= segment.start <= segment.end <= 30.0


def test_a_fixed_language_is_used_instead_of_detection(recognizer: WhisperRecognizer):
    assert recognizer.transcribe(NOISE, language="de").language == "de"
    assert recognizer.transcribe(NOISE, language="fr").language == "fr"


def test_an_unknown_language_is_refused(recognizer: WhisperRecognizer):
    with pytest.raises(InvalidRequestError, match="xx"):  # the caller's input: 422, not a model fault
        recognizer.transcribe(NOISE, language="xx")


def test_word_timestamps_are_available_to_later_stages(recognizer: WhisperRecognizer):
    # A random model's greedy decoding of noise can end at once when two logits nearly tie (the int8
    # kernels are not bit-reproducible run to run): another clip is tried then.
    words = []
    for seed in range(3):
        clip = (
            NOISE if seed == 0 else (np.random.default_rng(seed).standard_normal(NOISE.size) * 0.1).astype(np.float32)
        )
        transcript = recognizer.transcribe(clip, language="en", word_timestamps=True)
        words = [w for s in transcript.segments for w in s.words]
        if words:
            break
    assert words, "no clip gave any words"
    for word in words:  # a random model's word alignment is noise, but it is well formed
        assert isinstance(word.text, str) and 0.0 <= word.start <= word.end <= 30.0
    assert not any(s.words for s in recognizer.transcribe(clip, language="en").segments)  # off by default


def test_vad_filter_drops_silence(tiny_whisper: Path):
    asr = WhisperRecognizer(tiny_whisper, WhisperOptions(device="cpu", vad=True))
    transcript = asr.transcribe(np.zeros(2 * ASR_SAMPLE_RATE, np.float32), language="en")
    assert transcript.text == "" and transcript.segments == ()


def test_missing_tokenizer_names_the_file(tiny_whisper: Path, copy_without: Any):
    broken = copy_without(tiny_whisper, "tokenizer.json")
    with pytest.raises(ModelError, match=r"tokenizer\.json"):
        WhisperRecognizer(broken, WhisperOptions(device="cpu"))


def test_mel_bins_mismatch_names_the_preprocessor_config(tiny_whisper: Path, copy_without: Any):
    broken = copy_without(tiny_whisper, "preprocessor_config.json")
    (broken / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    with pytest.raises(ModelError, match=r"80 mel bins.*preprocessor_config\.json"):
        WhisperRecognizer(broken, WhisperOptions(device="cpu"))


def test_a_missing_model_fails_in_the_registry_with_the_reason(production_settings: Settings, registry_for: Any):
    registry = registry_for(production_settings.replace(asr_model="whisper-large-v3-turbo"), "asr")
    state = registry.states()["asr"]
    assert state["state"] == ModelState.FAILED.value
    assert "model.bin" in state["error"] and "avatar models pull whisper-large-v3-turbo" in state["error"]


@pytest.mark.gpu
def test_float16_on_cuda(tiny_whisper: Path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    asr = WhisperRecognizer(tiny_whisper, WhisperOptions(device="auto", vad=False))
    assert (asr.device, asr.compute_type) == ("cuda", "float16")
    assert isinstance(asr.transcribe(NOISE, language="en").text, str)
