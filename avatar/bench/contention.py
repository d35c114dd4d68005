"""A busy machine, made on purpose: another process that keeps one core busy for a whole bench run.

The common case it stands for is a browser playing the reply on the same laptop. The process is a
plain busy loop in a separate Python interpreter (so it holds a core whatever this process does) at
the default priority, started before the models load and stopped when the run ends.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

BUSY_LOOP = "while True:\n    pass\n"
DESCRIPTION = "one core kept busy by another process (a busy loop at normal priority) for the whole run"


@contextmanager
def one_core_busy() -> Iterator[subprocess.Popen[bytes]]:
    """Keep one core busy while the block runs."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL)
    try:
        yield busy
    finally:
        busy.kill()
        busy.wait()
