"""The language model on the CPU: a GGUF chat model run by llama.cpp (through llama-cpp-python).

Why llama.cpp and not transformers or CTranslate2 on the CPU: measured in the running service, it
writes the first clause 2-5x sooner with a quarter of the memory (docs/models.md).

One ``Llama`` object keeps the attention (KV) cache of the latest prompt and reply; each call evaluates
only the tokens after the longest prefix it shares with the previous one. Every prompt starts with the
persona's system prompt and then the session's history, oldest first, so the system prompt is read
once and a turn costs only what is new. The thread count follows what else runs: nothing while the
prompt is read and the first piece of the reply written (speech recognition has finished, the face has
nothing to draw yet), so every core (``alone_threads``); once the first piece is handed on
(``share_cores``), the face renderer draws beside the model and generation drops to ``threads`` (ggml's
workers wait for each other by spinning, and a worker sharing a core with the renderer stalls them all).
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from avatar.backends.chat_context import FittedPrompt, render_chat
from avatar.catalog import missing_model_message, resolve_model_dir
from avatar.errors import ConfigError, ModelError
from avatar.types import ChatMessage

log = logging.getLogger(__name__)

GGUF_NAME = "model.gguf"
INSTALL_HINT = "run `make install` (it builds llama-cpp-python for this CPU once and caches the wheel)"


@dataclass(frozen=True)
class LlamaCppOptions:
    """How to run and sample the model. ``context_tokens`` 0 means the model's trained context (large:
    the KV cache is allocated for all of it); ``seed`` -1 draws a new one per process; the default
    persona's ``warm_system_prompt`` is read during warm-up, so the first turn finds it cached."""

    threads: int = 1  # generating beside the face renderer
    alone_threads: int = 2  # reading the prompt and writing the first piece, with nothing else running
    context_tokens: int = 2048
    temperature: float = 0.3
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int = -1
    warm_system_prompt: str = ""


def find_gguf(path: Path) -> Path:
    """The GGUF file a model setting names: the file itself, or ``model.gguf`` (or the only ``*.gguf``)
    in the folder. Missing → ModelError naming the file and how to get it."""
    path = resolve_model_dir(path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / GGUF_NAME).is_file():
            return path / GGUF_NAME
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        if found:
            raise ConfigError(
                f"{path} holds several GGUF files ({', '.join(p.name for p in found)}): set AVATAR_LLM_MODEL to one."
            )
    raise ModelError(missing_model_message(path, [GGUF_NAME], "GGUF chat model (AVATAR_LLM_BACKEND=llamacpp)"))


