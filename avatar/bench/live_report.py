"""The live benchmark's report: ``<stamp>-live.json`` (everything) and ``<stamp>-live.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avatar.bench.report import machine_line, table, write_json


def _p(spread: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    if not spread:
        return "–"
    return f"{spread['p50'] * scale:.{digits}f} / {spread['p95'] * scale:.{digits}f}"


def _min(spread: dict[str, Any] | None) -> str:
    return "–" if not spread else f"{spread['min']:.2f} (p50 {spread['p50']:.2f})"


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
                [
                    "voice/mouth lag, sender clock (ms; + = mouth later; replies with 3 s of speech or more: "
                    f"{(s['sync_lag_ms'] or {}).get('n', 0)} of {len(result.get('turns', []))})",
                    _p(s["sync_lag_ms"], digits=1),
                ],
                ["peak correlation of mouth and loudness", _p(s["sync_peak_correlation"])],
                ["received frame rate while speaking (fps)", _p(s["fps"], digits=1)],
                ["frame arrival jitter (std of gaps, ms)", _p(s["jitter_ms"], digits=1)],
                ["server CPU while a session is answered (% of one core)", _p(s["speaking_cpu_pct"], digits=0)],
                ["barge-in: user starts speaking → voice stops (s)", _p(s["barge_in_s"])],
                [
                    "received frame rate through interruptions and sounds over the reply (fps, min)",
                    _min(s.get("interrupted_fps")),
                ],
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
        "## Each other voice (a persona made with it; the same questions and repetitions)",
        "",
        table(
            [
                "voice",
                "engine",
                "first voice s (p50 / p95)",
                "|voice/mouth lag| ms (p50 / p95)",
                "the new persona's first turn: first voice s",
            ],
            [
                [
                    voice,
                    row.get("engine"),
                    _p(row.get("first_voice_s")),
                    _p(row.get("abs_sync_lag_ms"), digits=1),
                    row.get("new_persona_first_turn_s", "–"),
                ]
                for voice, row in s.get("voices", {}).items()
            ],
        )
        if s.get("voices")
        else "(none run)",
        "",
        "## Turn-taking, per set of clips",
        "",
        _taking(result),
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


def _taking(result: dict[str, Any]) -> str:
    """Premature turns, answers, stops and resumptions, per set (complete, hesitant, sounds, interruptions)."""
    s = result["summary"]
    turns, hesitant = result.get("turns", []), result.get("hesitant", [])
    sounds, barge_ins = result.get("sounds", []), result.get("barge_ins", [])
    once = sum(1 for t in turns if t.get("answers") == 1)
    rows = [
        ["complete questions", len(turns), s.get("complete_premature_turns", "–"), f"{once} of {len(turns)}",
         _p(s["first_voice_s"]), "–", "–"],
        ["hesitant questions (pauses 0.6-1.2 s)", len(hesitant), s.get("hesitant_premature_turns", "–"),
         f"{s.get('hesitant_answered_once', 0)} of {len(hesitant)}", _p(s.get("hesitant_first_voice_s")), "–", "–"],
        ["backchannels and noises over a reply", len(sounds), "–", "–", "–",
         f"{s.get('sounds_stopping', 0)} of {len(sounds)} (paused: {s.get('sounds_pausing', 0)})",
         _p(s.get("resume_after_sound_s"))],
        ["real interruptions", len(barge_ins), "–", "–", "–", f"voice stopped: {_p(s['barge_in_s'])} s", "–"],
    ]  # fmt: skip
    per_sound = [
        [x.get("sound"), x.get("paused"), x.get("stopped"), x.get("resumed"), x.get("heard_as"),
         x.get("resume_after_sound_s"), x.get("voice_again_s"), x.get("fps"), x.get("error", "")]
        for x in sounds
    ]  # fmt: skip
    per_question = [
        [t.get("question"), t.get("premature_turns"), t.get("answers"), t.get("first_voice_s"),
         (t.get("end_of_turn") or {}).get("why"), (t.get("end_of_turn") or {}).get("probability"), t.get("transcript")]
        for t in hesitant
    ]  # fmt: skip
    return "\n".join(
        [
            table(
                [
                    "set",
                    "clips",
                    "premature turns",
                    "answered once",
                    "end of speech → first voice s (p50 / p95)",
                    "stopped the reply",
                    "resumed after the sound s (p50 / p95)",
                ],
                rows,
            ),
            "",
            f"Turn-end model (Smart Turn) per call, ms (p50 / p95): {_p(s.get('turn_model_ms'), digits=1)}.",
            "",
            table(
                [
                    "hesitant question",
                    "premature",
                    "answers",
                    "first voice s",
                    "ended as",
                    "P(complete)",
                    "final transcript",
                ],
                per_question,
            ),
            "",
            table(
                [
                    "sound over a reply",
                    "paused",
                    "stopped",
                    "resumed",
                    "heard as",
                    "resumed after s (server)",
                    "voice again after s (client)",
                    "fps",
                    "error",
                ],
                per_sound,
            ),
        ]
    )


def write_live(result: dict[str, Any], out_dir: Path, stamp: str) -> list[Path]:
    result["stamp"] = stamp
    json_path = write_json(result, out_dir / f"{stamp}-live.json")
    md = out_dir / f"{stamp}-live.md"
    md.write_text(live_markdown(result))
    return [json_path, md]
