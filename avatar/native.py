"""Quieting native libraries that write straight to the process's stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


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
