"""The live benchmark's report: ``<stamp>-live.json`` (everything) and ``<stamp>-live.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avatar.bench.report import machine_line, table, write_json


def _p(spread: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    if not spread:
        return "–"
    return f"{spread['p50'] * scale:.{digits}f} / {spread['p95'] * scale:.{digits}f}"


def live_markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        f"# Live mode benchmark {result.get('stamp', '')}",
        "",
        machine_line(result["machine"]),
        "",
        f"Service ready in {result.get('ready_s')} s; peak memory {result.get('peak_rss_mb')} MiB. The clients "
        "(aiortc, decoding the video) run on the same machine: their CPU is in the levels table.",
        "",
        "## Targets",
        "",
        table(
            ["target", "measured", "limit", "verdict"],
            [[t["label"], t["value"], f"{t['limit']} {t['unit']}", t["verdict"]] for t in result.get("targets", [])],
        ),
        "",
        "## Replies (p50 / p95 over every question and repetition)",
        "",
        table(
            ["figure", "p50 / p95"],
            [
                ["end of speech → first reply voice at the client (s)", _p(s["first_voice_s"])],
                ["end of speech → first moving-mouth frame at the client (s)", _p(s["moving_mouth_s"])],
                ["voice/mouth lag, sender clock (ms; + = mouth later)", _p(s["sync_lag_ms"], digits=1)],
                ["peak correlation of mouth and loudness", _p(s["sync_peak_correlation"])],
                ["received frame rate while speaking (fps)", _p(s["fps"], digits=1)],
                ["frame arrival jitter (std of gaps, ms)", _p(s["jitter_ms"], digits=1)],
                ["server CPU while a session is answered (% of one core)", _p(s["speaking_cpu_pct"], digits=0)],
                ["barge-in: user starts speaking → voice stops (s)", _p(s["barge_in_s"])],
            ],
        ),
        "",
        table(
            [
                "question",
                "first voice s",
                "moving mouth s",
                "lag ms",
                "fps",
                "jitter ms",
                "reply s",
                "asr",
                "first token",
            ],
            [
                [
                    t["question"],
                    t["first_voice_s"],
                    t["moving_mouth_s"],
                    t["sync_lag_ms"],
                    t["fps"],
                    t["jitter_ms"],
                    t["reply_seconds"],
                    t["server"].get("asr", "–"),
                    t["server"].get("first_token", "–"),
                ]
                for t in result.get("turns", [])
            ],
        ),
        "",
        "## Sessions at once",
        "",
        f"CPU per idle session: {s['idle_cpu_pct_per_session']} % of one core; memory per session: "
        f"{s['rss_mb_per_session']} MiB. Sessions that all kept ≥ 24 fps, idle and while one of them was "
        f"answered: {s['sessions_held_at_25_fps']} (of at most {s['most_sessions_tried']} tried).",
        "",
        table(
            [
                "sessions",
                "server CPU %",
                "client CPU %",
                "server RSS MiB",
                "min fps idle",
                "max jitter ms idle",
                "answer's first voice s",
                "min fps while answering",
                "max jitter ms while answering",
            ],
            [
                [
                    lv["sessions"],
                    lv["server_cpu_pct"],
                    lv["client_cpu_pct"],
                    lv["server_rss_mb"],
                    lv["min_fps"],
                    lv["max_jitter_ms"],
                    lv.get("answer_first_voice_s", "–"),
                    lv.get("min_fps_while_answering", "–"),
                    lv.get("max_jitter_ms_while_answering", "–"),
                ]
                for lv in result.get("levels", [])
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def write_live(result: dict[str, Any], out_dir: Path, stamp: str) -> list[Path]:
    result["stamp"] = stamp
    json_path = write_json(result, out_dir / f"{stamp}-live.json")
    md = out_dir / f"{stamp}-live.md"
    md.write_text(live_markdown(result))
    return [json_path, md]
