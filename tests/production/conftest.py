"""Tiny, randomly initialised production models, built once per session in a temporary models folder.

Each is a real model of its kind, loaded by the real library through the production backend class:
a Whisper converted to CTranslate2 (faster-whisper), a Qwen2 with a trained byte-level BPE tokenizer
and a ChatML template (transformers), and an XTTS with the tokenizer coqui-tts ships (coqui-tts). Their
output is noise, but every code path (loading, cloning, streaming, decoding) is the production one.
Nothing here downloads anything, and no weights are committed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from avatar.config import PROJECT_ROOT, Settings, load_settings
from avatar.registry import ModelRegistry

CORPUS = [
    "hello there, how are you today?",
    "the quick brown fox jumps over the lazy dog.",
    "talk to a photo and it answers you in a voice.",
    "what is the weather like in paris this morning?",
    "i am an astronaut and i have flown on the space shuttle.",
] * 20

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

VOICE_SAMPLE = PROJECT_ROOT / "assets" / "personas" / "eileen" / "voice.wav"


def _byte_level_bpe(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


# ----------------------------------------------------------------------------------------- Whisper


def build_tiny_whisper(out: Path, work: Path) -> Path:
    """A multilingual Whisper (d_model 64, 2+2 layers, 80 mels) in CTranslate2 format for faster-whisper.

    Whisper's vocabulary is laid out as: text tokens, <|endoftext|>, <|startoftranscript|>, the language
    tokens, task tokens, <|notimestamps|>, then the timestamp tokens (added by the converter). CTranslate2
    treats a vocabulary as multilingual when it holds the empty token that sits just before
    <|endoftext|> in OpenAI's multilingual vocabulary, so the last text slot is made that token.
    """
    import ctranslate2
    import torch
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    from transformers import PreTrainedTokenizerFast, WhisperConfig, WhisperForConditionalGeneration

    tokenizer = _byte_level_bpe(300)
    tokenizer.add_tokens(["~empty~"])  # the last text slot; becomes "" in the CTranslate2 vocabulary
    languages = list(_LANGUAGE_CODES)
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{code}|>" for code in languages],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens(specials)
    ids = {token: tokenizer.token_to_id(token) for token in specials}
    hf = work / "whisper-hf"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.save_pretrained(hf)
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=tokenizer.get_vocab_size() + 1501,  # + the timestamp tokens <|0.00|> … <|30.00|>
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=eot,
        bos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=[],
        begin_suppress_tokens=[eot],
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(hf)
    (hf / "preprocessor_config.json").write_text(
        json.dumps({"feature_size": 80, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400})
    )
    converter = ctranslate2.converters.TransformersConverter(
        str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]
    )
    converter.convert(str(out), force=True)
    vocabulary = json.loads((out / "vocabulary.json").read_text())
    vocabulary[eot - 1] = ""
    (out / "vocabulary.json").write_text(json.dumps(vocabulary))
    # transformers 5 drops generation_config.lang_to_id on load, so the converter records no language
    # ids; write them as a real conversion has them.
    ct2_config = json.loads((out / "config.json").read_text())
    ct2_config["lang_ids"] = sorted(ids[f"<|{code}|>"] for code in languages)
    (out / "config.json").write_text(json.dumps(ct2_config))
    return out


# ------------------------------------------------------------------------------------------- Qwen2


def build_tiny_qwen(out: Path) -> Path:
    """A Qwen2 causal LM (hidden 64, 2 layers, 256 positions) with a ChatML chat template."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = _byte_level_bpe(400)
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    fast.save_pretrained(out)
    config = Qwen2Config(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,  # tied random embeddings make greedy decoding repeat one token
        bos_token_id=tokenizer.token_to_id("<|endoftext|>"),
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = [tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")]
    model.save_pretrained(out)
    return out


# -------------------------------------------------------------------------------------------- XTTS


def build_tiny_xtts(out: Path) -> Path:
    """An XTTS with a 1-layer, 64-channel GPT and at most 6 audio tokens per sentence (about 0.3 s).

    The vocabulary is the tortoise tokenizer coqui-tts ships plus the [START] and [en] tokens XTTS uses;
    the HiFi-GAN decoder and the speaker encoder have fixed sizes (hence ~92 MB).
    """
    import torch
    import TTS
    from tokenizers import Tokenizer
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.models.xtts import Xtts

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer.from_file(str(Path(TTS.__file__).parent / "tts/utils/assets/tortoise/tokenizer.json"))
    tokenizer.add_special_tokens(["[START]", "[en]"])
    tokenizer.save(str(out / "vocab.json"))
    args = XttsArgs(
        gpt_layers=1,
        gpt_n_model_channels=64,
        gpt_n_heads=2,
        decoder_input_dim=64,
        gpt_max_audio_tokens=9,  # less 3 reserved: 6 tokens x 1024 samples at 22.05 kHz
        gpt_max_text_tokens=200,
        gpt_number_text_tokens=tokenizer.get_vocab_size(),
        gpt_start_text_token=tokenizer.token_to_id("[START]"),
        gpt_stop_text_token=tokenizer.token_to_id("[STOP]"),
    )
    # HiFi-GAN is full size and slow on the CPU: short clips and 6 s of reference keep the tests quick.
    config = XttsConfig(model_args=args, languages=["en"], gpt_cond_len=6, gpt_cond_chunk_len=6, max_ref_len=6)
    torch.manual_seed(0)
    model = Xtts(config)
    torch.save({"model": model.state_dict()}, out / "model.pth")
    config.save_json(str(out / "config.json"))
    return out


# -------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def production_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary models folder the tiny production models are built into."""
    return tmp_path_factory.mktemp("models_cache")


@pytest.fixture(scope="session")
def tiny_whisper(production_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(production_models / "tiny-whisper", tmp_path_factory.mktemp("whisper-work"))


@pytest.fixture(scope="session")
def tiny_qwen(production_models: Path) -> Path:
    return build_tiny_qwen(production_models / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_xtts(production_models: Path) -> Path:
    pytest.importorskip("TTS", reason="coqui-tts is not installed (the xtts extra): XTTS tests need it")
    return build_tiny_xtts(production_models / "tiny-xtts")


@pytest.fixture(scope="session")
def production_settings(production_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings that select the tiny production models, on the CPU, isolated from the environment."""
    return load_settings(
        {},
        models_dir=production_models,
        output_dir=tmp_path_factory.mktemp("results"),
        asr_model="tiny-whisper",
        asr_device="cpu",
        asr_vad=False,
        llm_model="tiny-qwen2",
        llm_device="cpu",
        llm_temperature=0.0,
        tts_backend="xtts",
        tts_model="tiny-xtts",
        threads=2,
    )


@pytest.fixture
def copy_without(tmp_path: Path) -> Any:
    """``copy_without(folder, *names)``: a copy of a model folder lacking ``names`` (missing-file tests)."""

    def copy(folder: Path, *names: str) -> Path:
        target = tmp_path / f"{folder.name}-without-{'-'.join(names)}"
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns(*names))
        return target

    return copy


@pytest.fixture
def registry_for() -> Iterator[Any]:
    """Load models through the production registry; closes them after the test."""
    from avatar.backends.factory import model_specs

    registries: list[ModelRegistry] = []

    def load(settings: Settings, *kinds: str) -> ModelRegistry:
        registry = ModelRegistry(model_specs(settings, kinds))
        registry.load_all()
        registries.append(registry)
        return registry

    yield load
    for registry in registries:
        registry.close()


@pytest.fixture
def module_threads() -> Any:
    """``with module_threads(model) as seen:`` collects the names of the threads in which any of the
    model's torch modules ran (forward pre-hooks on every submodule, removed afterwards)."""

    @contextlib.contextmanager
    def watch(model: Any) -> Iterator[set[str]]:
        seen: set[str] = set()
        hooks = [
            module.register_forward_pre_hook(lambda *_: seen.add(threading.current_thread().name))
            for module in model.modules()
        ]
        try:
            yield seen
        finally:
            for hook in hooks:
                hook.remove()
        assert seen, "no module of the model ran"

    return watch
