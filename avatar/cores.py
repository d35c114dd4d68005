"""Threads that follow the cores this process actually gets: fewer llama.cpp threads while other
processes take cores, the configured count again once the machine is quiet. No setting needed.

What it watches (``CpuMeter``, twice a second): the cores this process may run on (its CPU affinity,
capped by a cgroup CPU quota) and how much of them *other* processes used meanwhile: the busy time of
those CPUs in ``/proc/stat`` (steal time included: a hypervisor that takes the CPU takes it from us)
minus this process's own CPU time. Where there is no ``/proc/stat`` the 1-minute load average less this
process's own use stands in. It is the cause itself, measured directly: the model's own token times mix
it with the prompt's length, the face being drawn beside it and the reply, and they say only that a
turn was slow, not how many threads would have been faster (to find out by trying, one try with two
spinning threads on one free core costs a 12 s reply).

What it decides (``ThreadGovernor``, pure logic, driven by scripted readings in the tests), with ``C``
the cores we may use, ``n`` the threads now and ``others`` the other processes' use, in cores:

- never more threads than ``C`` (a thread beyond the cores only fights the others of its own model);
- for an engine whose threads **spin** while they wait for each other (ggml's own thread pool in the
  source-built llama-cpp-python, or OpenMP told to wait actively): down at once to the cores left,
  ``floor(C + 0.6 - others)``, when the mean over the last 2 s says fewer would do; back up, one step
  at ``floor(C + 0.3 - others)``, only once that has held for 10 s. The two margins are the hysteresis:
  a busy loop on one of two cores measures 0.67-1.0 core (less while our own threads share it), above
  0.6; a quiet machine's daemons measure 0.0-0.2, below 0.3. Measured here (2 cores, one core pinned
  busy): reading the prompt with two threads took the first token 3.8 s and the first spoken piece
  12.7 s, with one 0.15 s and 0.5 s;
- for an engine whose threads **wait passively** (xllamacpp, ``OMP_WAIT_POLICY=PASSIVE``): only the
  first rule. A sleeping worker gives its core away, and the scheduler shares the cores by runnable
  threads, so two threads still got more done than one beside the busy loop: first token 0.22 s with
  two reading threads against 0.66 s with one, load 7.5 (docs/benchmarks.md, "A busy machine").

``CoreWatch`` runs the meter and the governor on a daemon thread and hands a new decision to the model
(``set_threads``): llama-cpp-python changes its counts between two calls; xllamacpp reloads its engine
(about 1 s; its KV cache is saved and restored, so the cached prompt is not read again). Decisions are
logged, and ``status()`` is on ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often the watch reads the meter
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (guest is inside user already)


@dataclass(frozen=True)
class CoreReading:
    """One look at the machine: ``allowed`` cores this process may run on, ``others`` the cores' worth of
    CPU other processes used on them since the previous look (None: not known yet)."""

    at: float
    allowed: float
    others: float | None


@dataclass(frozen=True)
class ThreadPolicy:
    """The governor's windows and margins (module docstring: why these)."""

    down_window_s: float = 2.0
    quiet_window_s: float = 10.0
    down_margin: float = 0.6
    up_margin: float = 0.3


@dataclass(frozen=True)
class Decision:
    """What the governor decided, and on what: the thread count (an upper bound for each phase), the
    cores, the other processes' use it saw (mean over the short window), and why."""

    threads: int
    allowed: float
    others: float | None
    reason: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "cores": round(self.allowed, 2),
            "others_busy_cores": None if self.others is None else round(self.others, 2),
            "reason": self.reason,
        }


