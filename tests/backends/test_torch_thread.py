"""The torch thread: one thread runs every call, whoever asks; nesting, errors and context carry over."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from avatar.backends import torch_thread

REQUEST = contextvars.ContextVar("request", default="none")


def test_every_caller_lands_on_one_thread() -> None:
    def where() -> tuple[int, str]:
        return threading.get_ident(), threading.current_thread().name

    with ThreadPoolExecutor(4) as callers:
        seen = set(callers.map(lambda _: torch_thread.run(where), range(8)))
    seen.add(torch_thread.run(where))
    assert len(seen) == 1
    ident, name = seen.pop()
    assert name.startswith("avatar-torch") and ident != threading.get_ident()
    assert not torch_thread.on_torch_thread() and torch_thread.run(torch_thread.on_torch_thread)


def test_nested_calls_run_in_place_instead_of_deadlocking() -> None:
    def outer() -> int:
        return torch_thread.run(lambda: 41) + 1

    assert torch_thread.run(outer) == 42


def test_errors_and_the_callers_context_carry_over() -> None:
    def fail() -> None:
        raise ValueError(f"failed for {REQUEST.get()}")

    REQUEST.set("req-7")
    with pytest.raises(ValueError, match="failed for req-7"):
        torch_thread.run(fail)


def test_a_gpu_models_call_stays_on_the_calling_thread() -> None:
    assert torch_thread.run_for("cuda", threading.get_ident) == threading.get_ident()
    assert torch_thread.run_for("cpu", threading.get_ident) != threading.get_ident()
