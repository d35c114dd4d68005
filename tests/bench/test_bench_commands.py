"""`avatar eval` exits non-zero when a figure misses the threshold kept in the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avatar.bench.commands import EXIT_TARGET_MISSED
from avatar.bench.targets import THRESHOLDS
from avatar.cli import main


def _thresholds(tmp_path: Path, wer_max_pct: float) -> Path:
    text = THRESHOLDS.read_text()
    path = tmp_path / f"thresholds-{wer_max_pct}.toml"
    path.write_text(text.replace("tts_roundtrip_wer_max_pct = 3.0", f"tts_roundtrip_wer_max_pct = {wer_max_pct}"))
    assert path.read_text() != text
    return path


@pytest.mark.usefixtures("prepared_models")
def test_eval_fails_when_a_figure_misses_its_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lenient = main(
        [
            "eval",
            "--only",
            "tts",
            "--quick",
            "--out",
            str(tmp_path / "a"),
            "--thresholds",
            str(_thresholds(tmp_path, 50.0)),
        ]
    )
    assert lenient == 0
    # No word error rate can be below zero: the same run must now fail, and say so.
    strict = main(
        [
            "eval",
            "--only",
            "tts",
            "--quick",
            "--out",
            str(tmp_path / "b"),
            "--thresholds",
            str(_thresholds(tmp_path, -1.0)),
        ]
    )
    assert strict == EXIT_TARGET_MISSED
    out = capsys.readouterr().out
    assert "MISSED by" in out
    report = json.loads(next((tmp_path / "b").glob("eval-*.json")).read_text())
    assert [t["status"] for t in report["targets"]] == ["MISSED"]
    assert (tmp_path / "b" / Path(next((tmp_path / "b").glob("eval-*.md")).name)).is_file()


def test_bench_and_eval_are_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("bench", "eval"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
    assert "--only" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["1-2", "0/2", "2", "a/b", "1/2/3"])
def test_a_thread_pair_that_is_not_one_is_refused_with_the_form_to_use(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--runtimes", "--threads", bad])
    assert stopped.value.code == 2
    assert "give two thread counts, writing/reading, e.g. 1/2" in capsys.readouterr().err


def test_the_threads_a_b_needs_the_busy_core(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--ab", "--out", str(tmp_path)]) == 2
    assert "add --contended" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
