"""Process-level native settings: glibc's malloc arenas are bounded, unless the operator chose; memory
freed after a burst goes back to the system."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

PROBE = "from avatar.native import limit_malloc_arenas; print(limit_malloc_arenas())"


def _probe(**env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment, check=True)
    return done.stdout.strip()


def test_arenas_are_bounded_in_a_fresh_process() -> None:
    assert _probe() == "True"  # glibc accepted the limit


def test_an_operator_setting_is_left_to_glibc() -> None:
    assert _probe(MALLOC_ARENA_MAX="4") == "False"


TRIM_PROBE = """
import gc
from avatar.native import release_free_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

blocks = [bytearray(64_000) for _ in range(4000)]  # 256 MB of small blocks on the heap, below mmap's threshold
keep = blocks[-1]
del blocks
gc.collect()
before = rss_mb()
trimmed = release_free_memory()
print(trimmed, round(before - rss_mb()))
"""


def test_freed_heap_memory_goes_back_to_the_system() -> None:
    done = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True)
    trimmed, released_mb = done.stdout.split()
    assert trimmed == "True"
    assert int(released_mb) > 150, done.stdout  # most of the 256 MB freed (the last block keeps the top)
