"""Fitting a conversation into a model's context window, the same way for every chat backend.

The system prompt and the newest message always stay; the oldest turns go first. Keeping the front of
the conversation unchanged for as long as it fits also keeps it a stable prefix for a backend that
reuses the computation of a prompt's unchanged start (llama.cpp).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from avatar.errors import ModelError
from avatar.types import ChatMessage

log = logging.getLogger(__name__)

T = TypeVar("T")


def fit_messages(
    messages: Sequence[ChatMessage], count: Callable[[list[ChatMessage]], int], budget: int, model: str, context: int
) -> list[ChatMessage]:
    """``messages`` without their oldest turns while ``count`` (the prompt's tokens) exceeds ``budget``.

    ``model`` and ``context`` (its context size) name the model in the error raised when even the system
    prompt and the newest message alone do not fit.
    """
    kept = list(messages)
    while count(kept) > budget:
        droppable = [i for i, m in enumerate(kept[:-1]) if m.role != "system"]
        if not droppable:
            raise ModelError(
                f"The prompt does not fit in {model}'s context of {context} tokens even without history: "
                "shorten the system prompt or the message."
            )
        del kept[droppable[0]]
    if len(kept) < len(messages):
        log.info("dropped %d old messages to fit the context", len(messages) - len(kept))
    return kept


def render_chat(render: Callable[[list[dict[str, str]]], T], messages: Sequence[ChatMessage], model: str) -> T:
    """``render`` (a chat template) applied to ``messages``. Some templates (Gemma's) refuse a system
    role: then the system prompt opens the first user message instead."""
    chat = [{"role": m.role, "content": m.content} for m in messages]
    try:
        return render(chat)
    except Exception as exc:  # jinja2's TemplateError, or whatever the template raises
        if not chat or chat[0]["role"] != "system" or len(chat) < 2:
            raise ModelError(f"{model}'s chat template failed: {exc}") from exc
        merged = [{"role": chat[1]["role"], "content": f"{chat[0]['content']}\n\n{chat[1]['content']}"}]
        return render(merged + chat[2:])


class FittedPrompt:
    """The prompt of a chat backend that renders a chat (``_render``) and counts its tokens (``_tokens``):
    the messages fitted into ``context_tokens`` with room for the reply, then rendered."""

    name: str
    context_tokens: int

    def _tokens(self, messages: list[ChatMessage]) -> list[int]:
        raise NotImplementedError

    def _render(self, messages: list[ChatMessage]) -> str:
        raise NotImplementedError

    def prompt_text(self, messages: Sequence[ChatMessage], *, max_new_tokens: int = 0) -> str:
        """The exact prompt the model is given for ``messages`` (after fitting them into the context)."""
        return self._render(self.fit(messages, max_new_tokens=max_new_tokens))

    def fit(self, messages: Sequence[ChatMessage], *, max_new_tokens: int = 0) -> list[ChatMessage]:
        """``messages`` without their oldest turns when prompt + reply would not fit the context."""
        budget = self.context_tokens - max_new_tokens
        return fit_messages(messages, lambda kept: len(self._tokens(kept)), budget, self.name, self.context_tokens)
