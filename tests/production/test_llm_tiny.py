"""transformers chat backend on a tiny random Qwen2 with a trained tokenizer and a ChatML template."""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from avatar.backends import torch_thread
from avatar.backends.transformers_llm import LLMOptions, TransformersChat, _token_streamer
from avatar.config import Settings
from avatar.errors import ConfigError, ModelError
from avatar.types import ChatMessage

SYSTEM = ChatMessage("system", "You are Eileen, an astronaut. Reply in one short sentence.")
HISTORY = [
    ChatMessage("user", "Where did you fly?"),
    ChatMessage("assistant", "On the space shuttle."),
]
QUESTION = ChatMessage("user", "What did you see from orbit?")


@pytest.fixture(scope="module")
def chat(tiny_qwen: Path) -> TransformersChat:
    return TransformersChat(tiny_qwen, LLMOptions(device="cpu", temperature=0.0, threads=2))


def test_loads_and_warms_through_the_registry(production_settings: Settings, tiny_qwen: Path, registry_for: Any):
    registry = registry_for(production_settings, "llm")
    assert registry.ready, registry.states()
    llm = registry.get("llm")
    assert isinstance(llm, TransformersChat)
    assert (llm.device, llm.dtype) == ("cpu", "float32")
    assert llm.context_tokens == 256  # the model's max_position_embeddings


def test_the_prompt_is_the_chat_template_with_system_prompt_and_history(chat: TransformersChat):
    prompt = chat.prompt_text([SYSTEM, *HISTORY, QUESTION])
    expected = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in [SYSTEM, *HISTORY, QUESTION])
    assert prompt == expected + "<|im_start|>assistant\n"


def test_reply_is_text_within_the_token_limit(chat: TransformersChat):
    reply = chat.reply([SYSTEM, *HISTORY, QUESTION], max_new_tokens=12)
    assert isinstance(reply, str)
    assert 1 <= chat.last_generated_tokens <= 12


def test_stream_yields_the_same_text_as_reply(chat: TransformersChat):
    messages = [SYSTEM, *HISTORY, QUESTION]
    whole = chat.reply(messages, max_new_tokens=16)  # greedy: both generate the same tokens
    pieces = list(chat.stream(messages, max_new_tokens=16))
    assert whole and len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces).strip() == whole


def test_the_model_computes_on_the_torch_thread_whoever_calls(chat: TransformersChat, module_threads: Any):
    with module_threads(chat._model) as seen:
        chat.reply([SYSTEM, QUESTION], max_new_tokens=4)
        with ThreadPoolExecutor(1) as other:
            other.submit(lambda: list(chat.stream([SYSTEM, QUESTION], max_new_tokens=4))).result()
    assert seen == {"avatar-torch_0"}
    # Read on the torch thread itself, a stream cannot queue its generation there: it still completes.
    assert "".join(torch_thread.run(lambda: list(chat.stream([SYSTEM, QUESTION], max_new_tokens=4))))


def test_each_token_is_handed_on_as_it_comes(chat: TransformersChat):
    """No word is held back until the next one starts; only a character split across tokens waits."""
    import queue

    import torch

    tokenizer = chat._tokenizer
    streamer = _token_streamer(tokenizer)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    text = "The view, \U0001f680 wow"
    ids = tokenizer.encode(text, add_special_tokens=False)
    received = []
    for k, token in enumerate(ids):
        streamer.put(torch.tensor([token]))
        so_far = tokenizer.decode(ids[: k + 1])
        try:
            piece = streamer.text_queue.get_nowait()
        except queue.Empty:
            assert so_far.endswith("\ufffd")  # held: the rocket's bytes are not all there yet
            continue
        received.append(piece)
        assert "".join(received) == so_far  # everything decoded so far, nothing held back
    streamer.end()
    assert "".join(received) + "".join(iter(streamer)) == text
    assert len(ids) > len(received) > 4  # the emoji took several byte tokens


def test_closing_the_stream_early_stops_generation(chat: TransformersChat):
    messages = [SYSTEM, QUESTION]
    chat.reply(messages, max_new_tokens=120)
    full = chat.last_generated_tokens
    assert full >= 60, "the tiny model's greedy reply must be long for this test to mean anything"
    before = chat.tokens_generated
    stream = chat.stream(messages, max_new_tokens=120)
    next(stream)
    assert isinstance(stream, Generator)  # what a stream is: closing it stops the model
    stream.close()
    assert chat.last_generated_tokens < 20
    stopped_at = chat.tokens_generated
    assert 0 < stopped_at - before < 20
    time.sleep(0.2)
    assert chat.tokens_generated == stopped_at  # nothing runs on after the close


def test_the_oldest_turns_are_dropped_when_the_context_is_full(chat: TransformersChat, long_history: list[ChatMessage]):
    messages = [SYSTEM, *long_history, QUESTION]
    fitted = chat.fit(messages, max_new_tokens=40)
    assert fitted[0] == SYSTEM and fitted[-1] == QUESTION
    assert len(fitted) < len(messages)
    assert fitted[1:-1] == long_history[len(long_history) - (len(fitted) - 2) :]  # the newest turns stay
    prompt = chat.prompt_text(messages, max_new_tokens=40)
    assert "question 0:" not in prompt and "question 11:" in prompt
    assert isinstance(chat.reply(messages, max_new_tokens=40), str)  # fits: no position overflow


def test_a_prompt_that_cannot_fit_is_a_model_error(chat: TransformersChat):
    with pytest.raises(ModelError, match="context of 256 tokens"):
        chat.fit([SYSTEM, ChatMessage("user", "fox " * 400)], max_new_tokens=10)


def test_generation_failures_are_model_errors(chat: TransformersChat):
    with pytest.raises(ModelError, match="failed while generating"):
        chat.reply([QUESTION], max_new_tokens=-1)
    with pytest.raises(ModelError, match="failed while generating"):
        list(chat.stream([QUESTION], max_new_tokens=-1))


def test_missing_config_names_the_file(tiny_qwen: Path, copy_without: Any):
    broken = copy_without(tiny_qwen, "config.json")
    with pytest.raises(ModelError, match=r"config\.json"):
        TransformersChat(broken, LLMOptions(device="cpu"))


def test_a_model_without_chat_template_is_refused(tiny_qwen: Path, copy_without: Any):
    plain = copy_without(tiny_qwen, "chat_template.jinja")
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no chat template"):
        TransformersChat(plain, LLMOptions(device="cpu"))


def test_quantization_needs_cuda(tiny_qwen: Path):
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        TransformersChat(tiny_qwen, LLMOptions(device="cpu", quantization="4bit"))
    with pytest.raises(ConfigError, match="choose one of"):
        TransformersChat(tiny_qwen, LLMOptions(device="cpu", quantization="3bit"))


@pytest.mark.gpu
def test_bfloat16_on_cuda(tiny_qwen: Path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    chat = TransformersChat(tiny_qwen, LLMOptions(device="auto", temperature=0.0))
    assert chat.device == "cuda" and chat.dtype in ("bfloat16", "float16")
    assert "".join(chat.stream([SYSTEM, QUESTION], max_new_tokens=8)).strip() == chat.reply(
        [SYSTEM, QUESTION], max_new_tokens=8
    )
