"""Process-level settings of the native side: quieting libraries that write straight to stderr,
bounding glibc's malloc arenas and handing freed heap memory back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block.

    MediaPipe's C++ core logs start-up chatter ("Logging before InitGoogle", XNNPACK delegate notes)
    that its GLOG settings do not silence. Only model construction runs inside this block, so no
    message of ours is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let glibc's malloc use at most ``arenas`` arenas (unless MALLOC_ARENA_MAX says otherwise).

    By default glibc gives threads up to 8 × cores arenas, and memory freed in one is not reused by
    another: the model threads, the encoder threads and the worker pool of a long-running service each
    fragment their own, and the resident memory creeps up with traffic that holds nothing (the load
    test's server, 20 → 200 mixed requests: +131 to +184 MiB with the default, +5 to +42 MiB with two
    arenas). Call it first thing, before threads start. False where it does not apply (not glibc, or
    the variable is set: glibc read it itself).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _libc()
    try:
        return libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))
    except AttributeError:  # musl and others have no mallopt
        return False


def release_free_memory() -> bool:
    """Give the pages glibc's malloc holds free back to the system (``malloc_trim``); True if any went.

    Freed memory otherwise stays with the process at its high-water mark: after a burst of concurrent
    requests (a 36-megapixel photo decoded beside two turns) the resident size stays up for good, and
    it is the burst's size, not what the service holds, that the orchestrator sees and limits. Cheap
    (tens of milliseconds for a 1.5 GiB heap) but it holds malloc's locks meanwhile: call it when idle,
    in a worker thread.
    """
    libc = _libc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:
        return False


@cache
def _libc() -> ctypes.CDLL | None:
    """The C library on Linux, or None (another system, or it cannot be opened)."""
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None
