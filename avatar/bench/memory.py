"""Peak resident memory of this process or of a child process, from the kernel's own accounting."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """The high-water mark of resident memory (VmHWM) of a live process, in MiB; None if unreadable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # the kernel reports kB
    return None


def peak_rss_children_mb() -> float:
    """The largest peak resident memory of any waited-for child process, in MiB (Linux: ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
