"""Replicas behind HAProxy on loopback: a bounded conversation load, a replica killed and restarted under
it, an audit that nothing was lost, and the figures with 1, 2 and 3 replicas.

    python -m avatar.bench.replicas                      # 1, 2, 3 replicas, then the failover run on 2
    python -m avatar.bench.replicas --replicas 2 --failover 0 --clients 2 --turns 3   # a quick look

Writes ``bench/results/replicas-<timestamp>.json`` and ``.md``. tests/scale runs the same pieces with
assertions. On one machine the replicas share its cores (each gets cores / replicas threads), so the
curve shows how the service behaves as replicas are added, not what separate machines would give.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from avatar.bench import machine
from avatar.bench.cluster import Cluster
from avatar.bench.stats import spread
from avatar.pipeline.redis_sessions import KEY_PREFIX

TURN_ROUTE = "/api/v1/conversation"
RESULT_ROUTE = "/api/v1/results/{}"
QUESTION = "Say hello in a few words."
REQUEST_TIMEOUT_S = 300.0
TURNS_PER_SESSION = 5  # fewer than the history kept (6), so Redis must hold every turn of a session
RESULT_FILES = ("reply.mp4", "reply.wav", "turn.json")


@dataclass
class Outcome:
    """One HTTP request as a client saw it. Times are seconds since the load began."""

    kind: str  # turn | video | summary
    method: str
    client: int
    started: float
    seconds: float
    status: int | None  # None: no HTTP answer at all (the connection failed)
    replica: str | None  # X-Avatar-Replica, set by HAProxy on answers a replica gave
    error_code: str | None = None
    clean: bool = True  # a success, or an error in the service's JSON shape
    text: str | None = None
    session_id: str | None = None
    result_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def error_code(response: httpx.Response) -> tuple[str | None, bool]:
    """(code, whether the body is exactly ``{"error": {"code", "message"}}``) of an error answer."""
    try:
        body = response.json()
    except ValueError:
        return None, False
    if not isinstance(body, dict) or set(body) != {"error"}:
        return None, False
    error = body["error"]
    if isinstance(error, dict) and {"code", "message"} <= set(error):
        return str(error["code"]), True
    return None, False


class Load:
    """``clients`` users talking at once through ``base_url``, each ``turns`` typed turns back to back (a
    new session every ``TURNS_PER_SESSION``); after each answered turn the user fetches its video and its
    summary. ``stop`` ends it early (after the requests under way)."""

    def __init__(self, base_url: str, *, clients: int, turns: int) -> None:
        self.base_url = base_url
        self.clients = clients
        self.turns = turns
        self.outcomes: list[Outcome] = []
        self.stop = asyncio.Event()
        self._t0 = time.perf_counter()
        self.wall = 0.0

    def now(self) -> float:
        return time.perf_counter() - self._t0

    async def run(self) -> list[Outcome]:
        self._t0 = time.perf_counter()
        limits = httpx.Limits(max_connections=4 * self.clients)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
            await asyncio.gather(*(self._user(http, index) for index in range(self.clients)))
        self.wall = self.now()
        return self.outcomes

    async def _user(self, http: httpx.AsyncClient, index: int) -> None:
        session_id: str | None = None
        for k in range(self.turns):
            if self.stop.is_set():
                return
            if k % TURNS_PER_SESSION == 0:
                session_id = None
            text = f"Client {index}, turn {k}. {QUESTION}"
            form = {"text": text, **({"session_id": session_id} if session_id else {})}
            turn, body = await self._request(http, "turn", "POST", TURN_ROUTE, index, data=form)
            turn.text, turn.session_id = text, session_id
            if not turn.ok or body is None:
                continue  # the user keeps the session and asks the next question
            session_id = turn.session_id = str(body["session_id"])
            turn.result_id = str(body["id"])
            video, _ = await self._request(http, "video", "GET", str(body["video_url"]), index)
            summary, _ = await self._request(http, "summary", "GET", RESULT_ROUTE.format(turn.result_id), index)
            video.result_id = summary.result_id = turn.result_id

    async def _request(
        self, http: httpx.AsyncClient, kind: str, method: str, url: str, client: int, **kwargs: Any
    ) -> tuple[Outcome, dict[str, Any] | None]:
        started = self.now()
        outcome = Outcome(kind, method, client, started, 0.0, None, None)
        body: dict[str, Any] | None = None
        try:
            async with http.stream(method, url, **kwargs) as response:
                # The answer's head first: which replica it came from is known even if its body is cut.
                outcome.status = response.status_code
                outcome.replica = response.headers.get("x-avatar-replica")
                await response.aread()
        except httpx.HTTPError as exc:
            outcome.status = None  # no whole answer: a failure whatever the head said
            outcome.error_code, outcome.clean = type(exc).__name__, False
        else:
            if not outcome.ok:
                outcome.error_code, outcome.clean = error_code(response)
            elif response.headers.get("content-type", "").startswith("application/json"):
                body = response.json()
        outcome.seconds = self.now() - started
        self.outcomes.append(outcome)
        return outcome, body


@dataclass
class Failover:
    """What happened to the replica killed under load, in seconds since the load began."""

    victim: str
    victim_busy_at_kill: bool = False
    kill_sent_at: float = 0.0  # SIGKILL sent
    killed_at: float = 0.0  # the process is gone (a large process takes a moment to die)
    marked_down_after_s: float = 0.0
    restarted_at: float = 0.0
    ready_after_s: float = 0.0
    rejoined_at: float = 0.0
    served_after_rejoin: int = 0


async def kill_and_restart(
    cluster: Cluster, load: Load, victim: str, *, kill_after_turns: int, serve_after_rejoin: int = 3
) -> Failover:
    """Once ``kill_after_turns`` turns were answered and ``victim`` is running one, SIGKILL it; when
    HAProxy has taken it out, start it again on its port; once HAProxy sends it requests again and it has
    answered ``serve_after_rejoin`` of them, stop the load."""
    report = Failover(victim)
    direct = cluster.servers[victim].base_url
    async with httpx.AsyncClient(timeout=5.0) as http:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answered = sum(o.ok for o in load.outcomes if o.kind == "turn")
            if answered >= kill_after_turns and await _running_a_turn(http, direct):
                report.victim_busy_at_kill = True
                break
            await asyncio.sleep(0.05)
    report.kill_sent_at = load.now()
    await asyncio.to_thread(cluster.kill, victim)
    report.killed_at = load.now()
    report.marked_down_after_s = await asyncio.to_thread(cluster.balancer.wait_status, victim, "DOWN", 30.0)
    await asyncio.sleep(2.0)  # the others carry the load alone for a moment
    report.restarted_at = load.now()
    await asyncio.to_thread(cluster.restart, victim)
    report.ready_after_s = await asyncio.to_thread(cluster.servers[victim].wait_ready, 240.0)
    await asyncio.to_thread(cluster.balancer.wait_status, victim, "UP", 30.0)
    report.rejoined_at = load.now()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not load.stop.is_set():
        report.served_after_rejoin = sum(o.replica == victim and o.started >= report.rejoined_at for o in load.outcomes)
        if report.served_after_rejoin >= serve_after_rejoin:
            break
        await asyncio.sleep(0.1)
    load.stop.set()
    return report


async def _running_a_turn(http: httpx.AsyncClient, base_url: str) -> bool:
    try:
        body = (await http.get(f"{base_url}/readyz")).json()
    except (httpx.HTTPError, ValueError):
        return False
    return bool(body.get("queue", {}).get("running"))


@dataclass
class Audit:
    """What the shared stores hold after a load, against what clients were told succeeded."""

    results_missing: list[str] = field(default_factory=list)  # answered turns without a complete folder
    results_unreadable: list[str] = field(default_factory=list)  # (replica, id) summaries not served
    turns_missing_in_redis: list[str] = field(default_factory=list)  # answered turns absent from history
    unexpected_in_redis: list[str] = field(default_factory=list)  # history of turns no client sent
    staging_leftovers: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.results_missing) + len(self.results_unreadable) + len(self.turns_missing_in_redis)


def audit(cluster: Cluster, outcomes: list[Outcome]) -> Audit:
    """Every answered turn has its result in the shared folder, readable through every replica, and its
    exchange in its Redis session; Redis holds no turn nobody sent; no half-written turn remains."""
    report = Audit()
    answered = [o for o in outcomes if o.kind == "turn" and o.ok and o.result_id]
    for turn in answered:
        folder = cluster.output_dir / str(turn.result_id)
        if not all((folder / name).is_file() for name in RESULT_FILES):
            report.results_missing.append(str(turn.result_id))
    with httpx.Client(timeout=30.0) as http:
        for name, server in cluster.servers.items():
            for turn in answered:
                if http.get(server.base_url + RESULT_ROUTE.format(turn.result_id)).status_code != 200:
                    report.results_unreadable.append(f"{name}:{turn.result_id}")
    sent = {o.text for o in outcomes if o.kind == "turn" and o.text}
    client = cluster.redis_server.client()
    try:
        for session_id in {str(t.session_id) for t in answered}:
            stored = [json.loads(raw)["user"] for raw in client.lrange(KEY_PREFIX + session_id, 0, -1)]
            expected = [str(t.text) for t in answered if t.session_id == session_id]
            report.turns_missing_in_redis += [text for text in expected if text not in stored]
            report.unexpected_in_redis += [text for text in stored if text not in sent]
    finally:
        client.close()
    staging = cluster.output_dir / ".staging"
    report.staging_leftovers = [str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()]
    return report


def summarize(outcomes: list[Outcome], wall: float) -> dict[str, Any]:
    """Requests sent, succeeded and failed (by error code), and latency of the successful ones, per kind."""
    by_kind: dict[str, Any] = {}
    for kind in ("turn", "video", "summary"):
        mine = [o for o in outcomes if o.kind == kind]
        ok = [o.seconds for o in mine if o.ok]
        latency = spread(ok)
        by_kind[kind] = {
            "sent": len(mine),
            "succeeded": len(ok),
            "failed": len(mine) - len(ok),
            "errors": dict(Counter(f"{o.status} {o.error_code}" for o in mine if not o.ok)),
            "latency_s": latency.as_dict() if latency else None,
        }
    answered = by_kind["turn"]["succeeded"]
    return {
        "sent": len(outcomes),
        "succeeded": sum(o.ok for o in outcomes),
        "failed": sum(not o.ok for o in outcomes),
        "unclean": sum(not o.clean for o in outcomes),
        "wall_s": round(wall, 3),
        "turns_per_min": round(60 * answered / wall, 2) if wall > 0 else 0.0,
        "turns_by_replica": dict(Counter(o.replica or "-" for o in outcomes if o.kind == "turn" and o.ok)),
        "by_kind": by_kind,
    }


def replica_env(replicas: int, max_new_tokens: int, threads: int = 0) -> dict[str, str]:
    """The settings each replica runs with: ``threads`` each, or the machine's cores split between them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {
        "AVATAR_THREADS": str(threads or max(1, cores // replicas)),
        "AVATAR_LLM_MAX_NEW_TOKENS": str(max_new_tokens),
    }


@dataclass
class Options:
    replicas: tuple[int, ...] = (1, 2, 3)
    clients: int = 4
    turns: int = 5  # per client, at each replica count
    failover: int = 2  # replicas in the failover run (0: none)
    failover_turns: int = 40  # the most turns per client in the failover run (it stops once the victim is back)
    max_new_tokens: int = 16
    threads: int = 0  # per replica; 0: the machine's cores split between the replicas


def run_level(work_dir: Path, replicas: int, options: Options, log: Callable[[str], None]) -> dict[str, Any]:
    """A cluster of ``replicas``; the load through HAProxy; its figures and audit."""
    with Cluster(work_dir, replicas, env=replica_env(replicas, options.max_new_tokens, options.threads)) as cluster:
        log(f"{replicas} replica(s) ready; {options.clients} clients x {options.turns} turns")
        load = Load(cluster.balancer.base_url, clients=options.clients, turns=options.turns)
        outcomes = asyncio.run(load.run())
        return {"replicas": replicas, **summarize(outcomes, load.wall), "audit": asdict(audit(cluster, outcomes))}


def run_failover(work_dir: Path, options: Options, log: Callable[[str], None]) -> dict[str, Any]:
    replicas = options.failover
    with Cluster(work_dir, replicas, env=replica_env(replicas, options.max_new_tokens, options.threads)) as cluster:
        victim = list(cluster.servers)[-1]
        log(f"failover: {replicas} replicas, {victim} killed under load and restarted")
        load = Load(cluster.balancer.base_url, clients=options.clients, turns=options.failover_turns)

        async def both() -> Failover:
            chaos = asyncio.create_task(kill_and_restart(cluster, load, victim, kill_after_turns=options.clients))
            await load.run()
            return await chaos

        event = asyncio.run(both())
        outcomes = load.outcomes
        on_victim = failed_on_victim(outcomes, event)
        return {
            "replicas": replicas,
            **summarize(outcomes, load.wall),
            "failover": asdict(event),
            "failed_in_flight_at_kill": len(on_victim),
            "failed_otherwise": sum(not o.ok for o in outcomes) - len(on_victim),
            "audit": asdict(audit(cluster, outcomes)),
        }


def failed_on_victim(outcomes: list[Outcome], event: Failover) -> list[Outcome]:
    """The failures the kill explains: under way when it happened, and either a turn HAProxy answered
    with its JSON 502 (no replica answered it, so no X-Avatar-Replica), a turn sent while the victim was
    dying that HAProxy was still passing on (HAProxy then cuts the client's connection: no answer at
    all), or a download whose answer the victim had begun and could not finish (nobody can retry half a
    body; the client asks again)."""

    def explained(o: Outcome) -> bool:
        # Under way while the process died: its socket accepts connections until its very end.
        if o.ok or not (o.started <= event.killed_at and o.ended >= event.kill_sent_at):
            return False
        if o.method == "POST":
            if o.status is None and o.replica is None:
                return o.started >= event.kill_sent_at
            return o.replica is None and o.clean and o.status == 502
        return o.status is None and o.replica == event.victim

    return [o for o in outcomes if explained(o)]


def run(options: Options, log: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine.describe(), "options": asdict(options), "levels": []}
    with tempfile.TemporaryDirectory(prefix="avatar-replicas-") as tmp:
        for replicas in options.replicas:
            result["levels"].append(run_level(Path(tmp) / f"level-{replicas}", replicas, options, log))
        if options.failover:
            result["failover"] = run_failover(Path(tmp) / "failover", options, log)
    result["machine"]["load_average_end"] = machine.load_average()
    return result


def markdown(result: Mapping[str, Any]) -> str:
    m = result["machine"]
    o = result["options"]
    lines = [
        f"# Replicas behind HAProxy ({m['cpu']}, {m['cores']} cores, commit {m['commit']})",
        "",
        f"{o['clients']} clients, each {o['turns']} typed turns (then the video and summary of each), "
        f"replies of at most {o['max_new_tokens']} tokens; replicas share the machine's cores "
        f"(AVATAR_THREADS per replica: {o.get('threads') or 'cores / replicas'}). Load average at the start "
        f"{m['load_average_start']}, at the end {m.get('load_average_end')}: other work on the machine "
        "slows every figure.",
        "",
        "| replicas | requests sent | succeeded | failed | turn p50 / p95 (s) | video p50 (s) | turns/min | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in [*result["levels"], *([result["failover"]] if "failover" in result else [])]:
        turn = row["by_kind"]["turn"]["latency_s"] or {"p50": float("nan"), "p95": float("nan")}
        video = row["by_kind"]["video"]["latency_s"] or {"p50": float("nan")}
        lost = row["audit"]
        name = f"{row['replicas']}" + (" (one killed, restarted)" if "failover" in row else "")
        lines.append(
            f"| {name} | {row['sent']} | {row['succeeded']} | {row['failed']} | {turn['p50']:.2f} / {turn['p95']:.2f} "
            f"| {video['p50']:.3f} | {row['turns_per_min']} | "
            f"{len(lost['results_missing']) + len(lost['results_unreadable']) + len(lost['turns_missing_in_redis'])} |"
        )
    if "failover" in result:
        f = result["failover"]
        e = f["failover"]
        lines += [
            "",
            f"Failover: {e['victim']} killed at {e['killed_at']:.1f} s (running a turn: {e['victim_busy_at_kill']}), "
            f"taken out by HAProxy {e['marked_down_after_s']:.2f} s later, restarted at {e['restarted_at']:.1f} s, "
            f"ready {e['ready_after_s']:.1f} s after, back in rotation at {e['rejoined_at']:.1f} s and served "
            f"{e['served_after_rejoin']} requests after. Failed: {f['failed_in_flight_at_kill']} in flight on it at "
            f"the kill, {f['failed_otherwise']} otherwise; errors {f['by_kind']['turn']['errors']}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avatar.bench.replicas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3], help="replica counts to measure")
    parser.add_argument("--clients", type=int, default=4, help="users talking at once")
    parser.add_argument("--turns", type=int, default=5, help="turns per user at each replica count")
    parser.add_argument("--failover", type=int, default=2, help="replicas in the kill-and-restart run (0: skip)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="reply length limit (AVATAR_LLM_MAX_NEW_TOKENS)")
    parser.add_argument("--threads", type=int, default=0, help="AVATAR_THREADS per replica (default: cores / replicas)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the report (default bench/results)")
    args = parser.parse_args(argv)
    if args.failover == 1 or min(args.replicas) < 1:
        parser.error("replica counts are at least 1, and a failover run needs at least 2 replicas")
    options = Options(
        tuple(args.replicas),
        args.clients,
        args.turns,
        args.failover,
        max_new_tokens=args.max_new_tokens,
        threads=max(0, args.threads),
    )
    from avatar.bench.report import RESULTS_DIR

    result = run(options, lambda message: print(message, file=sys.stderr, flush=True))
    out = args.out or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"replicas-{machine.timestamp()}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"written: {stem}.json, {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
