"""Writing results: JSON (everything), Markdown (the figures a person reads) and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from avatar.bench.probe_latency import PROBE_INTERVAL_S
from avatar.bench.samples import FIRSTS, STAGES
from avatar.config import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _s(spread: dict[str, Any] | None, key: str = "p50", digits: int = 2) -> str:
    return "–" if not spread else f"{spread[key]:.{digits}f}"


def _p50_p95(spread: dict[str, Any] | None, digits: int = 2) -> str:
    return "–" if not spread else f"{spread['p50']:.{digits}f} / {spread['p95']:.{digits}f}"


def _probe_row(name: str, probe: dict[str, Any]) -> list[object]:
    path = urlsplit(probe["url"]).path
    label = f"`{path}`" if name == path else f"{name} (`{path}`)"
    ms = probe["ms"]
    return [label, (ms or {}).get("n", 0), _s(ms, digits=1), _s(ms, "p95", 1), _s(ms, "max", 1), probe["failed"]]


def write_json(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def machine_line(m: dict[str, Any]) -> str:
    load = m.get("load_average_start", [])
    end = m.get("load_average_end", [])
    return (
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, Python {m.get('python')}, "
        f"commit {m.get('commit')}{' (uncommitted changes)' if m.get('dirty') else ''}; "
        f"load average {load[:1]} at start, {end[:1]} at end; the run took {m.get('elapsed_s', '–')} s"
    )


def _checks_table(checks: list[dict[str, Any]]) -> str:
    def unit(c: dict[str, Any]) -> str:
        return f" {c['unit']}" if c["unit"] else ""

    return table(
        ["target", "value", "limit", "verdict"],
        [
            [
                c["label"],
                "–" if c["value"] is None else f"{_num(c['value'])}{unit(c)}",
                f"{_num(c['limit'])}{unit(c)}",
                c["verdict"],
            ]
            for c in checks
        ],
    )


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


# ------------------------------------------------------------------------------------------ bench


def _turn_rows(per_turn: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, t in per_turn.items():
        rows.append(
            [name, str(t["n"]), _s(t["audio_seconds"], digits=1)]
            + [_p50_p95(t["stages"].get(s)) for s in (*STAGES, "total")]
            + [_p50_p95(t["rtf"].get("tts"), 3), _p50_p95(t["rtf"].get("avatar"), 3)]
        )
    return rows


TURN_HEADERS = ["turn", "n", "reply s", *(f"{s} s" for s in STAGES), "total s", "TTS RTF", "avatar RTF"]
FIRST_HEADERS = ["turn", "first transcript s", "first reply token s", "first audio s", "first video frame s"]


def _first_rows(per_turn: dict[str, Any], key: str) -> list[list[str]]:
    return [[name, *(_p50_p95(t.get(key, {}).get(f)) for f in FIRSTS)] for name, t in per_turn.items()]


def bench_markdown(result: dict[str, Any]) -> str:
    """The bench report: targets, per-stage p50/p95, streamed vs whole first frame, concurrency, profile."""
    out = [
        f"# avatar bench — {result.get('stamp', '')}",
        "",
        f"Machine: {machine_line(result['machine'])}.",
        f"Models: {', '.join(f'{k} {v}' for k, v in result.get('models', {}).items())}.",
        f"Repetitions: {result['options']['reps']} per turn after a warm-up"
        f"{' (quick run)' if result['options']['quick'] else ''}. Cells are p50 / p95 seconds.",
        *([f"**Contended run**: {result['contended']}."] if result.get("contended") else []),
        *_contended_lines(result),
        "",
    ]
    out += ["## Targets", "", _checks_table(result.get("targets", [])), ""]
    out += [
        "## Questions",
        "",
        table(
            ["turn", "question s", "question"],
            [[t["name"], t["question_seconds"], t["question"]] for t in result["turns"]],
        ),
        "",
    ]
    inproc = result.get("inprocess", {})
    out += [
        "## In-process turns",
        "",
        f"Models loaded and warm in {inproc.get('ready_s', '–')} s; peak RSS of the bench process "
        f"{inproc.get('peak_rss_mb', '–')} MiB. The stages of a turn run at once (the model writes the "
        "next piece while the last is spoken and drawn), so their times add up to more than the total.",
        "",
        table(TURN_HEADERS, _turn_rows(inproc.get("per_turn", {}))),
        "",
        "Moments of each turn from the end of the question (the pipeline's own marks):",
        "",
        table(FIRST_HEADERS, _first_rows(inproc.get("per_turn", {}), "server_firsts")),
        "",
    ]
    if inproc.get("errors"):
        out += ["Failed turns: " + "; ".join(inproc["errors"]), ""]
    http = result.get("http", {})
    out += ["## HTTP service", ""]
    if http.get("available"):
        out += [
            f"Start-up to ready: {http['ready_s']:.2f} s; peak RSS of the service: {http.get('peak_rss_mb')} MiB.",
            "",
            "Each question was asked twice in a row: **streamed** (`POST /api/v1/conversation/stream`, each "
            "video segment fetched as soon as it is announced, as the web page does) and **whole** (`POST "
            "/api/v1/conversation`, then the MP4). Client times count from the end of the client's upload.",
            "",
            "### Time to the first video frame at the client: streamed vs whole",
            "",
            table(
                ["turn", "streamed: first frame s", "streamed: last segment s", "whole: video downloaded s", "sooner"],
                [
                    [
                        name,
                        _p50_p95(t["streamed_first_frame"]),
                        _p50_p95(t["streamed_total"]),
                        _p50_p95(t["whole_total"]),
                        "–" if not t["sooner"] else f"{t['sooner']['p50']:.1f}×",
                    ]
                    for name, t in (http.get("streaming") or {}).get("per_turn", {}).items()
                ],
            ),
            "",
            "A streamed turn's moments as its client saw them (first transcript, first reply text, first "
            "segment downloaded):",
            "",
            table(FIRST_HEADERS, _first_rows(http.get("per_turn_streamed", {}), "client_firsts")),
            "",
            "The same turns as the server timed them:",
            "",
            table(FIRST_HEADERS, _first_rows(http.get("per_turn_streamed", {}), "server_firsts")),
            "",
            "Stages of the whole-video turns (server-side; the last column is what that client waited):",
            "",
            table(
                [*TURN_HEADERS, "client s"],
                [
                    [*row, _p50_p95(http["per_turn_whole"][row[0]]["wall"])]
                    for row in _turn_rows(http.get("per_turn_whole", {}))
                ],
            ),
            "",
        ]
        if http.get("errors"):
            out += ["Failed requests: " + "; ".join(http["errors"]), ""]
        probes = http.get("probes")
        if probes:
            out += [
                f"Small requests while those turns rendered (one client polling every {PROBE_INTERVAL_S * 1000:.0f} "
                "ms on a kept-alive connection; milliseconds from request to full answer):",
                "",
                table(
                    ["request", "answers", "p50 ms", "p95 ms", "max ms", "failed"],
                    [_probe_row(name, probe) for name, probe in probes.items()],
                ),
                "",
            ]
    else:
        out += [http.get("reason", "not available"), ""]
    concurrency = http.get("concurrency") or inproc.get("concurrency")
    if concurrency:
        out += [
            f"## Concurrency ({concurrency['where']})",
            "",
            table(
                ["clients", "turns", "failed", "wall s", "turns / min", "latency p50 s", "latency p95 s"],
                [
                    [
                        lv["clients"],
                        lv["turns"],
                        lv["failed"],
                        lv["wall_s"],
                        lv["throughput_per_min"],
                        _s(lv["latency"]),
                        _s(lv["latency"], "p95"),
                    ]
                    for lv in concurrency["levels"]
                ],
            ),
            "",
        ]
    profile = result.get("profile")
    if profile:
        out += [
            f"## Profile of the hottest stage: {profile['stage']}",
            "",
            f"Production engine {profile['production_seconds']} s on the medium question's reply; "
            f"single-threaded copy under cProfile {profile['single_thread_profiled_seconds']} s.",
            "",
            table(
                ["function", "calls", "self s", "cumulative s"],
                [[r["function"], r["calls"], r["self_s"], r["cumulative_s"]] for r in profile["by_self_time"]],
            ),
            "",
        ]
    plots = result.get("plots", [])
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(out)


def plot_stages(result: dict[str, Any], path: Path) -> Path | None:
    """Stacked bars: p50 seconds of each stage per turn, in-process and (if measured) over HTTP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("in-process", result.get("inprocess", {}).get("per_turn", {}))]
    if result.get("http", {}).get("available"):
        groups.append(("http", result["http"].get("per_turn_streamed", {})))
    labels, bars = [], []
    for where, per_turn in groups:
        for name, t in per_turn.items():
            labels.append(f"{name}\n{where}")
            bars.append([t["stages"].get(s, {}).get("p50", 0.0) for s in STAGES])
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(bars)), 4.5))
    bottom = [0.0] * len(bars)
    for i, stage in enumerate(STAGES):
        heights = [b[i] for b in bars]
        ax.bar(labels, heights, bottom=bottom, label=stage)
        bottom = [x + h for x, h in zip(bottom, heights, strict=True)]
    # The stages run side by side, so their bars can stack past the turn's own total: mark it.
    totals = [t["stages"].get("total", {}).get("p50") for _, per_turn in groups for t in per_turn.values()]
    ax.plot(labels, totals, "k_", markersize=30, markeredgewidth=2.5, label="turn total")
    ax.set_ylabel("seconds (p50)")
    ax.set_title("Stage breakdown per turn")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_concurrency(result: dict[str, Any], path: Path) -> Path | None:
    """Latency p50/p95 and throughput against the number of concurrent clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concurrency = result.get("http", {}).get("concurrency") or result.get("inprocess", {}).get("concurrency")
    levels = [lv for lv in (concurrency or {}).get("levels", []) if lv["latency"]]
    if not levels:
        return None
    clients = [lv["clients"] for lv in levels]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(clients, [lv["latency"]["p50"] for lv in levels], "o-", label="latency p50")
    ax.plot(clients, [lv["latency"]["p95"] for lv in levels], "s--", label="latency p95")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("seconds per turn")
    ax.set_xticks(clients)
    twin = ax.twinx()
    twin.plot(clients, [lv["throughput_per_min"] for lv in levels], "^:", color="tab:green", label="turns / min")
    twin.set_ylabel("turns per minute")
    ax.set_ylim(bottom=0)
    twin.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    ax.set_title(f"Latency and throughput vs concurrency ({concurrency['where'] if concurrency else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _contended_lines(result: dict[str, Any]) -> list[str]:
    """The idle run a contended run is held to, and what the LLM's core watch decided by each part's end."""
    lines = []
    if result.get("contended"):
        idle = result.get("idle_reference")
        lines.append(
            f"Idle figure for the 2x target: run `{idle['run']}`, first spoken piece {idle['first_clause_s']:.3f} s."
            if idle
            else "No idle run in the results folder to compare with: the 2x target is taken of the idle target."
        )
    for where, threads in (
        ("in-process", result.get("inprocess", {}).get("threads")),
        ("service", result.get("http", {}).get("threads")),
    ):
        if threads:
            others = threads.get("others_busy_cores")
            lines.append(
                f"LLM threads at the end ({where}): reading {threads['llm_reading']}, writing {threads['llm_writing']} "
                f"of {threads['configured']['llm_reading']} / {threads['configured']['llm_writing']} configured, "
                f"{threads['changes']} change(s); {threads['cores']:g} cores, others using "
                f"{'?' if others is None else f'{others:.2f}'}; threads wait {threads['engine_waits']} "
                f"({threads['reason']})."
            )
    return lines


def write_bench(result: dict[str, Any], out_dir: Path, stamp: str) -> list[Path]:
    """``<stamp>.json``, ``<stamp>.md`` and the two PNG plots in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_stages(result, out_dir / f"{stamp}-stages.png"),
        plot_concurrency(result, out_dir / f"{stamp}-concurrency.png"),
    ]
    result["stamp"] = stamp
    result["plots"] = [str(p) for p in plots if p is not None]
    written = [write_json(result, out_dir / f"{stamp}.json")]
    md = out_dir / f"{stamp}.md"
    md.write_text(bench_markdown(result))
    return [*written, md, *(p for p in plots if p is not None)]


# ------------------------------------------------------------------------------------------- eval


def eval_markdown(result: dict[str, Any]) -> str:
    """The quality report: checks first, then each section's details."""
    out = [
        f"# avatar eval — {result.get('stamp', '')}",
        "",
        f"Machine: {machine_line(result['machine'])}.",
        "",
        "## Figures against bench/thresholds.toml",
        "",
        _checks_table(result.get("targets", [])),
        "",
    ]
    for section in result.get("sections", []):
        out += [f"## {section['title']}", ""]
        if section.get("text"):
            out += [section["text"], ""]
        if section.get("rows"):
            out += [table(section["headers"], section["rows"]), ""]
    return "\n".join(out)


def write_eval(result: dict[str, Any], out_dir: Path, stamp: str) -> list[Path]:
    """``eval-<stamp>.json`` and ``eval-<stamp>.md`` in ``out_dir``."""
    result["stamp"] = stamp
    json_path = write_json(result, out_dir / f"eval-{stamp}.json")
    md = out_dir / f"eval-{stamp}.md"
    md.write_text(eval_markdown(result))
    return [json_path, md]