class ThreadGovernor:
    """Decides the thread count from a stream of ``CoreReading`` (module docstring: the rules).

    ``configured`` is the most the model was set to use; ``spins`` whether its threads spin while they
    wait. ``observe`` returns the new ``Decision`` when the count changes, else None; ``decision`` is the
    latest either way."""

    def __init__(self, configured: int, *, spins: bool, policy: ThreadPolicy = ThreadPolicy()) -> None:
        self.configured = max(1, configured)
        self.spins = spins
        self.policy = policy
        self.decision = Decision(self.configured, 0.0, None, "as configured (nothing measured yet)", 0.0)
        self.changes = 0
        self._recent: deque[tuple[float, float]] = deque()
        self._quiet_since: float | None = None

    def observe(self, reading: CoreReading) -> Decision | None:
        p, now, current = self.policy, reading.at, self.decision.threads
        if reading.others is not None:
            self._recent.append((now, reading.others))
        while self._recent and self._recent[0][0] < now - p.down_window_s:
            self._recent.popleft()
        others = sum(o for _, o in self._recent) / len(self._recent) if self._recent else None
        cap = max(1, math.floor(reading.allowed + 1e-9))
        if current > cap:
            return self._decide(cap, reading, others, f"only {cap} core(s) may be used (affinity or CPU quota)")
        if not self.spins or others is None:
            self._quiet_since = None
            wanted = min(self.configured, cap)
            if wanted > current:
                return self._decide(wanted, reading, others, "as configured: the cores are back")
            why = "no measure of the other processes" if others is None else "threads that wait passively keep it"
            reason = f"as set ({why})" if current == self.configured else self.decision.reason
            self.decision = replace(self.decision, allowed=reading.allowed, others=others, reason=reason)
            return None
        down = _clamp(math.floor(reading.allowed + p.down_margin - others), 1, min(self.configured, cap))
        if down < current:
            self._quiet_since = None
            return self._decide(down, reading, others, f"other processes use {others:.1f} of {reading.allowed:g} cores")
        up = _clamp(math.floor(reading.allowed + p.up_margin - others), 1, min(self.configured, cap))
        if up <= current:
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = now
        elif now - self._quiet_since >= p.quiet_window_s:
            self._quiet_since = None
            return self._decide(
                current + 1, reading, others, f"quiet for {p.quiet_window_s:g} s (others {others:.1f} cores)"
            )
        self.decision = replace(self.decision, allowed=reading.allowed, others=others)
        return None

    def _decide(self, threads: int, reading: CoreReading, others: float | None, reason: str) -> Decision:
        self.decision = Decision(threads, reading.allowed, others, reason, reading.at)
        self.changes += 1
        return self.decision


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


# --------------------------------------------------------------------------------------- the meter


def allowed_cores(root: Path = Path("/")) -> float:
    """The cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = float(len(os.sched_getaffinity(os.getpid())))  # the main thread's: the process's mask
    except (AttributeError, OSError):  # not Linux
        cores = float(os.cpu_count() or 1)
    try:
        quota, period = (root / "sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            cores = min(cores, float(quota) / float(period))
    except (OSError, ValueError):
        pass
    return max(cores, 1.0)


class CpuMeter:
    """Other processes' CPU use on the cores we may use, from ``/proc/stat`` and our own CPU time."""

    def __init__(
        self,
        proc_stat: Path = Path("/proc/stat"),
        *,
        clock: Callable[[], float] = time.monotonic,
        own_cpu: Callable[[], float] = time.process_time,
        cores: Callable[[], float] = allowed_cores,
    ) -> None:
        self.proc_stat, self._clock, self._own_cpu, self._cores = proc_stat, clock, own_cpu, cores
        self._last: tuple[float, float, float] | None = None  # (when, busy core-seconds, our CPU seconds)

    def read(self) -> CoreReading:
        now, own, allowed = self._clock(), self._own_cpu(), self._cores()
        busy = self._busy_seconds()
        others: float | None = None
        if busy is not None and self._last is not None and now > self._last[0]:
            then, busy_then, own_then = self._last
            others = max(0.0, ((busy - busy_then) - (own - own_then)) / (now - then))
        elif busy is None:
            others = self._from_load_average(now, own)
        self._last = (now, busy if busy is not None else 0.0, own)
        return CoreReading(now, allowed, None if others is None else min(others, allowed))

    def _busy_seconds(self) -> float | None:
        """Busy core-seconds of the CPUs in our affinity mask since boot (all CPUs if it is unknown)."""
        try:
            lines = self.proc_stat.read_text().splitlines()
        except OSError:
            return None
        try:
            mine = {f"cpu{i}" for i in os.sched_getaffinity(os.getpid())}
        except (AttributeError, OSError):
            mine = None
        total = 0
        for line in lines:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or (mine is not None and name not in mine):
                continue
            values = [int(v) for v in fields]
            total += sum(values[i] for i in BUSY_FIELDS if i < len(values))
        return total / CLOCK_TICKS

    def _from_load_average(self, now: float, own: float) -> float | None:
        """No /proc/stat: the 1-minute load average less our own recent use (coarse and slow)."""
        if self._last is None or now <= self._last[0] or not hasattr(os, "getloadavg"):
            return None
        own_rate = (own - self._last[2]) / (now - self._last[0])
        return max(0.0, os.getloadavg()[0] - own_rate)


