"""A busy machine, made on purpose: another process that keeps one core busy for a whole bench run.

The common case it stands for is a browser playing the reply on the same laptop. The process is a
plain busy loop in a separate Python interpreter (so it holds a core whatever this process does) at
the default priority, started before the models load and stopped when the run ends. It runs in a session
of its own, as a program started from the desktop does (not a child of the terminal that runs the
service): where the kernel groups processes by session for scheduling (``sched_autogroup``, on in
desktop distributions' kernels), the two sessions share the cores, and the service's worker threads,
which run at a lower priority than its event loop (nice +10), compete with the loop as a whole rather
than thread by thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUSY_LOOP = "while True:\n    pass\n"
DESCRIPTION = (
    "one core kept busy by another process (a busy loop at normal priority, in a session of its own, as a "
    "program started from the desktop) for the whole run"
)


@contextmanager
def one_core_busy() -> Iterator[subprocess.Popen[bytes]]:
    """Keep one core busy while the block runs."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield busy
    finally:
        busy.kill()
        busy.wait()


def idle_reference(results: Path, before: str | None = None) -> dict[str, Any] | None:
    """The idle figure a contended run is held to: the newest bench run in ``results`` made without the
    busy loop (its name before ``before``, a stamp, if given) and its first spoken piece p50."""
    from avatar.bench.runner import first_clause_p50

    for path in sorted(results.glob("*.json"), reverse=True):
        if before is not None and path.stem >= before:
            continue
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or result.get("kind") != "bench" or result.get("contended"):
            continue
        figure = first_clause_p50(result)
        if figure is not None:
            return {"run": path.stem, "first_clause_s": figure}
    return None
