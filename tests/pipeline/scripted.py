"""A ChatModel (our own protocol) that replies with a fixed text, for tests of our streaming logic.

Imported as ``from scripted import ScriptedChat``: pytest puts this folder on the path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from avatar.types import ChatMessage


class ScriptedChat:
    """Yields a fixed reply word by word (or in the given ``tokens``, the way a model's tokens come:
    "Hello", ",", " there"), and records how far the caller let it run."""

    name = "scripted"

    def __init__(self, text: str = "", fail: bool = False, tokens: Sequence[str] = ()) -> None:
        self.text, self.fail, self.words_sent = text or "".join(tokens), fail, 0
        self.tokens_generated = 0
        self.closed = False  # whether the caller closed the stream (stopping the "model")
        self.tokens = list(tokens) or [word + " " for word in self.text.split(" ")]
        self.seen: list[ChatMessage] = []
        self.shared_after: int | None = None
        self.prefilled: list[ChatMessage] = []

    def stream(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> Iterator[str]:
        self.seen = list(messages)
        if self.fail:
            raise RuntimeError("out of memory")
        try:
            for token in self.tokens:
                self.words_sent += 1
                self.tokens_generated += 1
                yield token
        finally:
            self.closed = True

    def reply(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> str:
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens))

    def prefill(self, messages: Sequence[ChatMessage], *, max_new_tokens: int) -> None:
        self.prefilled = list(messages)

    def share_cores(self) -> None:
        self.shared_after = self.words_sent  # how many tokens had been written when the first piece went

    def warmup(self) -> None: ...

    def close(self) -> None: ...
