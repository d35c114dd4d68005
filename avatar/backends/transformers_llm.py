"""The language model: any transformers causal LM folder that carries a chat template.

bf16 (or fp16 where bf16 is missing) on CUDA, float32 on the CPU; optionally 4-bit/8-bit weights through
bitsandbytes (the ``gpu`` extra) so a 7B model fits on a 24 GB card beside the other models. The prompt
is always the tokenizer's own chat template; when a conversation outgrows the model's context, the
oldest turns are dropped (the system prompt and the newest message are kept).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar.backends import torch_thread
from avatar.backends.chat_context import fit_messages, render_chat
from avatar.backends.device import resolve_device
from avatar.catalog import check_files, resolve_model_dir
from avatar.errors import ConfigError, ModelError
from avatar.types import ChatMessage

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZATIONS = ("none", "4bit", "8bit")
REQUIRED_FILES = ("config.json",)


@dataclass(frozen=True)
class LLMOptions:
    """How to load and sample the model. ``max_context_tokens`` 0 means the model's own limit."""

    device: str = "auto"
    dtype: str = "auto"
    threads: int = 2
    temperature: float = 0.3
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    quantization: str = "none"
    max_context_tokens: int = 0


class TransformersChat:
    """A chat model loaded once; ``stream`` runs ``generate`` in a thread and yields decoded pieces.

    On the CPU every torch call (loading, warm-up, generation) runs on the process's torch thread
    (``torch_thread``): OpenMP slows to a crawl once several threads have run torch.
    """

    def __init__(self, model_dir: Path, options: LLMOptions = LLMOptions()) -> None:
        model_dir = resolve_model_dir(model_dir)
        if not (model_dir / "config.json").is_file() and any(model_dir.glob("*.gguf")):
            raise ConfigError(
                f"{model_dir} holds a GGUF model, which the llama.cpp backend runs: set AVATAR_LLM_BACKEND=llamacpp "
                "(or auto), or point AVATAR_LLM_MODEL at a transformers folder."
            )
        check_files(model_dir, REQUIRED_FILES, "transformers chat model")
        if options.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"AVATAR_LLM_QUANTIZATION={options.quantization!r}; choose one of {', '.join(QUANTIZATIONS)}."
            )
        import torch

        self._torch = torch
        self.device = resolve_device(options.device, "AVATAR_LLM_DEVICE")
        self.dtype = _pick_dtype(options.dtype, self.device)
        self.options = options
        self.name = f"transformers:{model_dir.name}"
        load_kwargs: dict[str, Any] = {"local_files_only": True, "dtype": getattr(torch, self.dtype)}
        if options.quantization != "none":
            load_kwargs.update(_quantization_kwargs(options.quantization, self.device, self.dtype))
        self._tokenizer, model = torch_thread.run_for(self.device, self._load, model_dir, load_kwargs)
        self._model: Any = model
        self._model.eval()
        if not getattr(self._tokenizer, "chat_template", None):
            raise ModelError(f"{model_dir} has no chat template; use an instruction-tuned chat model.")
        self.context_tokens = options.max_context_tokens or _context_limit(self._model.config, self._tokenizer)
        self._eos_ids = _eos_ids(self._model.generation_config, self._tokenizer)
        pad = self._tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else self._eos_ids[0]
        self.last_generated_tokens = 0  # new tokens of the latest reply/stream (observability, tests)
        self.tokens_generated = 0  # every token generated since loading (monotonic; metrics, tests)

    def _load(self, model_dir: Path, load_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.device == "cpu":
            self._torch.set_num_threads(self.options.threads)  # OpenMP's setting is per thread: set it here
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(model_dir, **load_kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(f"transformers could not load {model_dir}: {exc}") from exc
        # A quantised model is placed by its device_map and refuses .to().
        return tokenizer, model if self.options.quantization != "none" else model.to(self.device)

    # --------------------------------------------------------------------------------- prompt

    def prompt_text(self, messages: Sequence[ChatMessage], *, max_new_tokens: int = 0) -> str:
        """The exact prompt the model is given for ``messages`` (after fitting them into the context)."""
        return str(self._render(self.fit(messages, max_new_tokens=max_new_tokens), tokenize=False))

    def fit(self, messages: Sequence[ChatMessage], *, max_new_tokens: int = 0) -> list[ChatMessage]:
        """``messages`` without their oldest turns when prompt + reply would not fit the context."""
        budget = self.context_tokens - max_new_tokens
        return fit_messages(messages, self._count, budget, self.name, self.context_tokens)

    def _count(self, messages: list[ChatMessage]) -> int:
        return len(self._render(messages, tokenize=True, return_dict=True)["input_ids"])

    def _render(self, messages: list[ChatMessage], **kwargs: Any) -> Any:
        def apply(chat: list[dict[str, str]]) -> Any:
            return self._tokenizer.apply_chat_template(chat, add_generation_prompt=True, **kwargs)

        return render_chat(apply, messages, self.name)

    def _inputs(self, messages: Sequence[ChatMessage], max_new_tokens: int) -> dict[str, Any]:
        fitted = self.fit(messages, max_new_tokens=max_new_tokens)
        encoded = self._render(fitted, return_tensors="pt", return_dict=True)
        return {k: v.to(self._model.device) for k, v in encoded.items()}

    def _generate_kwargs(self, max_new_tokens: int) -> dict[str, Any]:
        sample = self.options.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": sample,
            "repetition_penalty": self.options.repetition_penalty,
            "pad_token_id": self._pad_id,
            "eos_token_id": self._eos_ids,
        }
        if sample:
            kwargs.update(temperature=self.options.temperature, top_p=self.options.top_p)
        return kwargs

    # ------------------------------------------------------------------------------- generate

    def reply(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> str:
        """The assistant's next message, whole (at most ``max_new_tokens`` tokens)."""
        return torch_thread.run_for(self.device, self._reply, messages, max_new_tokens)

    def _reply(self, messages: Sequence[ChatMessage], max_new_tokens: int) -> str:
        inputs = self._inputs(messages, max_new_tokens)
        try:
            with self._torch.inference_mode():
                out = self._model.generate(**inputs, **self._generate_kwargs(max_new_tokens))
        except Exception as exc:  # CUDA OOM, a bad generation config...: the pipeline falls back
            raise ModelError(f"{self.name} failed while generating: {exc}") from exc
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        self.last_generated_tokens = int(new_tokens.shape[0])
        self.tokens_generated += self.last_generated_tokens
        return str(self._tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()

    def prefill(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> None:
        """Nothing: this backend keeps no prompt cache between calls (on a GPU the prompt is read in
        milliseconds)."""

    def share_cores(self) -> None:
        """Nothing to give back: torch's thread pool is sized once (AVATAR_THREADS), and on a GPU the
        model does not compete with the face renderer for CPU cores."""

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        """Yield text pieces as they are generated. Closing the iterator early stops generation, so a
        caller that has heard enough (two sentences) pays for no more tokens."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        inputs = self._inputs(messages, max_new_tokens)
        prompt_length = int(inputs["input_ids"].shape[1])
        streamer = _token_streamer(self._tokenizer)
        cancelled = threading.Event()
        failure: list[BaseException] = []
        owner = self

        class _Cancelled(StoppingCriteria):
            """Checked after every token: counts them, and stops once the consumer has gone."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                owner.tokens_generated += int(input_ids.shape[1]) - prompt_length - owner.last_generated_tokens
                owner.last_generated_tokens = int(input_ids.shape[1]) - prompt_length
                return cancelled.is_set()

        def run() -> None:
            try:
                with self._torch.inference_mode():
                    self._model.generate(
                        **inputs,
                        **self._generate_kwargs(max_new_tokens),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    )
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, raised there
                failure.append(exc)
                streamer.end()

        self.last_generated_tokens = 0
        if self.device == "cpu" and not torch_thread.on_torch_thread():
            done: Future[None] = torch_thread.submit(run)
            wait = done.result
        else:  # on a GPU the generation need not share the torch thread (XTTS may use the card meanwhile);
            # a stream read on the torch thread itself cannot queue its generation behind itself there.
            worker = threading.Thread(target=run, name="llm-generate", daemon=True)
            worker.start()
            wait = worker.join
        ended = False
        try:
            for piece in streamer:
                if piece:
                    yield piece
            ended = True
        finally:
            cancelled.set()
            if not ended:  # closed early: read up to the end signal, which generate() sends as it stops
                for _ in streamer:
                    pass
            wait()
        if failure:
            raise ModelError(f"{self.name} failed while generating: {failure[0]}") from failure[0]

    def warmup(self) -> None:
        self.reply([ChatMessage("user", "Hello!")], max_new_tokens=4)

    def close(self) -> None:
        del self._model
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


def _token_streamer(tokenizer: Any) -> Any:
    """A TextIteratorStreamer that hands on each token's text as soon as it is generated.

    The stock one holds a word back until the space after it arrives, i.e. until the next token (with
    tokenizers whose words carry their leading space): a clause break such as ``skyscrapers,`` would
    reach the pipeline one token late. Only a character still split across tokens is held back.
    """
    from transformers import TextIteratorStreamer

    class EveryToken(TextIteratorStreamer):
        def put(self, value: Any) -> None:
            if len(value.shape) > 1:
                value = value[0]  # batch size 1: our prompts are one conversation
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            text = str(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
            if text.endswith("\ufffd"):
                return  # the last token ends inside a multi-byte character; its rest comes next
            self.on_finalized_text(text[self.print_len :])
            self.print_len = len(text)

    return EveryToken(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)


def _pick_dtype(setting: str, device: str) -> str:
    if setting not in DTYPES:
        raise ConfigError(f"AVATAR_LLM_DTYPE={setting!r}; choose one of {', '.join(DTYPES)}.")
    if setting != "auto":
        return setting
    if device == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def _quantization_kwargs(quantization: str, device: str, dtype: str) -> dict[str, Any]:
    if device != "cuda":
        raise ConfigError(
            f"AVATAR_LLM_QUANTIZATION={quantization} needs a CUDA GPU (bitsandbytes); set it to none on the CPU."
        )
    try:
        import bitsandbytes  # noqa: F401 - only checks that the gpu extra is installed
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise ConfigError(
            f"AVATAR_LLM_QUANTIZATION={quantization} needs bitsandbytes: install the gpu extra "
            "(pip install 'avatar[gpu]')."
        ) from exc
    if quantization == "4bit":
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, dtype)
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "device_map": {"": 0}}


def _context_limit(config: Any, tokenizer: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return int(limit) if 0 < int(limit) < 1_000_000 else 4096


def _eos_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """Every id that ends the assistant's turn: the model's generation config may name the document end
    (<|endoftext|>) and the tokenizer the turn end (<|im_end|>), or the other way round."""
    ids: list[int] = []
    configured = getattr(generation_config, "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ModelError("The model names no end-of-turn token (eos_token_id); its tokenizer config is incomplete.")
    return ids
