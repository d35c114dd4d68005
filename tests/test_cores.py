"""The LLM's threads following the free cores (avatar/cores.py): the governor's rules on scripted
readings, the meter on scripted /proc/stat counters and on the real machine with a real busy process,
and both llama.cpp runtimes adapting on a real small model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from avatar import embedded
from avatar.backends.llamacpp_llm import LlamaCppOptions
from avatar.cores import CoreReading, CoreWatch, CpuMeter, ThreadGovernor, ThreadPolicy, allowed_cores
from avatar.types import ChatMessage

TWO_CORES = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to keep one busy")
QUESTION = [ChatMessage("system", "You are Eileen, a retired astronaut."), ChatMessage("user", "Hello!")]


def feed(governor: ThreadGovernor, others: float, seconds: float, *, start: float, allowed: float = 2.0) -> float:
    """Readings every 0.5 s for ``seconds`` with ``others`` cores taken; the time after the last."""
    t = start
    while t < start + seconds:
        governor.observe(CoreReading(t, allowed, others))
        t += 0.5
    return t


# ------------------------------------------------------------------------------------------ governor


def test_spinning_threads_drop_to_the_free_core_within_the_short_window_and_come_back_after_quiet() -> None:
    governor = ThreadGovernor(2, spins=True)
    t = feed(governor, 0.05, 5.0, start=0.0)
    assert governor.decision.threads == 2 and governor.changes == 0
    t = feed(governor, 1.0, 2.0, start=t)  # a busy loop takes a core
    assert governor.decision.threads == 1
    assert "other processes use" in governor.decision.reason and governor.decision.at <= t
    busy_ended = t = feed(governor, 1.0, 20.0, start=t)
    assert governor.decision.threads == 1 and governor.changes == 1  # decided once, not at every reading
    t = feed(governor, 0.05, 9.0, start=t)
    assert governor.decision.threads == 1  # quiet, but not for long enough yet
    feed(governor, 0.05, 5.0, start=t)
    assert governor.decision.threads == 2 and "quiet for 10 s" in governor.decision.reason
    assert governor.decision.at - busy_ended >= ThreadPolicy().quiet_window_s


def test_a_load_between_the_margins_changes_nothing_either_way() -> None:
    at_two = ThreadGovernor(2, spins=True)
    feed(at_two, 0.5, 30.0, start=0.0)  # below the 0.6 that takes a thread away
    assert at_two.decision.threads == 2
    at_one = ThreadGovernor(2, spins=True)
    t = feed(at_one, 1.0, 3.0, start=0.0)
    feed(at_one, 0.4, 60.0, start=t)  # above the 0.3 that gives it back
    assert at_one.decision.threads == 1 and at_one.changes == 1


def test_a_short_burst_is_averaged_over_the_window() -> None:
    governor = ThreadGovernor(2, spins=True)
    t = feed(governor, 0.0, 3.0, start=0.0)
    governor.observe(CoreReading(t, 2.0, 1.5))  # one busy half-second: the 2 s mean is 0.3
    assert governor.decision.threads == 2


def test_many_cores_drop_by_what_the_others_take_and_climb_back_a_step_at_a_time() -> None:
    governor = ThreadGovernor(8, spins=True)
    t = feed(governor, 2.5, 2.5, start=0.0, allowed=8.0)
    assert governor.decision.threads == 6  # floor(8 + 0.6 - 2.5)
    t = feed(governor, 0.0, 12.5, start=t, allowed=8.0)  # the 2 s mean settles, then 10 s quiet
    assert governor.decision.threads == 7
    feed(governor, 0.0, 12.5, start=t, allowed=8.0)
    assert governor.decision.threads == 8


def test_passive_threads_keep_their_count_beside_busy_processes_but_never_exceed_the_cores() -> None:
    governor = ThreadGovernor(2, spins=False)
    t = feed(governor, 1.9, 10.0, start=0.0)
    assert governor.decision.threads == 2 and governor.changes == 0
    t = feed(governor, 0.0, 1.0, start=t, allowed=1.0)  # the process was pinned to one core
    assert governor.decision.threads == 1 and "only 1 core" in governor.decision.reason
    feed(governor, 0.0, 1.0, start=t, allowed=2.0)
    assert governor.decision.threads == 2 and governor.changes == 2


def test_without_a_measure_of_the_others_it_keeps_the_configured_count() -> None:
    governor = ThreadGovernor(2, spins=True)
    for i in range(40):
        assert governor.observe(CoreReading(i * 0.5, 2.0, None)) is None
    assert governor.decision.threads == 2 and governor.decision.others is None


def test_a_configured_count_of_one_is_never_raised() -> None:
    governor = ThreadGovernor(1, spins=True)
    feed(governor, 0.0, 60.0, start=0.0, allowed=4.0)
    assert governor.decision.threads == 1 and governor.changes == 0


# --------------------------------------------------------------------------------------------- meter


def _stat(path: Path, busy: dict[int, int], idle: int = 1000) -> None:
    lines = ["cpu 0 0 0 0 0 0 0 0 0 0"]
    for cpu, ticks in busy.items():  # user nice system idle iowait irq softirq steal guest guest_nice
        lines.append(f"cpu{cpu} {ticks - 10} 0 5 {idle} 7 2 1 2 0 0")
    path.write_text("\n".join([*lines, "intr 1 2 3", "ctxt 5"]) + "\n")


def test_the_meter_counts_the_others_on_our_cores_less_our_own_time(tmp_path: Path) -> None:
    mine = sorted(os.sched_getaffinity(0))
    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    clock, own = [100.0], [10.0]
    meter = CpuMeter(stat, clock=lambda: clock[0], own_cpu=lambda: own[0], cores=lambda: float(len(mine)))
    _stat(stat, {**{c: 1000 for c in mine}, 999: 50})
    assert meter.read().others is None  # the first reading is the baseline
    clock[0] += 2.0  # 2 s later: every one of our CPUs 1 s busier (hz ticks), we used 0.5 s of it ...
    own[0] += 0.5
    _stat(stat, {**{c: 1000 + hz for c in mine}, 999: 50 + 10 * hz})  # ... and a CPU not ours was busy
    reading = meter.read()
    assert reading.others == pytest.approx((len(mine) * 1.0 - 0.5) / 2.0)
    assert reading.allowed == len(mine)


def test_allowed_cores_follow_the_affinity_and_a_cgroup_quota(tmp_path: Path) -> None:
    assert allowed_cores(tmp_path) == len(os.sched_getaffinity(0))  # no cgroup file there
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("50000 100000\n")
    assert allowed_cores(tmp_path) == 1.0  # half a core is still one thread
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("max 100000\n")
    assert allowed_cores(tmp_path) == len(os.sched_getaffinity(0))


@pytest.fixture
def busy_core() -> Iterator[subprocess.Popen[bytes]]:
    """Another process spinning on the first core we may use, as a browser would keep it busy."""
    cpu = min(os.sched_getaffinity(0))
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    busy = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.3)
    yield busy
    busy.kill()
    busy.wait()


@TWO_CORES
def test_the_meter_sees_a_real_busy_process(busy_core: subprocess.Popen[bytes]) -> None:
    meter = CpuMeter()
    meter.read()
    time.sleep(1.0)
    reading = meter.read()
    # The loop has a core to itself or shares it with the machine's other work: either way others take it.
    assert reading.others is not None and reading.others >= 0.6


# ------------------------------------------------------------------------------------- real models


def _wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def gguf() -> Path:
    return embedded.package_dirs(embedded.SMOLLM2)[0] / embedded.SMOLLM2_GGUF


@TWO_CORES
def test_spinning_llama_cpp_threads_drop_to_one_while_a_process_keeps_a_core_busy(
    gguf: Path, busy_core: subprocess.Popen[bytes]
) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="the source-built runtime (make install-llama-source)")
    from avatar.backends.llamacpp_llm import LlamaCppChat

    chat = LlamaCppChat(gguf, LlamaCppOptions(threads=1, alone_threads=2, temperature=0.0, context_tokens=512))
    watch = CoreWatch(chat, writing=1, reading=2, tick=0.2, policy=ThreadPolicy(down_window_s=1.0))
    watch.start()
    try:
        assert _wait_for(lambda: watch.applied == (1, 1), 5.0), watch.status()
        status = watch.status()
        assert status["llm_reading"] == 1 and status["engine_waits"] == "spinning"
        assert status["others_busy_cores"] >= 0.6 and "other processes use" in status["reason"]
        assert chat.reply(QUESTION, max_new_tokens=4)
        assert llama_cpp.llama_n_threads_batch(chat._llm.ctx) == 1  # the context itself reads with one
    finally:
        watch.stop()
        chat.close()


@TWO_CORES
def test_xllamacpp_reloads_with_the_cores_it_may_use_and_keeps_its_cached_prompt(gguf: Path) -> None:
    from avatar.backends.xllamacpp_llm import XLlamaCppChat

    chat = XLlamaCppChat(gguf, LlamaCppOptions(threads=1, alone_threads=2, temperature=0.0, context_tokens=512))
    watch = CoreWatch(chat, writing=1, reading=2, tick=0.2)
    everything = os.sched_getaffinity(0)
    try:
        assert chat.reply(QUESTION, max_new_tokens=6)
        assert chat.spins_while_waiting is False and watch.status()["engine_waits"] == "passively"
        watch.start()
        os.sched_setaffinity(0, {min(everything)})  # this process may now use one core
        assert _wait_for(lambda: chat.options.alone_threads == 1, 10.0), watch.status()
        assert chat.last_reload_seconds is not None and chat.last_reload_seconds < 10
        assert chat.reply(QUESTION, max_new_tokens=6)  # (not the same words: other threads sum in another order)
        assert chat.last_reused_tokens == chat.last_prompt_tokens - 1  # the KV cache came through it
        os.sched_setaffinity(0, everything)
        assert _wait_for(lambda: chat.options.alone_threads == 2, 10.0), watch.status()
        assert watch.status()["changes"] == 2 and chat.reply(QUESTION, max_new_tokens=6)
        assert chat.last_reused_tokens == chat.last_prompt_tokens - 1
    finally:
        os.sched_setaffinity(0, everything)
        watch.stop()
        chat.close()


# ------------------------------------------------------------------------------ OpenMP's wait policy


def _in_a_new_process(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_openmp_is_told_to_wait_passively_before_torch_can_load_its_libgomp() -> None:
    pytest.importorskip("torch", reason="the case needs torch installed (its libgomp.so.1 is what llama.cpp shares)")
    code = "import avatar, os, torch; print(avatar.OPENMP_WAIT_POLICY, os.environ['OMP_WAIT_POLICY'])"
    assert _in_a_new_process(code) == "PASSIVE PASSIVE"
    assert _in_a_new_process(code, OMP_WAIT_POLICY="active") == "active active"  # the user's value wins


def test_a_libgomp_loaded_before_the_package_is_known_to_spin() -> None:
    pytest.importorskip("torch", reason="the case needs torch installed (its libgomp.so.1 is what llama.cpp shares)")
    code = "import torch, avatar; print(avatar.OPENMP_LOADED_BEFORE, avatar.OPENMP_WAIT_POLICY)"
    if _in_a_new_process("import torch, avatar; print(avatar.OPENMP_LOADED_BEFORE)") != "True":
        pytest.skip("this torch bundles its OpenMP under another name, which llama.cpp does not share")
    assert _in_a_new_process(code) == "True default"  # read before the package could say PASSIVE
    assert _in_a_new_process(code, OMP_WAIT_POLICY="PASSIVE") == "True PASSIVE"  # the user said it in time
