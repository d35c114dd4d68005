"""The `avatar bench` and `avatar eval` commands: their options and what they run."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_TARGET_MISSED = 3
"""Distinct from the CLI's 1 (internal error) and 2 (user error): the run worked, a figure fell short."""


def add_commands(sub: Any) -> None:
    """Register ``bench`` and ``eval`` on the CLI's sub-command parser (imports nothing heavy)."""
    bench = sub.add_parser("bench", help="benchmark turns in-process and over HTTP (bench/results/)")
    bench.add_argument("--quick", action="store_true", help="smoke run: one repetition, 1-2 clients, no profile")
    bench.add_argument("--reps", type=int, default=None, help="repetitions per turn (default 3)")
    bench.add_argument("--no-http", action="store_true", help="skip the HTTP service")
    bench.add_argument("--live", action="store_true", help="benchmark live mode (WebRTC sessions) instead")
    bench.add_argument(
        "--contended",
        action="store_true",
        help="keep one core busy with another process for the whole run (a busy laptop)",
    )
    bench.add_argument(
        "--ab",
        action="store_true",
        help="--contended: the LLM's threads fixed against following the free cores, turns alternating (in-process)",
    )
    bench.add_argument(
        "--runtimes",
        action="store_true",
        help="compare the two llama.cpp runtimes (xllamacpp, the source-built llama-cpp-python) instead",
    )
    bench.add_argument(
        "--threads",
        action="append",
        type=_thread_pair,
        metavar="WRITING/READING",
        help="--runtimes: a thread pair to measure, e.g. 1/2 (repeatable; default 1/1, 2/2 and 1/2)",
    )
    bench.add_argument("--no-profile", action="store_true", help="skip profiling the hottest stage")
    bench.add_argument("--strict", action="store_true", help=f"exit {EXIT_TARGET_MISSED} when a target is missed")
    bench.add_argument(
        "--make-fixtures",
        action="store_true",
        help="speak the benchmark questions and ASR clips into bench/fixtures/ (once) and stop",
    )
    bench.add_argument("--out", type=Path, default=None, help="folder for the results (default bench/results)")
    bench.add_argument("--thresholds", type=Path, default=None, help=argparse.SUPPRESS)

    ev = sub.add_parser("eval", help=f"measure quality; exit {EXIT_TARGET_MISSED} if a figure misses its threshold")
    ev.add_argument("--quick", action="store_true", help="fewer sentences and portrait variants")
    ev.add_argument(
        "--only",
        action="append",
        choices=("replies", "asr", "tts", "voices", "lipsync", "faces", "visemes"),
        default=None,
        help="run only this section (repeatable)",
    )
    ev.add_argument("--out", type=Path, default=None, help="folder for the report (default bench/results)")
    ev.add_argument("--thresholds", type=Path, default=None, help="the limits (default bench/thresholds.toml)")


