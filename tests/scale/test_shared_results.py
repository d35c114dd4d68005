"""Several replicas' result stores on one shared folder (as on a ReadWriteMany volume): a result one
publishes, the others serve; each one's sweep removes expired results, also the ones another replica
removes at the same moment, without an error."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from avatar.errors import NotFoundError
from avatar.server.results import ResultStore

TTL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _replicas(root: Path, clock: Clock, count: int) -> list[ResultStore]:
    stores = [ResultStore(root, ttl_seconds=TTL, replica=f"r{k}", clock=clock) for k in range(count)]
    for store in stores:
        store.open()
    return stores


def _publish(store: ResultStore, clock: Clock) -> str:
    with store.reserve() as folder:
        (folder / "reply.mp4").write_bytes(b"video")
        (folder / "turn.json").write_text('{"reply": "hi"}')
    os.utime(store.root / folder.name, (clock.now, clock.now))
    return folder.name


def test_a_result_published_by_one_replica_is_served_by_the_others(tmp_path: Path) -> None:
    clock = Clock()
    a, b, c = _replicas(tmp_path / "shared", clock, 3)
    result_id = _publish(a, clock)
    for other in (b, c):
        path, media_type = other.file(result_id, "video.mp4")
        assert path.read_bytes() == b"video" and media_type == "video/mp4"
        assert other.summary(result_id) == {"reply": "hi"}


def test_a_replica_starting_leaves_the_others_work_alone(tmp_path: Path) -> None:
    clock = Clock()
    a, b = _replicas(tmp_path / "shared", clock, 2)
    with a.reserve() as work:
        (work / "reply.mp4").write_bytes(b"half a video")
        ResultStore(a.root, ttl_seconds=TTL, replica="r2", clock=clock).open()  # b restarts meanwhile
        assert (work / "reply.mp4").read_bytes() == b"half a video"
    assert a.file(work.name, "video.mp4")[0].read_bytes() == b"half a video"
    assert b.file(work.name, "video.mp4")[0].read_bytes() == b"half a video"


def test_every_replica_sweeps_and_concurrent_removal_is_harmless(tmp_path: Path) -> None:
    clock = Clock()
    stores = _replicas(tmp_path / "shared", clock, 4)
    ids = [_publish(stores[k % 4], clock) for k in range(24)]
    clock.now += TTL + 1
    fresh = _publish(stores[0], clock)  # written now: must survive every sweep
    removed: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def sweep(store: ResultStore) -> None:
        start.wait()
        try:
            removed.append(store.sweep())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sum(removed) >= len(ids)  # together they removed every expired result (some twice over)
    for store in stores:
        store.sweep()  # again, with nothing left to remove
        for result_id in ids:
            with pytest.raises(NotFoundError):
                store.folder(result_id)
        assert store.summary(fresh) == {"reply": "hi"}