class LlamaCppChat(FittedPrompt):
    """A GGUF chat model loaded once. ``stream`` generates in the calling thread, one token per step, so
    closing the iterator stops generation before the next token."""

    def __init__(self, model_path: Path, options: LlamaCppOptions = LlamaCppOptions()) -> None:
        gguf = find_gguf(model_path)
        try:
            import llama_cpp
        except ImportError as exc:  # an environment installed without it, or a failed build
            raise ConfigError(f"AVATAR_LLM_BACKEND=llamacpp needs llama-cpp-python: {INSTALL_HINT}.") from exc
        self._lib = llama_cpp
        self.options = options
        self.name = f"llamacpp:{gguf.parent.name if gguf.name == GGUF_NAME else gguf.stem}"
        seed = options.seed if options.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(gguf),
                n_ctx=options.context_tokens,
                n_threads=options.alone_threads,
                n_threads_batch=options.alone_threads,
                seed=seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {gguf}: {exc}. Is it a complete GGUF file?") from exc
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            self._llm.close()
            raise ModelError(f"{gguf} has no chat template; use an instruction-tuned chat model.")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._format: Any = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self._llm.token_eos()),
            bos_token=self._token_text(self._llm.token_bos()),
        )
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self.context_tokens = int(self._llm.n_ctx())
        self._lock = threading.Lock()  # one generation at a time: they share the KV cache
        self.tokens_generated = 0  # every token generated since loading (monotonic; metrics, tests)
        self.last_generated_tokens = 0  # of the latest reply/stream
        self.last_prompt_tokens = 0  # the latest prompt's length, and how much of it was already cached
        self.last_reused_tokens = 0
        self.last_first_token_seconds = 0.0  # call to first token of the latest stream (prompt reading)
        self.generating_threads = options.alone_threads  # what the next token is generated with
        self._applied = (options.alone_threads, options.alone_threads)  # (generating, reading) in the context
        self.spins_while_waiting = True  # ggml's own thread pool: its workers spin at each barrier (avatar/cores.py)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(self._llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    # --------------------------------------------------------------------------------- prompt

    def _render(self, messages: list[ChatMessage]) -> str:
        return render_chat(lambda chat: str(self._format(messages=chat).prompt), messages, self.name)

    def _tokens(self, messages: list[ChatMessage]) -> list[int]:
        # The template writes any BOS itself (as text); special=True reads <|im_start|> & co as one token.
        return list(self._llm.tokenize(self._render(messages).encode("utf-8"), add_bos=False, special=True))

    @property
    def prompt_tokens_evaluated(self) -> int:
        """Prompt tokens llama.cpp has evaluated since loading (its own counter): proof of prefix reuse."""
        return int(self._lib.llama_perf_context(self._llm.ctx).n_p_eval)

    # ------------------------------------------------------------------------------- generate

    def reply(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> str:
        """The assistant's next message, whole (at most ``max_new_tokens`` tokens)."""
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens)).strip()

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        """Yield each token's text as it is generated (only a character still split across tokens is
        held back). Closing the iterator early stops generation before the next token."""
        if max_new_tokens < 1:
            raise ModelError(f"{self.name}: max_new_tokens must be at least 1, not {max_new_tokens}.")
        started = time.perf_counter()
        with self._lock:
            tokens = self._tokens(self.fit(messages, max_new_tokens=max_new_tokens))
            self.last_prompt_tokens = len(tokens)
            self.last_reused_tokens = _common_prefix(self._llm.input_ids[: self._llm.n_tokens], tokens)
            self.last_generated_tokens = 0
            self._use_threads(self.options.alone_threads)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            steps = self._generate(tokens)
            try:
                for token in steps:
                    if self.last_generated_tokens == 0:
                        self.last_first_token_seconds = time.perf_counter() - started
                    if self._ends_turn(token):
                        break
                    self.last_generated_tokens += 1
                    self.tokens_generated += 1
                    piece = decoder.decode(bytes(self._llm.detokenize([token])))
                    if piece:
                        yield piece
                    if self.last_generated_tokens >= max_new_tokens:
                        break
            except (RuntimeError, ValueError) as exc:  # llama_decode failures surface as RuntimeError
                raise ModelError(f"{self.name} failed while generating: {exc}") from exc
            finally:
                steps.close()
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail

    def prefill(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> None:
        """Read the prompt of ``messages`` into the KV cache now; a ``stream`` of the same messages then
        samples its first token at once (llama-cpp-python reuses a cached prompt whole). The token sampled
        here is not kept."""
        with self._lock:
            tokens = self._tokens(self.fit(messages, max_new_tokens=max_new_tokens))
            self._use_threads(self.options.alone_threads)
            steps = self._generate(tokens)
            try:
                next(steps)  # reads the prompt, then samples one token
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"{self.name} failed while reading the prompt: {exc}") from exc
            finally:
                steps.close()

    def _generate(self, tokens: list[int]) -> Generator[int, None, None]:
        o = self.options
        steps: Generator[int, None, None] = self._llm.generate(
            tokens, top_k=o.top_k, top_p=o.top_p, min_p=o.min_p, temp=o.temperature, repeat_penalty=o.repeat_penalty
        )
        return steps

    def share_cores(self) -> None:
        """The rest of this reply is generated beside other work (the face being drawn): fewer threads.
        Called between two tokens, while the stream waits to be asked for the next."""
        self._use_threads(self.options.threads)

    def set_threads(self, writing: int, reading: int) -> None:
        """New thread counts (``avatar/cores.py`` follows the free cores with them): writing the reply
        beside other work, and reading the prompt. Taken up by the next call, or by this one at its next
        hand-back, on the generating thread itself: llama.cpp's context is never touched from here."""
        if writing < 1 or reading < 1:
            raise ValueError(f"thread counts must be at least 1, not {writing}/{reading}")
        self.options = replace(self.options, threads=writing, alone_threads=reading)

    def _use_threads(self, generating: int) -> None:
        wanted = (generating, self.options.alone_threads)
        if wanted != self._applied:
            self._lib.llama_set_n_threads(self._llm.ctx, *wanted)
            self._applied = wanted
        self.generating_threads = generating

    def _ends_turn(self, token: int) -> bool:
        """End of generation, or any control token (a model that opens a new turn, <|im_start|>, has
        finished its own)."""
        lib, vocab = self._lib, self._vocab
        return bool(lib.llama_vocab_is_eog(vocab, token) or lib.llama_vocab_is_control(vocab, token))

    def warmup(self) -> None:
        system = [ChatMessage("system", self.options.warm_system_prompt)] if self.options.warm_system_prompt else []
        self.reply([*system, ChatMessage("user", "Hello!")], max_new_tokens=4)

    def close(self) -> None:
        self._llm.close()


def _common_prefix(cached: Sequence[int], tokens: Sequence[int]) -> int:
    n = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n
