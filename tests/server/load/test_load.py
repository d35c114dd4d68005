"""A load test on loopback, bounded in count and time: many concurrent clients of every kind against the
real server. Every request ends in a success or a deliberate refusal (503 busy), none is lost or hangs,
none is a 500; the server stays ready, its memory after 200 requests is within a small margin of its
memory after 20 (photos of 36 and 64 megapixels included), and nothing temporary is left behind.

A client kind is one function decorated with ``@client_kind(weight)``: it sends one request and says
how it ended. The streaming endpoint's client slots in the same way once that route exists.
"""

from __future__ import annotations

import asyncio
import io
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from live_server import ServerProcess, serving
from PIL import Image

from avatar.bench.sse import EventReader

pytestmark = pytest.mark.slow  # a real server process with the embedded models

WARM_REQUESTS = 20
TOTAL_REQUESTS = 200
CONCURRENCY = 10
REQUEST_TIMEOUT_S = 180.0  # a request still unanswered then has hung: a failure
LOAD_DEADLINE_S = 900.0  # the whole run, whatever happens
MEMORY_MARGIN_MB = 100
SEED = 9  # the same mix of requests on every run
MAX_BACK_OFF_S = 2.0  # a refused client waits Retry-After seconds, at most this, before its next request

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
HANG_UP = random.Random(SEED)  # when the leaving clients hang up
MODEL_KINDS = {"spoken_turn", "typed_turn", "chat", "speak", "transcribe", "big_photo"}  # they queue for the models


@dataclass(frozen=True)
class Outcome:
    kind: str
    ended: str  # ok | refused (a deliberate 503 busy) | abandoned (the client left on purpose) | lost | error
    status: int | None
    seconds: float
    detail: str = ""


@dataclass
class Corpus:
    question: bytes
    junk: bytes
    photo_36mp: bytes
    photo_64mp: bytes
    result_paths: list[str] = field(default_factory=list)  # replies made so far, for the download clients


ClientKind = Callable[[httpx.AsyncClient, Corpus], Awaitable[Outcome]]
KINDS: dict[str, tuple[ClientKind, int]] = {}


def client_kind(weight: int) -> Callable[[ClientKind], ClientKind]:
    """Register a kind of client; ``weight`` is its share of the requests."""

    def register(send: ClientKind) -> ClientKind:
        KINDS[send.__name__] = (send, weight)
        return send

    return register


