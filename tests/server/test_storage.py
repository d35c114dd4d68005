"""A full disk is named, not a 500: on a real small filesystem (an ext4 image on a loop device, or a
tmpfs of a fixed size where loop devices are not available), filled up for real.

The result store on its own: a write that meets ENOSPC is ``StorageFullError`` (503 ``storage_full``,
``Retry-After``) and leaves nothing; below the free-space floor it says so and the oldest results are
removed first. Then the whole server: a turn is 503 ``storage_full``, a stream ends with that error
event, ``/readyz`` is 503 ``storage_full``, and all of it recovers once space is freed.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_server import ServerProcess, error_code, sse_events, start_server

from avatar.errors import StorageFullError
from avatar.server.results import ResultStore

DISK_MB = 48
FLOOR_MB = 8


def _mount_small_disk(where: Path) -> str:
    """Mount a ``DISK_MB`` filesystem at ``where``: how, or pytest.skip saying why it cannot be done."""
    where.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem (loop device or tmpfs) needs root, and the tests do not run as root")
    image = where.with_suffix(".img")
    loop = None
    if shutil.which("mkfs.ext4") and shutil.which("losetup"):
        with image.open("wb") as f:
            f.truncate(DISK_MB * 2**20)
        made = subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], capture_output=True)  # no root reserve
        if made.returncode == 0:
            mounted = subprocess.run(["mount", "-o", "loop", str(image), str(where)], capture_output=True)
            if mounted.returncode == 0:
                return "ext4 on a loop device"
            loop = mounted.stderr.decode(errors="replace").strip()
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(where)], capture_output=True)
    if tmpfs.returncode == 0:
        return "tmpfs"
    pytest.skip(
        f"no small filesystem can be mounted here (loop device: {loop or 'no mkfs.ext4/losetup'}; "
        f"tmpfs: {tmpfs.stderr.decode(errors='replace').strip()})"
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    _mount_small_disk(where)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.with_suffix(".img").unlink(missing_ok=True)


def fill(disk: Path, leave_bytes: int = 0) -> Path:
    """Write a file until the disk has no more than ``leave_bytes`` free (really full for 0)."""
    filler = disk / "filler"
    block = b"\0" * 2**20
    with filler.open("ab") as f:
        try:
            while shutil.disk_usage(disk).free > leave_bytes + len(block):
                f.write(block)
                f.flush()
            if leave_bytes == 0:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_write_on_a_full_disk_is_storage_full_and_leaves_nothing(small_disk: Path) -> None:
    store = ResultStore(small_disk / "results", 3600, min_free_bytes=FLOOR_MB * 2**20)
    store.open()
    woken: list[bool] = []
    store.wake_sweeper = lambda: woken.append(True)
    filler = fill(small_disk)
    assert shutil.disk_usage(small_disk).free < 2**20  # the scenario: the disk is full
    with pytest.raises(StorageFullError) as refused, store.reserve() as folder:
        (folder / "reply.wav").write_bytes(b"\0" * 2**20)
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "30"
    assert "full" in refused.value.message and "AVATAR_OUTPUT_DIR" in refused.value.message
    assert list(store.staging.iterdir()) == [] and woken == [True]
    problem = store.storage_problem()
    assert problem is not None and problem.startswith("storage_full:") and f"={FLOOR_MB}" in problem
    filler.unlink()
    assert store.storage_problem() is None
    with store.reserve() as folder:
        (folder / "reply.wav").write_bytes(b"\0" * 2**20)
    assert len(list(store.root.iterdir())) == 2  # the result and the staging folder


def test_below_the_floor_the_oldest_results_are_removed_first(small_disk: Path) -> None:
    store = ResultStore(small_disk / "results", 3600, min_free_bytes=FLOOR_MB * 2**20)
    store.open()
    made = []
    for k in range(4):
        with store.reserve() as folder:
            (folder / "reply.mp4").write_bytes(b"\0" * 3 * 2**20)
        made.append(folder.name)
        written = time.time() - 100 + k  # oldest first
        os.utime(store.root / folder.name, (written, written))
    fill(small_disk, leave_bytes=2**19)  # 0.5 to 1.5 MB free
    assert store.storage_problem() is not None  # the scenario: under the floor
    removed = store.sweep()
    kept = sorted(p.name for p in store.root.iterdir() if p.name != ".staging")
    assert removed == 3 and kept == [made[3]]  # under 1.5 MB free + 2 × 3 MB is under the 8 MB floor; + 3 × 3 MB is not
    assert store.storage_problem() is None


@pytest.mark.slow  # a real server with the embedded models
def test_a_full_disk_is_503_storage_full_a_stream_error_and_unready_until_space_is_freed(
    small_disk: Path, tmp_path: Path, prepared_models: Path
) -> None:
    output = small_disk / "results"
    server: ServerProcess = start_server(
        tmp_path / "server",
        AVATAR_OUTPUT_DIR=str(output),
        AVATAR_MIN_FREE_DISK_MB=str(FLOOR_MB),
        AVATAR_MAX_LIVE_SESSIONS="0",
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            assert http.post("/api/v1/conversation", data={"text": "Hello!"}).status_code == 200
            filler = fill(small_disk)
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "storage_full", ready.text
            assert "AVATAR_MIN_FREE_DISK_MB" in ready.json()["reason"] and int(ready.headers["retry-after"]) > 0
            fill(small_disk)  # what the sweep freed (the first result) is taken again
            turn = http.post("/api/v1/conversation", data={"text": "Tell me about Mars."})
            assert turn.status_code == 503 and error_code(turn) == "storage_full", turn.text
            assert int(turn.headers["retry-after"]) > 0
            fill(small_disk)  # and what the refused turn's sweep freed
            with http.stream("POST", "/api/v1/conversation/stream", data={"text": "And Jupiter?"}) as stream:
                events = list(sse_events(stream))
            assert events[-1][0] == "error" and events[-1][1]["code"] == "storage_full", events[-3:]
            assert not list((output / ".staging").glob("*/*"))  # nothing half-written is left
            filler.unlink()
            assert http.get("/readyz").status_code == 200
            assert http.post("/api/v1/conversation", data={"text": "Hello again!"}).status_code == 200
        unhandled = [line for line in server.log_lines() if "Traceback" in str(line.get("exception", ""))]
        assert unhandled == []
    finally:
        server.stop()