def _thread_pair(text: str) -> tuple[int, int]:
    """``1/2`` → (1, 2): threads writing the reply / reading the prompt, each 1-256."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= 256 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: give two thread counts, writing/reading, e.g. 1/2")
    return int(parts[0]), int(parts[1])


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``bench`` or ``eval``; the exit code says whether the targets were met."""
    from avatar.config import load_settings

    settings = load_settings()
    if args.command == "bench" and args.make_fixtures:
        return _make_fixtures(settings)
    from avatar.bench import machine
    from avatar.bench.report import RESULTS_DIR, write_bench, write_eval
    from avatar.bench.targets import THRESHOLDS, Check, failed, load_thresholds

    limits = load_thresholds(args.thresholds or THRESHOLDS)
    out_dir = args.out or RESULTS_DIR
    stamp = machine.timestamp()
    if args.command == "bench" and args.runtimes:
        return _runtimes(settings, args, out_dir, stamp)
    if args.command == "bench" and args.ab:
        return _adaptation_ab(settings, args, out_dir, stamp)
    if args.command == "bench" and args.live:
        from avatar.bench.live import LiveBenchOptions, live_checks, run_live_bench
        from avatar.bench.live_report import write_live

        live_options = LiveBenchOptions.quick_run() if args.quick else LiveBenchOptions()
        if args.reps is not None:
            live_options = dataclasses.replace(live_options, reps=max(1, args.reps))
        result = run_live_bench(settings, live_options, log=_log)
        checks = live_checks(result["summary"], limits["bench"])
        result["targets"] = [c.as_dict() for c in checks]
        written = write_live(result, out_dir, stamp)
        strict = args.strict
    elif args.command == "bench":
        from avatar.bench.runner import BenchOptions, bench_checks, run_bench

        options = BenchOptions.quick_run(http=not args.no_http) if args.quick else BenchOptions(http=not args.no_http)
        if args.reps is not None:
            options = dataclasses.replace(options, reps=max(1, args.reps))
        if args.no_profile:
            options = dataclasses.replace(options, profile=False)
        with contextlib.ExitStack() as busy:
            if args.contended:
                from avatar.bench.contention import DESCRIPTION, one_core_busy

                busy.enter_context(one_core_busy())
                _log(f"contended: {DESCRIPTION}")
            result = run_bench(settings, options, log=_log)
        if args.contended:
            from avatar.bench.contention import idle_reference

            result["contended"] = DESCRIPTION
            result["idle_reference"] = idle_reference(out_dir)
        checks = bench_checks(result, limits["bench"])
        result["targets"] = [c.as_dict() for c in checks]
        written = write_bench(result, out_dir, stamp + ("-contended" if args.contended else ""))
        strict = args.strict
    else:
        from avatar.bench.eval import EvalOptions, run_eval

        only = tuple(args.only or ())
        result = run_eval(settings, EvalOptions(quick=args.quick), limits["eval"], log=_log, only=only)
        checks = [Check(**row) for row in result.pop("checks")]
        result["targets"] = [c.as_dict() for c in checks]
        written = write_eval(result, out_dir, stamp)
        strict = True
    for check in checks:
        print(f"{check.status:>12}  {check.label}: {check.verdict()}")
    for path in written:
        print(path)
    missed = failed(checks, unmeasured_fails=args.command == "eval")
    return EXIT_TARGET_MISSED if strict and missed else 0


def _runtimes(settings: Any, args: argparse.Namespace, out_dir: Path, stamp: str) -> int:
    import json

    from avatar.bench import machine
    from avatar.bench.report import machine_line
    from avatar.bench.runtimes import markdown, run_runtimes

    loads = [os.getloadavg()[0]]
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{stamp}-runtimes.md"

    def write(result: dict[str, Any]) -> None:
        result |= {"stamp": stamp, "machine": machine.describe(), "load_average": [*loads, os.getloadavg()[0]]}
        (out_dir / f"{stamp}-runtimes.json").write_text(json.dumps(result, indent=1) + "\n")
        before, after = result["load_average"][0], result["load_average"][-1]
        header = f"# llama.cpp runtimes, {stamp}\n\nMachine: {machine_line(result['machine'])}; load average "
        md.write_text(header + f"{before:.1f} before, {after:.1f} after.\n\n{markdown(result)}\n")

    threads = tuple(args.threads or ((1, 1), (2, 2), (1, 2)))
    write(run_runtimes(settings, reps=args.reps or (1 if args.quick else 4), threads=threads, log=_log, on_rows=write))
    print(md.read_text())
    return 0


def _adaptation_ab(settings: Any, args: argparse.Namespace, out_dir: Path, stamp: str) -> int:
    import json

    from avatar.bench import machine
    from avatar.bench.adapt_ab import markdown, run_adaptation_ab
    from avatar.bench.contention import DESCRIPTION, one_core_busy
    from avatar.bench.report import machine_line

    if not args.contended:
        _log("--ab compares the two with one core busy: add --contended")
        return 2
    started, described = time.perf_counter(), machine.describe()
    with one_core_busy():
        _log(f"contended: {DESCRIPTION}")
        result = run_adaptation_ab(settings, reps=args.reps or (1 if args.quick else 2), log=_log)
    described |= {"load_average_end": machine.load_average(), "elapsed_s": round(time.perf_counter() - started, 1)}
    result |= {"stamp": stamp, "machine": described, "contended": DESCRIPTION}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stamp}-contended-ab.json").write_text(json.dumps(result, indent=1) + "\n")
    md = out_dir / f"{stamp}-contended-ab.md"
    title = f"# Threads fixed (A) or following the free cores (B), {stamp}"
    md.write_text(f"{title}\n\nMachine: {machine_line(described)}.\nContended: {DESCRIPTION}.\n\n{markdown(result)}\n")
    print(md.read_text())
    return 0


def _make_fixtures(settings: Any) -> int:
    from avatar.bench.fixtures import make_fixtures
    from avatar.runtime import running

    with running(settings, kinds=("tts",)) as runtime:
        for path in make_fixtures(runtime.registry.get("tts")):
            print(path)
    return 0