async def timed(
    kind: str, request: Awaitable[httpx.Response], expected: tuple[int, ...] = (200,)
) -> tuple[Outcome, httpx.Response | None]:
    """Send ``request`` and judge the answer: ``expected`` statuses are ok, 503 busy is a refusal."""
    started = time.perf_counter()
    try:
        response = await request
    except httpx.TimeoutException:
        return Outcome(kind, "lost", None, time.perf_counter() - started, "no answer in time (hung)"), None
    except httpx.TransportError as exc:
        return Outcome(kind, "lost", None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"), None
    return judge(kind, response, time.perf_counter() - started, expected), response


def judge(kind: str, response: httpx.Response, seconds: float, expected: tuple[int, ...]) -> Outcome:
    if response.status_code in expected:
        return Outcome(kind, "ok", response.status_code, seconds)
    is_json = response.headers.get("content-type", "").startswith("application/json")
    code = response.json().get("error", {}).get("code") if is_json else None
    if response.status_code == 503 and code == "busy" and response.headers.get("retry-after"):
        return Outcome(kind, "refused", 503, seconds)
    if kind == "probes" and response.status_code == 503 and response.json().get("status") == "busy":
        return Outcome(kind, "refused", 503, seconds)  # /readyz saying "not now" while the queue is full
    return Outcome(kind, "error", response.status_code, seconds, response.text[:200])


@client_kind(weight=2)
async def spoken_turn(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    outcome, response = await timed(
        "spoken_turn", http.post("/api/v1/conversation", files={"audio": ("q.wav", corpus.question, "audio/wav")})
    )
    if response is not None and outcome.ended == "ok":
        corpus.result_paths.append(response.json()["video_url"])
    return outcome


@client_kind(weight=2)
async def typed_turn(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    return (await timed("typed_turn", http.post("/api/v1/conversation", data={"text": "What do you miss most?"})))[0]


@client_kind(weight=2)
async def leaves_mid_turn(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    """Uploads a question and hangs up while the turn runs (or waits): the server must drop it cleanly."""
    started = time.perf_counter()
    send = http.post("/api/v1/conversation", files={"audio": ("q.wav", corpus.question, "audio/wav")})
    try:
        async with asyncio.timeout(HANG_UP.uniform(0.3, 1.0)):
            response = await send
    except TimeoutError:
        return Outcome("leaves_mid_turn", "abandoned", None, time.perf_counter() - started)
    return judge("leaves_mid_turn", response, time.perf_counter() - started, (200,))


@client_kind(weight=3)
async def streamed_turn(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    """A typed question streamed as the web page does: events to the end, the first segment fetched."""
    return await _stream("streamed_turn", http, corpus, leave_after_first_segment=False)


@client_kind(weight=2)
async def leaves_the_stream(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    """Streams a spoken question and hangs up after its first segment: the turn must stop cleanly."""
    return await _stream("leaves_the_stream", http, corpus, leave_after_first_segment=True)


async def _stream(kind: str, http: httpx.AsyncClient, corpus: Corpus, *, leave_after_first_segment: bool) -> Outcome:
    started = time.perf_counter()
    request: dict[str, Any]
    if leave_after_first_segment:
        request = {"files": {"audio": ("q.wav", corpus.question, "audio/wav")}}
    else:
        request = {"data": {"text": "What did the Earth look like?"}}
    reader = EventReader()
    try:
        async with http.stream("POST", "/api/v1/conversation/stream", **request) as response:
            if response.status_code != 200:
                await response.aread()
                return judge(kind, response, time.perf_counter() - started, (200,))
            async for line in response.aiter_lines():
                if (item := reader.feed(line)) is None:
                    continue
                event, data = item
                if event == "segment" and leave_after_first_segment:
                    return Outcome(kind, "abandoned", None, time.perf_counter() - started)
                if event == "segment" and data["index"] == 0:
                    segment = await http.get(data["url"])
                    if segment.status_code != 200:
                        return Outcome(kind, "error", segment.status_code, time.perf_counter() - started, data["url"])
                elif event == "error":
                    ended = "refused" if data.get("code") == "busy" else "error"  # busy: the queue filled up after
                    return Outcome(kind, ended, 200, time.perf_counter() - started, str(data))
                elif event == "done":
                    return Outcome(kind, "ok", 200, time.perf_counter() - started)
    except httpx.TimeoutException:
        return Outcome(kind, "lost", None, time.perf_counter() - started, "no answer in time (hung)")
    except httpx.TransportError as exc:
        return Outcome(kind, "lost", None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    return Outcome(kind, "lost", 200, time.perf_counter() - started, "the stream ended without done or error")


@client_kind(weight=5)
async def chat(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    return (await timed("chat", http.post("/api/v1/chat", data={"text": "Tell me about the stars."})))[0]


@client_kind(weight=10)
async def speak(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    return (await timed("speak", http.post("/api/v1/speak", data={"text": "Good morning, everyone."})))[0]


@client_kind(weight=8)
async def transcribe(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    files = {"audio": ("q.wav", corpus.question, "audio/wav")}
    return (await timed("transcribe", http.post("/api/v1/transcribe", files=files)))[0]


@client_kind(weight=2)
async def huge_photo(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    """8000 × 8000 pixels: refused from its header (400) before a pixel is decoded."""
    files = {"audio": ("q.wav", corpus.question, "audio/wav"), "image": ("big.png", corpus.photo_64mp, "image/png")}
    return (await timed("huge_photo", http.post("/api/v1/animate", files=files), expected=(400,)))[0]


@client_kind(weight=1)
async def big_photo(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    """6000 × 6000 pixels (36 MP, ~100 MB as RGB): decoded and animated; its memory must come back."""
    files = {"audio": ("q.wav", corpus.question, "audio/wav"), "image": ("big.jpg", corpus.photo_36mp, "image/jpeg")}
    return (await timed("big_photo", http.post("/api/v1/animate", files=files)))[0]


@client_kind(weight=4)
async def corrupt_audio(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    files = {"audio": ("q.mp3", corpus.junk, "audio/mpeg")}
    return (await timed("corrupt_audio", http.post("/api/v1/transcribe", files=files), expected=(400,)))[0]


@client_kind(weight=6)
async def download(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    if not corpus.result_paths:
        return (await timed("download", http.get("/healthz")))[0]
    path = random.Random(len(corpus.result_paths)).choice(corpus.result_paths)
    return (await timed("download", http.get(path, headers={"Range": "bytes=0-65535"}), expected=(206,)))[0]


@client_kind(weight=6)
async def probes(http: httpx.AsyncClient, corpus: Corpus) -> Outcome:
    await http.get("/healthz")
    return (await timed("probes", http.get("/readyz")))[0]


def schedule(count: int, seed: int, *, each_first: bool = False) -> Iterator[tuple[str, ClientKind]]:
    """``count`` client kinds drawn by weight, the same on every run; ``each_first``: every kind once
    before the draw (a warm-up that has done everything once)."""
    chooser = random.Random(seed)
    names = sorted(KINDS)
    weights = [KINDS[name][1] for name in names]
    first = names if each_first else []
    for name in first + chooser.choices(names, weights=weights, k=count - len(first)):
        yield name, KINDS[name][0]


async def run_clients(base_url: str, corpus: Corpus, work: Iterator[tuple[str, ClientKind]]) -> list[Outcome]:
    """The scheduled requests, from ``CONCURRENCY`` clients at once (each its own connection pool). A
    refused client backs off as Retry-After asks (capped), as a polite client would."""
    outcomes: list[Outcome] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as http:
            for _, send in work:
                outcome = await send(http, corpus)
                outcomes.append(outcome)
                if outcome.ended == "refused":
                    await asyncio.sleep(MAX_BACK_OFF_S)

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return outcomes


def resident_mb(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def settled_memory(server: ServerProcess) -> float:
    """The server's resident memory once every request has drained and the queue is empty."""
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        while True:
            body = http.get("/readyz").json()
            if body["status"] == "ready" and body["queue"] == {**body["queue"], "running": 0, "waiting": 0}:
                break
            assert time.monotonic() < deadline, f"the queue never drained: {body}"
            time.sleep(0.2)
    time.sleep(1.0)
    return resident_mb(server)


@pytest.fixture(scope="module")
def loaded_server(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("load")
    tmp = workdir / "tmp"
    tmp.mkdir()
    yield from serving(
        workdir,
        AVATAR_MAX_UPLOAD_MB="20",
        AVATAR_LLM_MAX_NEW_TOKENS="24",
        AVATAR_SESSION_TTL_SECONDS="30",
        TMPDIR=str(tmp),  # whatever the server spools or leaves in a temporary folder lands here
    )


@pytest.fixture(scope="module")
def corpus(planet_question: bytes, portrait: Path) -> Corpus:
    face = Image.open(portrait).convert("RGB").resize((6000, 6000), Image.Resampling.BILINEAR)
    jpeg = io.BytesIO()
    face.save(jpeg, format="JPEG", quality=80)
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")
    junk = bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8))
    return Corpus(planet_question, b"ID3" + junk, jpeg.getvalue(), bomb.getvalue())


def test_load(loaded_server: ServerProcess, corpus: Corpus, load_report: list[str]) -> None:
    server = loaded_server
    tmp = server.output_dir.parent / "tmp"
    libraries_own = set(tmp.iterdir())  # made at start-up by the libraries (torch, onnxruntime), not by requests
    started = time.perf_counter()

    async def both_phases() -> tuple[list[Outcome], float, list[Outcome]]:
        async with asyncio.timeout(LOAD_DEADLINE_S):
            warm = await run_clients(server.base_url, corpus, schedule(WARM_REQUESTS, SEED, each_first=True))
            memory_warm = await asyncio.to_thread(settled_memory, server)
            rest = await run_clients(server.base_url, corpus, schedule(TOTAL_REQUESTS - WARM_REQUESTS, SEED + 1))
            return warm, memory_warm, rest

    warm, memory_20, rest = asyncio.run(both_phases())
    memory_200 = settled_memory(server)
    outcomes = warm + rest
    wall = time.perf_counter() - started

    ended = Counter(o.ended for o in outcomes)
    by_kind = Counter(f"{o.kind}:{o.ended}" for o in outcomes)
    answered = sorted(o.seconds for o in outcomes if o.ended in ("ok", "refused"))
    served = sorted(o.seconds for o in outcomes if o.ended == "ok" and o.kind in MODEL_KINDS)
    load_report.extend(
        [
            f"requests sent {len(outcomes)} in {wall:.0f} s by {CONCURRENCY} concurrent clients",
            f"succeeded {ended['ok']}, refused (503 busy) {ended['refused']}, abandoned by the client on purpose "
            f"{ended['abandoned']}, lost {ended['lost']}, errors {ended['error']}",
            f"latency of answered requests: p50 {percentile(answered, 50):.2f} s, "
            f"p95 {percentile(answered, 95):.2f} s; of model requests served: p50 {percentile(served, 50):.2f} s, "
            f"p95 {percentile(served, 95):.2f} s",
            f"server resident memory after {WARM_REQUESTS} requests {memory_20:.0f} MiB, after "
            f"{TOTAL_REQUESTS} {memory_200:.0f} MiB ({memory_200 - memory_20:+.0f} MiB)",
            "by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())),
        ]
    )
    problems = [o for o in outcomes if o.ended in ("lost", "error")]
    assert not problems, problems[:5]
    assert len(outcomes) == TOTAL_REQUESTS
    assert ended["ok"] >= TOTAL_REQUESTS // 2, ended  # refusals are allowed, not a majority
    assert {o.kind for o in outcomes if o.ended == "ok"} >= set(KINDS) - {"leaves_mid_turn", "leaves_the_stream"}

    assert memory_200 - memory_20 < MEMORY_MARGIN_MB, f"{memory_20:.0f} → {memory_200:.0f} MiB"
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
    assert not [line for line in server.log_lines() if line.get("event") == "unhandled error"]
    assert_nothing_temporary_left(server)
    leftovers = set(tmp.iterdir()) - libraries_own
    assert leftovers == set(), f"temporary files left by the server: {sorted(leftovers)[:5]}"


def percentile(ordered: list[float], p: int) -> float:
    return ordered[round(p / 100 * (len(ordered) - 1))] if ordered else float("nan")


def assert_nothing_temporary_left(server: ServerProcess) -> None:
    assert server.staging_folders() == []
    for entry in server.output_dir.iterdir():
        if entry.name == ".staging":
            continue
        assert ID_PATTERN.match(entry.name) and entry.is_dir(), f"stray {entry}"
        names = {f.name for f in entry.iterdir()}
        complete = {"reply.mp4", "reply.wav", "turn.json"}
        assert names in (complete, complete | {"segments"}, {"reply.mp4"}), f"{entry}: {names}"  # segments: streamed
        if "segments" in names:
            assert all(f.suffix == ".m4s" for f in (entry / "segments").iterdir()), f"stray file in {entry}"
