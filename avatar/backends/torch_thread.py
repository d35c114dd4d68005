"""One long-lived thread for all of the process's torch work on the CPU.

torch parallelises each operation with OpenMP (libgomp on Linux). libgomp keeps a team of worker
threads for every thread that has run a parallel region, and once the process holds more OpenMP threads
than there are cores, the idle workers stop spinning and sleep between regions. A decoder step is
hundreds of small regions, each of which then pays a wake-up: SmolLM2-135M went from 34 to 58 ms a
token on 2 cores as soon as a second thread had run torch once (bench/PROFILE.md). Loading, warming
and every later call of a CPU torch model therefore run here, on one thread, whichever thread asks.

Models on a GPU do not need this (their work is not OpenMP) and keep running where they are called, so
the LLM and XTTS can overlap on one card.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_thread_id: int | None = None


def _started() -> None:
    global _thread_id
    _thread_id = threading.get_ident()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avatar-torch", initializer=_started)
        return _executor


def on_torch_thread() -> bool:
    return _thread_id is not None and threading.get_ident() == _thread_id


def submit(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Queue ``fn(*args, **kwargs)`` on the torch thread, in the caller's context (the request id)."""
    context = contextvars.copy_context()

    def call() -> T:
        return context.run(fn, *args, **kwargs)

    return _pool().submit(call)


def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the torch thread, waiting for it; called there already, it runs at once."""
    if on_torch_thread():
        return fn(*args, **kwargs)
    return submit(fn, *args, **kwargs).result()


def run_for(device: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``run`` for a model on the CPU; a GPU model's call runs in the calling thread."""
    if device == "cpu":
        return run(fn, *args, **kwargs)
    return fn(*args, **kwargs)
