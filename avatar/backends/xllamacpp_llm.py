"""The language model on the CPU from a prebuilt wheel: llama.cpp's own server engine, run in this process
by xllamacpp, behind the same interface as ``LlamaCppChat`` (the source-built llama-cpp-python).

Why: llama-cpp-python is source-only on PyPI, so a fresh clone compiled llama.cpp for minutes before its
first answer; xllamacpp ships one portable wheel. Measured against our own build in docs/models.md.

What the engine does differently, and how this module keeps the interface:
- It always opens an HTTP listener. It is bound to a **Unix socket** in a private (0700) folder, never a
  TCP port, and answers only with a random key made at load (its ``/health`` alone is open, as upstream
  has it); this module uses it for the chat template and the tokenizer, which the Python API lacks.
- Generation runs on the engine's own thread and reports each token to a callback; ``stream`` hands the
  tokens on through a queue, and closing the iterator makes the next callback return True, which stops
  generation.
- The thread counts are fixed at load: ``alone_threads`` read the prompt (a batch), ``threads`` write the
  reply one token at a time (there is no call to change them between tokens, so ``share_cores`` has
  nothing left to do); ``set_threads`` reloads the engine with new ones, keeping its KV cache. The engine
  keeps its slot's KV cache between calls, so a prompt that starts like the previous one is read only
  from where they differ (``last_reused_tokens``).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from avatar.backends.chat_context import FittedPrompt, render_chat
from avatar.backends.llamacpp_llm import GGUF_NAME, LlamaCppOptions, find_gguf
from avatar.errors import ConfigError, ModelError
from avatar.types import ChatMessage

INSTALL_HINT = "run `make install` (xllamacpp is a core dependency: `pip install -e .`)"
_DONE = object()  # the end of a stream, on its queue


class EngineError(Exception):
    """The engine answered a request with an error."""


@dataclass(frozen=True)
class EngineListener:
    """Where the engine's helper listener is and the key it answers to (tests prove it is closed without)."""

    socket_path: Path
    api_key: str = field(repr=False)

    def request(self, method: str, path: str, body: object = None, *, key: str | None = None) -> tuple[int, Any]:
        """One HTTP request over the Unix socket, with ``key`` (the listener's own unless given; "" for
        none). Returns the status and the decoded JSON body."""
        key = self.api_key if key is None else key
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
        conn = _UnixConnection(str(self.socket_path))
        try:
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def post(self, path: str, body: object) -> Any:
        status, answer = self.request("POST", path, body)
        if status != 200:
            raise EngineError(f"{path} answered {status}: {answer}")
        return answer


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class XLlamaCppChat(FittedPrompt):
    """A GGUF chat model loaded once in llama.cpp's server engine (xllamacpp). ``stream`` yields each
    token's text; closing the iterator stops generation at the next token."""

    def __init__(self, model_path: Path, options: LlamaCppOptions | None = None) -> None:
        options = options or LlamaCppOptions()
        gguf = find_gguf(model_path)
        # The wheel's llama.cpp runs its threads under OpenMP, told to wait passively when the package was
        # imported (avatar/__init__.py: why, and what a libgomp loaded before that means).
        import avatar

        try:
            import xllamacpp
        except ImportError as exc:
            raise ConfigError(f"AVATAR_LLAMACPP_RUNTIME=xllamacpp needs xllamacpp: {INSTALL_HINT}.") from exc
        self._xllamacpp: Any = xllamacpp
        self.options = options
        self.name = f"llamacpp:{gguf.parent.name if gguf.name == GGUF_NAME else gguf.stem}"
        self._gguf = gguf
        self._folder = Path(tempfile.mkdtemp(prefix="avatar-llm-"))  # mkdtemp makes it 0700: ours alone
        self._key = secrets.token_urlsafe(32)
        self._loads = 0
        # What libgomp does while a worker waits, as it read the variable when it loaded (avatar/cores.py).
        self.spins_while_waiting = avatar.OPENMP_WAIT_POLICY.strip().upper() != "PASSIVE"
        self.last_reload_seconds: float | None = None
        try:
            self._server: Any = self._start(options, warmup=True)
        except (ValueError, RuntimeError) as exc:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise ModelError(f"llama.cpp could not load {gguf}: {exc}. Is it a complete GGUF file?") from exc
        self.context_tokens = options.context_tokens or int(self._props().get("n_ctx", 0))
        self._lock = threading.Lock()  # one generation at a time: they share the slot's KV cache
        self.tokens_generated = 0  # every token generated since loading (monotonic; metrics, tests)
        self.last_generated_tokens = 0
        self.last_prompt_tokens = 0
        self.last_reused_tokens = 0
        self.last_first_token_seconds = 0.0
        self.prompt_tokens_evaluated = 0  # prompt tokens read since loading: proof of prefix reuse
        self.generating_threads = options.threads

    def _start(self, options: LlamaCppOptions, *, warmup: bool) -> Any:
        """A new engine on the model with ``options``' thread counts, listening on a new socket."""
        xllamacpp = self._xllamacpp
        self._loads += 1
        self.listener = EngineListener(self._folder / f"engine-{self._loads}.sock", self._key)
        params = xllamacpp.CommonParams()
        params.model.path = str(self._gguf)
        params.n_ctx = options.context_tokens
        params.n_parallel = 1  # one slot: one KV cache, kept between calls (the prefix reuse)
        params.cpuparams.n_threads = options.threads
        params.cpuparams_batch.n_threads = options.alone_threads
        params.hostnames = [str(self.listener.socket_path)]  # a path ending in .sock: a Unix socket
        params.api_keys = [self.listener.api_key]
        params.endpoint_metrics = params.endpoint_props = False
        params.endpoint_slots = True  # save and restore the KV cache across a reload (set_threads)
        params.slot_save_path = str(self._folder) + os.sep  # the engine joins the file name to it as text
        params.warmup = warmup  # a reload's model is already in memory: no empty run needed
        params.verbosity = -1
        # As llama-cpp-python runs it: flash attention left to "auto" decoded slower here on the CPU.
        params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.sampling.seed = options.seed if options.seed >= 0 else xllamacpp.LLAMA_DEFAULT_SEED
        return xllamacpp.Server(params)

    def set_threads(self, writing: int, reading: int) -> None:
        """New thread counts (``avatar/cores.py`` follows the free cores with them): writing the reply and
        reading the prompt. The engine fixes them at load, so it is reloaded, between two calls (a call
        in progress is waited for, a new one waits for this): the KV cache is saved first and restored
        after, so the cached prompt is not read again. About 1 s on 2 cores; the model file is in memory."""
        if writing < 1 or reading < 1:
            raise ValueError(f"thread counts must be at least 1, not {writing}/{reading}")
        if (writing, reading) == (self.options.threads, self.options.alone_threads):
            return
        with self._lock:
            started = time.perf_counter()
            saved = self.listener.request("POST", "/slots/0?action=save", {"filename": "slot.bin"})[0] == 200
            wanted = replace(self.options, threads=writing, alone_threads=reading)
            self._server = None  # the old engine goes first: two would hold the model twice
            try:
                self._server = self._start(wanted, warmup=False)
            except (ValueError, RuntimeError) as exc:
                self._server = self._start(self.options, warmup=False)
                raise ModelError(f"{self.name}: could not reload with {writing}/{reading} threads: {exc}") from exc
            finally:
                if saved:
                    self.listener.request("POST", "/slots/0?action=restore", {"filename": "slot.bin"})
                (self._folder / "slot.bin").unlink(missing_ok=True)
            self.options = wanted
            self.generating_threads = writing
            self.last_reload_seconds = time.perf_counter() - started

    def _props(self) -> dict[str, Any]:
        status, answer = self.listener.request("GET", "/props")
        return answer.get("default_generation_settings", {}) if status == 200 and isinstance(answer, dict) else {}

    # --------------------------------------------------------------------------------- prompt

    def _render(self, messages: list[ChatMessage]) -> str:
        def apply(chat: list[dict[str, str]]) -> str:
            return str(self.listener.post("/apply-template", {"messages": chat})["prompt"])

        return render_chat(apply, messages, self.name)

    def _tokens(self, messages: list[ChatMessage]) -> list[int]:
        # The template writes any BOS itself (as text): no second one; <|im_start|> & co read as one token.
        body = {"content": self._render(messages), "add_special": False, "parse_special": True}
        return [int(t) for t in self.listener.post("/tokenize", body)["tokens"]]

    # ------------------------------------------------------------------------------- generate

    def reply(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> str:
        """The assistant's next message, whole (at most ``max_new_tokens`` tokens)."""
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens)).strip()

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        """Yield each token's text as it is generated. Closing the iterator early stops generation at the
        next token."""
        if max_new_tokens < 1:
            raise ModelError(f"{self.name}: max_new_tokens must be at least 1, not {max_new_tokens}.")
        started = time.perf_counter()
        with self._lock:
            tokens = self._tokens(self.fit(messages, max_new_tokens=max_new_tokens))
            self.last_prompt_tokens = len(tokens)
            self.last_generated_tokens = 0
            pieces: queue.Queue[object] = queue.Queue()
            stop = threading.Event()
            worker = threading.Thread(
                target=self._complete, args=(tokens, max_new_tokens, pieces, stop), name="llm-stream", daemon=True
            )
            worker.start()
            try:
                while (item := pieces.get()) is not _DONE:
                    if isinstance(item, BaseException):
                        raise ModelError(f"{self.name} failed while generating: {item}") from item
                    if self.last_generated_tokens == 0:
                        self.last_first_token_seconds = time.perf_counter() - started
                    self.last_generated_tokens += 1
                    self.tokens_generated += 1
                    yield str(item)
            finally:
                stop.set()  # the next token's callback stops generation
                worker.join()

    def _complete(self, tokens: list[int], limit: int, pieces: queue.Queue[object], stop: threading.Event) -> None:
        """Generate in the engine, handing each token's text to ``pieces`` until done or ``stop``."""

        prompt_counted = False

        def on_chunk(chunk: Any) -> bool:
            nonlocal prompt_counted
            if stop.is_set():
                return True
            if isinstance(chunk, dict) and "error" in chunk:
                pieces.put(EngineError(str(chunk["error"])))
                return True
            if chunk.get("timings") and not prompt_counted:
                prompt_counted = True
                self._count_prompt(chunk["timings"])
            text = (chunk.get("choices") or [{}])[0].get("text")  # OpenAI's completion chunk
            if text:
                pieces.put(text)
            return False

        try:
            answer = self._server.handle_completions(self._request(tokens, limit, stream=True), on_chunk)
            if isinstance(answer, dict) and "error" in answer:
                pieces.put(EngineError(str(answer["error"])))
        except Exception as exc:  # noqa: BLE001 - whatever the engine raises ends the stream as a ModelError
            pieces.put(exc)
        finally:
            pieces.put(_DONE)

    def _count_prompt(self, timings: dict[str, Any]) -> None:
        self.last_reused_tokens = int(timings.get("cache_n", 0))
        self.prompt_tokens_evaluated += int(timings.get("prompt_n", 0))

    def _request(self, tokens: list[int], limit: int, *, stream: bool) -> dict[str, Any]:
        o = self.options
        return {
            "prompt": tokens,
            "n_predict": limit,
            "stream": stream,
            "cache_prompt": True,
            "temperature": o.temperature,
            "top_p": o.top_p,
            "top_k": o.top_k,
            "min_p": o.min_p,
            "repeat_penalty": o.repeat_penalty,
            "timings_per_token": stream,  # the first chunk says how much of the prompt was cached
        }

    def prefill(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> None:
        """Read the prompt of ``messages`` into the KV cache now; a ``stream`` of the same messages then
        starts at once. The one token sampled here is not kept."""
        with self._lock:
            tokens = self._tokens(self.fit(messages, max_new_tokens=max_new_tokens))
            answer = self._server.handle_completions(self._request(tokens, 1, stream=False))
            if isinstance(answer, dict) and "error" in answer:
                raise ModelError(f"{self.name} failed while reading the prompt: {answer['error']}")
            self.prompt_tokens_evaluated += int(answer.get("timings", {}).get("prompt_n", 0))

    def share_cores(self) -> None:
        """Nothing to change: the engine writes every token with ``threads`` (fixed at load)."""

    def warmup(self) -> None:
        system = [ChatMessage("system", self.options.warm_system_prompt)] if self.options.warm_system_prompt else []
        self.reply([*system, ChatMessage("user", "Hello!")], max_new_tokens=4)

    def close(self) -> None:
        server, self._server = self._server, None
        del server  # the engine stops and closes its socket when the object goes
        shutil.rmtree(self._folder, ignore_errors=True)
