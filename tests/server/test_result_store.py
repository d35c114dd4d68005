"""ResultStore on its own: ids checked before any file access, publish-or-remove, time to live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from avatar.errors import NotFoundError
from avatar.server.results import ResultStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def store(tmp_path: Path, clock: Clock) -> ResultStore:
    results = ResultStore(tmp_path / "results", ttl_seconds=60, clock=clock)
    results.open()
    return results


def _publish(store: ResultStore, clock: Clock) -> str:
    with store.reserve() as folder:
        (folder / "reply.mp4").write_bytes(b"video")
    os.utime(store.root / folder.name, (clock.now, clock.now))
    return folder.name


def test_a_result_is_published_only_when_the_block_succeeds(store: ResultStore, clock: Clock) -> None:
    result_id = _publish(store, clock)
    assert store.file(result_id, "video.mp4")[0].read_bytes() == b"video"
    with pytest.raises(RuntimeError), store.reserve() as folder:
        (folder / "reply.mp4").write_bytes(b"half")
        raise RuntimeError("the turn failed")
    assert not folder.exists()
    assert sorted(p.name for p in store.root.iterdir()) == sorted([".staging", result_id])
    assert list(store.staging.iterdir()) == []


@pytest.mark.parametrize("bad", ["..", "../results", "x" * 32, "0123456789ABCDEF0123456789ABCDEF", "", "/etc"])
def test_malformed_ids_never_reach_the_file_system(store: ResultStore, bad: str) -> None:
    with pytest.raises(NotFoundError):
        store.folder(bad)


def test_expired_results_are_gone_on_access(store: ResultStore, clock: Clock) -> None:
    result_id = _publish(store, clock)
    clock.now += 61
    with pytest.raises(NotFoundError, match="expired"):
        store.file(result_id, "video.mp4")
    assert not (store.root / result_id).exists()


def test_sweep_removes_only_expired_results(store: ResultStore, clock: Clock) -> None:
    old = _publish(store, clock)
    clock.now += 40
    young = _publish(store, clock)
    clock.now += 30
    assert store.sweep() == 1
    assert not (store.root / old).exists() and (store.root / young).exists()


def test_open_drops_what_a_crashed_process_left_half_written(store: ResultStore) -> None:
    (store.staging / ("0" * 32)).mkdir()
    store.open()
    assert list(store.staging.iterdir()) == []
