"""Process-level native settings: glibc's malloc arenas are bounded, unless the operator chose."""

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
