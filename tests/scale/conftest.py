"""Fixtures: two replicas of the real service behind HAProxy, sharing one Redis and one results folder,
started once for the module (avatar/bench/cluster.py), and one more replica whose Redis is missing."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from avatar.bench.cluster import Cluster, MissingProgramError, program
from avatar.bench.http_service import ServerProcess, free_port

# The suite's helpers for checking what a live server returns (tests/server/live_server.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

REPLICA_ENV = {
    "AVATAR_THREADS": "1",  # two replicas share two cores
    "AVATAR_LLM_MAX_NEW_TOKENS": "12",  # short replies: the path through every stage is the same
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> Iterator[Cluster]:
    for name in ("redis-server", "haproxy"):
        try:
            program(name)
        except MissingProgramError as exc:
            pytest.fail(str(exc))
    with Cluster(tmp_path_factory.mktemp("cluster"), 2, env=REPLICA_ENV) as running:
        yield running


@pytest.fixture
def without_redis(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> Iterator[ServerProcess]:
    """A replica told to use a Redis nobody runs. Only spawned: asked for before ``cluster``, it loads
    its models while the cluster starts; the test waits for its verdict."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_")}
    env = {**clean, **REPLICA_ENV, "AVATAR_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    server = ServerProcess(tmp_path_factory.mktemp("no-redis"), env=env)
    server.spawn()
    yield server
    server.stop()
