"""Debian's Chromium for the page tests (hold-to-talk and live mode): where it is, how it is started,
and where the screenshots go. Never a downloaded browser."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from avatar.config import PROJECT_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT_ROOT / "out" / "test-artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


def fake_microphone(wav: Path) -> list[str]:
    """Flags for a microphone that plays ``wav``, granted without asking."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]


def launch(playwright: Any, *extra: str) -> Any:
    """Chromium through ``playwright`` (a sync_playwright driver) with our flags and ``extra``; the
    screenshot folder made."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make system-deps`"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, *extra])
