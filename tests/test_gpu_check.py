"""`make gpu-check` (scripts/gpu_check.py) checked on this CPU: its dry run takes every check's own path
on the CPU with the tiny models, and without a GPU the real run says each check was skipped and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def gpu_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    report = tmp_path / "gpu.json"
    command = [sys.executable, str(SCRIPT), *args, "--json", str(report)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    return done, json.loads(report.read_text())


def test_the_dry_run_passes_every_check_on_the_cpu(tmp_path: Path) -> None:
    pytest.importorskip("TTS")  # the tests' environment has every extra: nothing may be skipped then
    done, report = gpu_check(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {r["check"]: r for r in report["results"]}  # type: ignore[attr-defined]
    assert report["device"] == "cpu" and len(results) == 6
    assert {r["status"] for r in results.values()} == {"ok"}, results
    assert "stopped after" in results["transformers LLM, bf16, streaming and stop"]["detail"]
    assert done.stdout.split("\nsummary\n")[1].count(" ok ") == 6  # one printed summary, a line each


def test_without_a_gpu_each_check_says_it_was_skipped_and_why(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real run is the check")
    done, report = gpu_check(tmp_path, "--only", "XTTS", "--only", "device selection")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(r["check"], r["status"]) for r in report["results"]] == [  # type: ignore[attr-defined]
        ("device selection", "skipped"),
        ("XTTS", "skipped"),
    ]
    assert "skipped  XTTS: no CUDA device" in done.stdout


def test_a_check_whose_library_is_missing_is_skipped_with_its_name(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    check = gpu_check.Check("cpu", tmp_path)
    check.run("a library that is not there", lambda: gpu_check.need("no_such_module_avatar"))
    (result,) = check.results
    assert (result.status, result.detail) == ("skipped", "no_such_module_avatar not installed")
