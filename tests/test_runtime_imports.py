"""The embedded runtime needs none of the extras: a demo turn and `avatar models prepare` run in a
process where torch, transformers, accelerate and llama-cpp-python cannot be imported (what
`make demo` installs: the core dependencies only), and the service imports no gguf either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avatar import embedded
from avatar.config import Settings

EXTRAS = ("torch", "transformers", "accelerate", "llama_cpp")
ROOT = Path(__file__).resolve().parents[1]

# Run in the child: refuse the extras' modules as if they were not installed, run the command, then
# report which of them (and gguf) were imported after all.
CHILD = """
import importlib.abc, json, sys
BLOCKED = set(sys.argv[1].split(","))
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
from avatar.cli import main
code = main(sys.argv[3:])
loaded = sorted({m.split(".")[0] for m in sys.modules} & (BLOCKED | {"gguf"}))
open(sys.argv[2], "w").write(json.dumps({"code": code, "loaded": loaded}))
"""


def run_without_extras(tmp_path: Path, env: dict[str, str], *argv: str) -> dict[str, object]:
    report = tmp_path / "report.json"
    child = [sys.executable, "-c", CHILD, ",".join(EXTRAS), str(report), *argv]
    done = subprocess.run(child, cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(report.read_text())
    return result


def test_the_blocker_refuses_an_extra_that_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the scenario: torch is installed here, yet the child cannot import it
    child = CHILD.replace("from avatar.cli import main", "import torch\nfrom avatar.cli import main")
    argv = [sys.executable, "-c", child, "torch", str(tmp_path / "report.json"), "models", "list"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "blocked by the test" in done.stderr


@pytest.mark.slow
def test_a_demo_turn_needs_none_of_the_extras(prepared_models: Path, tmp_path: Path) -> None:
    result = run_without_extras(tmp_path, {"AVATAR_MODELS_DIR": str(prepared_models)}, "demo", "--out", str(tmp_path))
    assert result == {"code": 0, "loaded": []}  # not torch & co., and not gguf: serving reads no GGUF in Python
    turn = json.loads((tmp_path / "turn.json").read_text())
    assert turn["reply"] and not turn["degraded"] and (tmp_path / "reply.mp4").stat().st_size > 10_000


@pytest.mark.slow
def test_preparing_the_embedded_models_needs_none_of_the_extras(settings: Settings, tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = run_without_extras(tmp_path, {"AVATAR_MODELS_DIR": str(models)}, "models", "prepare")
    assert result["code"] == 0 and result["loaded"] == ["gguf"]  # gguf-py re-quantises the chat model
    for model in embedded.needed(settings.llm_model):
        assert embedded.is_prepared(models, model), model.folder
    quantized = json.loads((models / embedded.QWEN05.folder / "QUANTIZED.json").read_text())
    assert quantized["sha256"] == embedded.QWEN05_Q4_0_SHA256  # the same file on every machine
