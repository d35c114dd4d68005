"""Report writing from real summaries: JSON, Markdown with the targets and margins, and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from avatar.bench.machine import describe
from avatar.bench.report import write_bench, write_eval
from avatar.bench.runner import bench_checks, streaming_gain
from avatar.bench.samples import TurnSample, summarise
from avatar.bench.stats import spread
from avatar.bench.targets import Check, failed, load_thresholds


def _sample(turn: str, mode: str, scale: float) -> TurnSample:
    timings = {"asr": 0.4 * scale, "llm": 2.0 * scale, "tts": 0.05, "avatar": 1.0 * scale, "mux": 0.3}
    timings["total"] = sum(timings.values())
    timings |= {"first_transcript": 0.4 * scale, "first_token": 0.6 * scale, "first_audio": 0.7, "first_frame": 0.8}
    wall = timings["total"] + 0.4
    first = wall if mode == "whole" else 0.9 * scale
    client = {"first_transcript": 0.45 * scale, "first_token": 0.65, "first_frame": first, "first_audio": first}
    return TurnSample(
        turn,
        mode,
        wall,
        timings,
        {"tts": 0.01, "avatar": 0.2},
        6.0 * scale,
        first,
        reply="Hello.",
        transcript="Hi?",
        client=client if mode == "streamed" else {},
    )


def _samples(modes: tuple[str, ...]) -> list[TurnSample]:
    return [
        _sample(t, m, s * (1 + 0.05 * rep))
        for rep in range(3)
        for t, s in (("short", 1.0), ("long", 1.6))
        for m in modes
    ]


def _result() -> dict[str, Any]:
    samples = _samples(("in-process",))
    levels: list[dict[str, Any]] = [
        {
            "clients": c,
            "turns": 3,
            "failed": 0,
            "errors": [],
            "wall_s": 10.0 * c,
            "throughput_per_min": 18 / c,
            "latency": {"p50": 3.0 * c, "p95": 3.5 * c, "min": 3.0, "max": 4.0 * c, "n": 3},
        }
        for c in (1, 2, 4)
    ]
    return {
        "kind": "bench",
        "machine": {**describe(), "load_average_end": [1.0]},
        "options": {"reps": 3, "quick": False},
        "models": {"asr": "whisper"},
        "turns": [
            {"name": "short", "question": "Hi?", "question_seconds": 1.0},
            {"name": "long", "question": "Hello?", "question_seconds": 5.0},
        ],
        "inprocess": {
            "ready_s": 9.0,
            "peak_rss_mb": 1500.0,
            "errors": [],
            "per_turn": summarise(samples),
            "samples": [s.as_dict() for s in samples],
            "concurrency": {"where": "in-process", "levels": levels},
        },
        "http": {"available": False, "reason": "not available: test"},
        "profile": {
            "stage": "llm",
            "production_seconds": 2.0,
            "single_thread_profiled_seconds": 3.0,
            "by_self_time": [{"function": "f.py:1(f)", "calls": 3, "self_s": 1.0, "cumulative_s": 2.0}],
        },
    }


def test_summaries_give_p50_and_p95_per_stage() -> None:
    per_turn = _result()["inprocess"]["per_turn"]
    short = per_turn["short"]
    assert short["n"] == 3
    assert short["stages"]["llm"]["p50"] == 2.0 * 1.05
    assert short["stages"]["llm"]["p50"] <= short["stages"]["llm"]["p95"] <= short["stages"]["llm"]["max"]
    assert set(short["rtf"]) == {"tts", "avatar"}
    assert set(short["server_firsts"]) == {"first_transcript", "first_token", "first_audio", "first_frame"}


def test_streamed_first_frame_is_paired_with_the_whole_turn() -> None:
    samples = _samples(("streamed", "whole"))
    gain = streaming_gain(samples)["per_turn"]["short"]
    pairs = [(_sample("short", "streamed", 1 + 0.05 * r), _sample("short", "whole", 1 + 0.05 * r)) for r in range(3)]
    ratios = sorted(b.wall / a.first_frame for a, b in pairs)  # type: ignore[operator]
    assert abs(gain["sooner"]["p50"] - ratios[1]) < 1e-3  # each streamed turn against its own pair
    assert gain["streamed_first_frame"]["p50"] == round(0.9 * 1.05, 4)
    failed_one = [*samples[:-1], TurnSample("long", "whole", 1.0, error="HTTP 503: busy")]
    assert streaming_gain(failed_one)["per_turn"]["long"]["sooner"]["n"] == 2  # the failed pair is left out


def test_bench_report_files(tmp_path: Path) -> None:
    result = _result()
    checks = bench_checks(result, load_thresholds()["bench"])
    result["targets"] = [c.as_dict() for c in checks]
    written = write_bench(result, tmp_path, "20260101T000000Z")
    names = sorted(p.name for p in written)
    assert names == [
        "20260101T000000Z-concurrency.png",
        "20260101T000000Z-stages.png",
        "20260101T000000Z.json",
        "20260101T000000Z.md",
    ]
    assert json.loads((tmp_path / "20260101T000000Z.json").read_text())["inprocess"]["ready_s"] == 9.0
    md = (tmp_path / "20260101T000000Z.md").read_text()
    for heading in (
        "## Targets",
        "## In-process turns",
        "## In-process turns",
        "## Concurrency",
        "## Profile of the hottest stage: llm",
        "not available: test",
    ):
        assert heading in md
    assert "MISSED by" in md and "met (" in md and "not measured" in md
    for png in tmp_path.glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300


def test_http_section_reports_probes_and_checks_liveness(tmp_path: Path) -> None:
    result = _result()
    http_samples = _samples(("streamed", "whole"))
    result["http"] = {
        "available": True,
        "ready_s": 6.0,
        "peak_rss_mb": 1800.0,
        "per_turn_streamed": summarise(s for s in http_samples if s.mode == "streamed"),
        "per_turn_whole": summarise(s for s in http_samples if s.mode == "whole"),
        "streaming": streaming_gain(http_samples),
        "errors": [],
        "probes": {
            "/healthz": {"url": "/healthz", "ms": _spread([2.0, 3.0, 140.0]), "failed": 0, "failures": []},
            "download": {
                "url": "http://127.0.0.1:8000/api/v1/results/x/reply.wav",
                "ms": None,
                "failed": 2,
                "failures": ["HTTP 404"],
            },
        },
    }
    checks = {c.name: c for c in bench_checks(result, load_thresholds()["bench"])}
    liveness = checks["healthz_during_turns"]
    assert liveness.value == 140.0 and liveness.unit == "ms" and liveness.verdict() == "MISSED by 40 ms (40 %)"
    assert checks["ready"].ok and checks["peak_rss"].value == 1800.0
    assert checks["first_frame"].value == round(0.9 * 1.6 * 1.05, 4) and not checks["first_frame"].ok  # worst turn
    # Transcript → first audio of every in-process turn: 0.30 0.28 0.26 (short), 0.06 0.028 -0.004 (long).
    assert checks["first_clause"].value == 0.16 and checks["first_clause"].ok
    result["targets"] = [c.as_dict() for c in checks.values()]
    write_bench(result, tmp_path, "20260101T000000Z")
    md = (tmp_path / "20260101T000000Z.md").read_text()
    assert "| `/healthz` | 3 | 3.0 | 126.3 | 140.0 | 0 |" in md
    assert "| download (`/api/v1/results/x/reply.wav`) | 0 | – | – | – | 2 |" in md
    assert "### Time to the first video frame at the client: streamed vs whole" in md
    assert "| short | 0.94 / 0.99 |" in md


def test_checks_say_by_how_much() -> None:
    slow = Check("turn", "full turn", 7.5, 5.0, "s")
    assert not slow.ok and slow.verdict() == "MISSED by 2.5 s (50 %)"
    fine = Check("corr", "peak correlation", 0.9, 0.5, higher_is_better=True)
    assert fine.ok and fine.verdict() == "met (0.4 to spare)"
    unknown = Check("first", "first frame", None, 1.0, "s", note="no streaming")
    assert unknown.verdict() == "not measured: no streaming"
    assert failed([slow, fine, unknown], unmeasured_fails=False) == [slow]
    assert failed([slow, fine, unknown], unmeasured_fails=True) == [slow, unknown]


def test_eval_report(tmp_path: Path) -> None:
    result = {
        "kind": "eval",
        "machine": describe(),
        "targets": [Check("wer", "TTS round trip", 1.0, 3.0, "%").as_dict()],
        "sections": [{"title": "Speech synthesis", "text": "1 sentence.", "headers": ["a", "b"], "rows": [["x", "y"]]}],
    }
    json_path, md_path = write_eval(result, tmp_path, "20260101T000000Z")
    md = md_path.read_text()
    assert "| TTS round trip | 1 % | 3 % | met (2 % to spare) |" in md
    assert "## Speech synthesis" in md and "| x | y |" in md
    assert json.loads(json_path.read_text())["stamp"] == "20260101T000000Z"


def _spread(values: list[float]) -> dict[str, float]:
    figures = spread(values)
    assert figures is not None
    return figures.as_dict()


def test_a_contended_run_is_held_to_twice_the_latest_idle_run_and_a_first_frame_in_two_seconds(
    tmp_path: Path,
) -> None:
    from avatar.bench.contention import DESCRIPTION, idle_reference

    limits = load_thresholds()["bench"]
    idle = _result()
    for stamp, kind, busy in (
        ("20260101T000000Z", "bench", None),  # older idle run
        ("20260102T000000Z", "bench", None),  # the newest idle run: the one to compare with
        ("20260103T000000Z-contended", "bench", DESCRIPTION),
        ("20260104T000000Z-live", "live", None),
    ):
        run = json.loads(json.dumps(idle))
        if stamp.startswith("20260101"):
            run["inprocess"]["samples"] = []
        run |= {"kind": kind, "contended": busy}
        (tmp_path / f"{stamp}.json").write_text(json.dumps(run))
    (tmp_path / "20260105T000000Z.json").write_text("not json")
    reference = idle_reference(tmp_path)
    assert reference == {"run": "20260102T000000Z", "first_clause_s": 0.16}

    contended = _result() | {"contended": DESCRIPTION, "idle_reference": reference}
    checks = {c.name: c for c in bench_checks(contended, limits)}
    assert checks["first_clause"].limit == round(2.0 * 0.16, 3)
    assert "2x the idle run 20260102T000000Z's 0.160 s" in checks["first_clause"].label
    assert checks["first_frame"].limit == limits["contended_first_frame_s"] == 2.0
    without = {c.name: c for c in bench_checks(contended | {"idle_reference": None}, limits)}
    assert without["first_clause"].limit == 2.0 * limits["first_clause_s"]
    assert "no idle run found" in without["first_clause"].label
    contended["targets"] = [c.as_dict() for c in checks.values()]
    write_bench(contended, tmp_path, "20260106T000000Z-contended")
    md = (tmp_path / "20260106T000000Z-contended.md").read_text()
    assert "Idle figure for the 2x target: run `20260102T000000Z`, first spoken piece 0.160 s." in md