# ------------------------------------------------------------------------------------ the watch


class ThreadedModel(Protocol):
    """A model whose thread counts can change while it is loaded."""

    spins_while_waiting: bool

    def set_threads(self, writing: int, reading: int) -> None: ...


@dataclass
class CoreWatch:
    """Reads the meter every ``tick`` seconds on a daemon thread and applies the governor's decisions to
    ``model``: the writing and reading counts each become the lower of their configured value and the
    decision. ``start``/``stop``; ``status()`` for /readyz and /metrics."""

    model: ThreadedModel
    writing: int
    reading: int
    meter: CpuMeter = field(default_factory=CpuMeter)
    policy: ThreadPolicy = field(default_factory=ThreadPolicy)
    tick: float = TICK_S

    def __post_init__(self) -> None:
        self.governor = ThreadGovernor(
            max(self.writing, self.reading), spins=self.model.spins_while_waiting, policy=self.policy
        )
        self.applied = (self.writing, self.reading)
        self.enabled = True
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self.meter.read()  # the first reading only sets the baseline
        self._thread = threading.Thread(target=self._run, name="core-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def pause(self) -> None:
        """Use the configured counts and stop deciding until ``resume`` (the bench's A/B)."""
        with self._lock:
            self.enabled = False
            self._apply(self.writing, self.reading, "adaptation paused: as configured")

    def resume(self) -> None:
        with self._lock:
            self.enabled = True
            self._apply_decision(self.governor.decision)

    def step(self) -> None:
        """One reading and, when the count changes, its application (the thread's body; tests call it)."""
        decision = self.governor.observe(self.meter.read())
        if decision is not None:
            with self._lock:
                if self.enabled:
                    self._apply_decision(decision)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a failed change is reported, and the watch stops
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("threads: could not change the model's thread counts, adaptation stopped: %s", exc)
                return

    def _apply_decision(self, decision: Decision) -> None:
        self._apply(min(self.writing, decision.threads), min(self.reading, decision.threads), decision.reason)

    def _apply(self, writing: int, reading: int, reason: str) -> None:
        if (writing, reading) == self.applied:
            return
        started = time.perf_counter()
        self.model.set_threads(writing, reading)
        log.info(
            "threads: llm writing %d, reading %d (was %d, %d): %s [%.2f s to apply]",
            writing,
            reading,
            *self.applied,
            reason,
            time.perf_counter() - started,
        )
        self.applied = (writing, reading)

    def status(self) -> dict[str, Any]:
        """What it decided and why (``/readyz``'s ``threads``)."""
        writing, reading = self.applied
        return {
            "adapting": self.enabled and self.error is None,
            "llm_writing": writing,
            "llm_reading": reading,
            "configured": {"llm_writing": self.writing, "llm_reading": self.reading},
            "engine_waits": "spinning" if self.governor.spins else "passively",
            "changes": self.governor.changes,
            **self.governor.decision.as_dict(),
            **({"error": self.error} if self.error else {}),
        }
