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


def _publish_sized(store: ResultStore, at: float, size: int) -> str:
    with store.reserve() as folder:
        (folder / "reply.mp4").write_bytes(b"v" * size)
        (folder / "turn.json").write_text("{}")
    os.utime(store.root / folder.name, (at, at))
    return folder.name


def test_disk_quota_removes_the_oldest_first(tmp_path: Path, clock: Clock) -> None:
    woken: list[int] = []
    store = ResultStore(tmp_path / "results", ttl_seconds=3600, clock=clock, max_bytes=10_000)
    store.open()
    store.wake_sweeper = lambda: woken.append(store.used_bytes)
    ids = [_publish_sized(store, clock.now - 100 + i, 3000) for i in range(3)]  # oldest first
    assert woken == []  # 3 × 3002 bytes: under the quota
    (store.root / "personas" / "mine").mkdir(parents=True)  # created personas: their own limit, untouched
    (store.root / "personas" / "mine" / "photo.png").write_bytes(b"p" * 50_000)
    newest = _publish_sized(store, clock.now, 3000)
    assert woken and woken[0] > 10_000  # publishing past the quota asks for a sweep at once

    assert store.sweep() == 1
    kept = {p.name for p in store.root.iterdir()}
    assert ids[0] not in kept and {ids[1], ids[2], newest} <= kept
    assert (store.root / "personas" / "mine" / "photo.png").exists()
    assert store.used_bytes == 3 * 3002
    with pytest.raises(NotFoundError):
        store.folder(ids[0])


def test_expired_results_go_before_the_quota_counts(tmp_path: Path, clock: Clock) -> None:
    store = ResultStore(tmp_path / "results", ttl_seconds=60, clock=clock, max_bytes=7000)
    store.open()
    old = _publish_sized(store, clock.now - 120, 3000)  # expired
    fresh = [_publish_sized(store, clock.now - 10 + i, 3000) for i in range(2)]
    assert store.sweep() == 1  # only the expired one: the other two fit
    assert {p.name for p in store.root.iterdir() if not p.name.startswith(".")} == set(fresh)
    assert old not in {p.name for p in store.root.iterdir()}
