"""The language model: any transformers causal LM folder that carries a chat template."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar.backends.base import ChatMessage
from avatar.backends.device import resolve_device
from avatar.errors import ModelError

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LLMOptions:
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 2
    temperature: float = 0.3
    top_p: float = 0.9
    repetition_penalty: float = 1.1


class TransformersChat:
    """A chat model loaded once; ``stream`` runs ``generate`` in a thread and yields decoded pieces."""

    def __init__(self, model_dir: Path, options: LLMOptions = LLMOptions()) -> None:
        if not (model_dir / "config.json").is_file():
            raise ModelError(
                f"No transformers model in {model_dir} (config.json missing). For the embedded model run "
                "`avatar models prepare`; for another, `avatar models pull` it (README 'Production models')."
            )
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.device = resolve_device(options.device, "AVATAR_LLM_DEVICE")
        self.dtype = _pick_dtype(options.dtype, self.device)
        self.options = options
        self.name = f"transformers:{model_dir.name}"
        if self.device == "cpu":
            torch.set_num_threads(options.threads)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            self._model = AutoModelForCausalLM.from_pretrained(
                model_dir, local_files_only=True, dtype=getattr(torch, self.dtype)
            ).to(self.device)
        except (OSError, ValueError) as exc:
            raise ModelError(f"transformers could not load {model_dir}: {exc}") from exc
        self._model.eval()
        if not getattr(self._tokenizer, "chat_template", None):
            raise ModelError(f"{model_dir} has no chat template; use an instruction-tuned chat model.")

    def _inputs(self, messages: Sequence[ChatMessage]) -> dict[str, Any]:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        encoded = self._tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return {k: v.to(self.device) for k, v in encoded.items()}

    def _generate_kwargs(self, max_new_tokens: int) -> dict[str, Any]:
        sample = self.options.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": sample,
            "repetition_penalty": self.options.repetition_penalty,
            "pad_token_id": self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        }
        if sample:
            kwargs.update(temperature=self.options.temperature, top_p=self.options.top_p)
        return kwargs

    def reply(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> str:
        inputs = self._inputs(messages)
        with self._torch.inference_mode():
            out = self._model.generate(**inputs, **self._generate_kwargs(max_new_tokens))
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        return str(self._tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        """Yield text pieces as they are generated. Closing the iterator early stops generation, so a
        caller that has heard enough (two sentences) pays for no more tokens."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        inputs = self._inputs(messages)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
        cancelled = threading.Event()
        failure: list[BaseException] = []

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
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
            except BaseException as exc:  # re-raised in the consuming thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="llm-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            cancelled.set()
            for _ in streamer:  # drain so generate() is never blocked on a full queue
                pass
            worker.join()
        if failure:
            raise failure[0]

    def warmup(self) -> None:
        self.reply([ChatMessage("user", "Hello!")], max_new_tokens=4)

    def close(self) -> None:
        del self._model
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


def _pick_dtype(setting: str, device: str) -> str:
    if setting not in DTYPES:
        raise ModelError(f"AVATAR_LLM_DTYPE={setting!r}; choose one of {', '.join(DTYPES)}.")
    if setting != "auto":
        return setting
    if device == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"
