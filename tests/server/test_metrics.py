"""Prometheus metrics: the agreed names, bounded labels, and figures that follow what the server did."""

from __future__ import annotations

import uuid

import httpx
import pytest
from live_server import ServerProcess
from prometheus_client.parser import text_string_to_metric_families

from avatar.server.metrics import Metrics


def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_observe_turn_feeds_stage_and_first_frame_histograms() -> None:
    metrics = Metrics()
    metrics.observe_turn({"asr": 0.3, "llm": 1.2, "first_frame": 0.8, "total": 3.1})
    text = metrics.exposition().decode()
    assert 'avatar_stage_seconds_count{stage="llm"} 1.0' in text
    assert 'avatar_stage_seconds_count{stage="total"} 1.0' in text
    assert "avatar_first_frame_seconds_count 1.0" in text
    assert 'stage="first_frame"' not in text
    assert "avatar_gpu_memory" not in text  # no CUDA here, and a scrape never brings it up


@pytest.mark.slow
def test_live_metrics_follow_the_traffic(server: ServerProcess, client: httpx.Client) -> None:
    before = scrape(client)
    turn = client.post("/api/v1/conversation", data={"text": "Good evening!"})
    assert turn.status_code == 200
    for _ in range(3):  # three different unknown paths: one series, not three
        client.get(f"/no/such/{uuid.uuid4().hex}")
    client.get(f"/api/v1/results/{'0' * 32}")
    after = scrape(client)

    conv = {"route": "/api/v1/conversation", "status": "200"}
    assert value(after, "avatar_requests_total", **conv) == value(before, "avatar_requests_total", **conv) + 1
    assert value(after, "avatar_requests_total", route="unmatched", status="404") >= 3
    result_404 = {"route": "/api/v1/results/{result_id}", "status": "404"}  # the template, never the id
    assert value(after, "avatar_requests_total", **result_404) >= 1
    assert not any("/no/such/" in str(labels) or "0" * 32 in str(labels) for _, labels in after)

    for stage in ("llm", "tts", "avatar", "mux", "total"):
        grown = value(after, "avatar_stage_seconds_count", stage=stage) - value(
            before, "avatar_stage_seconds_count", stage=stage
        )
        assert grown == 1, stage
    assert value(after, "avatar_first_frame_seconds_count") == value(before, "avatar_first_frame_seconds_count") + 1
    assert value(after, "avatar_request_seconds_count", route="/api/v1/conversation") >= 1

    for kind in ("asr", "llm", "tts", "face"):
        assert value(after, "avatar_model_ready", kind=kind) == 1
    assert value(after, "avatar_queue_waiting") == 0 and value(after, "avatar_queue_running") == 0
    assert value(after, "avatar_turns_in_flight") == 0 and value(after, "avatar_live_sessions") == 0
    assert value(after, "avatar_llm_tokens_total") > value(before, "avatar_llm_tokens_total")
    assert value(after, "process_resident_memory_bytes") > 100 * 2**20


@pytest.mark.slow
def test_the_llm_threads_and_the_cores_they_follow_are_on_readyz_and_metrics(
    server: ServerProcess, client: httpx.Client
) -> None:
    threads = client.get("/readyz").json()["threads"]
    assert threads["adapting"] is True and threads["engine_waits"] == "passively"  # xllamacpp, the default
    assert 1 <= threads["llm_reading"] <= threads["configured"]["llm_reading"]
    assert threads["cores"] >= 1 and threads["reason"]
    samples = scrape(client)
    assert value(samples, "avatar_llm_threads", phase="writing") == threads["llm_writing"]
    assert value(samples, "avatar_cpu_cores") == threads["cores"]
    assert ("avatar_llm_thread_changes_total", ()) in samples
