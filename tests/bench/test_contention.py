"""The contended bench's busy core: a real process that burns a core while the run lasts, and no longer."""

from __future__ import annotations

import time
from pathlib import Path

from avatar.bench.contention import one_core_busy


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def test_one_core_is_kept_busy_while_the_block_runs_and_freed_after() -> None:
    with one_core_busy() as busy:
        time.sleep(0.5)
        start, started = cpu_seconds(busy.pid), time.perf_counter()
        time.sleep(1.0)
        share = (cpu_seconds(busy.pid) - start) / (time.perf_counter() - started)
        assert busy.poll() is None
    assert share > 0.05  # a whole core on a quiet machine; a fair share of a loaded one (a sleeper gets 0)
    assert busy.returncode is not None and not Path(f"/proc/{busy.pid}").exists()
