"""schemathesis against the served OpenAPI document: data that fits it and data that does not, for every
operation, bounded in count. Every answer is a documented 2xx/4xx in the documented shape (JSON errors
with a code), never a 500 or a traceback; data outside the document is refused; the server stays ready."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from live_server import RESPONSE_CHECKS, ServerProcess
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection

pytestmark = pytest.mark.slow  # the real server with the embedded models

CHECKS = RESPONSE_CHECKS
# Cases per operation and mode: the routes that can reach the models cost up to a turn each.
MODEL_ROUTES = {
    "/api/v1/conversation",
    "/api/v1/conversation/stream",
    "/api/v1/chat",
    "/api/v1/speak",
    "/api/v1/transcribe",
    "/api/v1/animate",
    "/api/v1/personas",
}
EXAMPLES = {"model": 8, "other": 25}

OPERATIONS = [
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/api/v1/personas"),
    ("POST", "/api/v1/personas"),
    ("GET", "/api/v1/personas/{persona}"),
    ("DELETE", "/api/v1/personas/{persona}"),
    ("GET", "/api/v1/personas/{persona}/image"),
    ("GET", "/api/v1/personas/{persona}/face.jpg"),
    ("GET", "/api/v1/voices"),
    ("GET", "/api/v1/voices/{voice}/sample.wav"),
    ("GET", "/api/v1/results/{result_id}"),
    ("GET", "/api/v1/results/{result_id}/segments/{index}.m4s"),
    ("GET", "/api/v1/results/{result_id}/video.mp4"),
    ("GET", "/api/v1/results/{result_id}/audio.wav"),
    ("POST", "/api/v1/conversation"),
    ("POST", "/api/v1/conversation/stream"),
    ("DELETE", "/api/v1/conversation/{turn_id}"),
    ("POST", "/api/v1/transcribe"),
    ("POST", "/api/v1/chat"),
    ("POST", "/api/v1/speak"),
    ("POST", "/api/v1/animate"),
    ("GET", "/api/v1/live"),
    ("POST", "/api/v1/live"),
]


def test_every_operation_is_fuzzed(server: ServerProcess) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_schemathesis(server: ServerProcess, cases_tried: Counter[str], method: str, path: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operation = schema[path][method]
    examples = EXAMPLES["model" if path in MODEL_ROUTES else "other"]
    takes_input = method != "GET" or "{" in path  # only these can be sent data outside the document
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if takes_input else [])
    for mode in modes:
        _fuzz(operation, mode, examples, cases_tried, f"schemathesis {mode.value:8s} {method} {path}")
    assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200


def _fuzz(operation: Any, mode: GenerationMode, examples: int, tally: Counter[str], label: str) -> None:
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(timeout=120)
        tally[label] += 1
        assert b"Traceback" not in response.content
        case.validate_response(response, checks=checks)

    run()
