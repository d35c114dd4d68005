"""Live mode in the web page, end to end: real headless Chromium (Debian's package, driven by Playwright)
against the real server. Chromium's fake microphone plays a WAV file: some silence, a question, then
silence. Nobody presses anything: the page opens at ``/?mode=live``, the face idles, hears the question,
answers it with its mouth moving, and the transcript and reply appear beside it. Screenshots go to
out/test-artifacts/ for a person to look at."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chromium import ARTIFACTS, fake_microphone, launch
from live_server import ServerProcess
from PIL import Image

from avatar import media
from avatar.quality.lipsync import MouthMeter

pytestmark = pytest.mark.slow

LOOPBACK_PEERS = "--allow-loopback-in-peer-connection"  # the test server offers only 127.0.0.1
LEAD_S = 4.0  # silence before the question: the page connects meanwhile
GRAB_FRAME = """() => {
    const v = document.getElementById('live-video');
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    c.getContext('2d').drawImage(v, 0, 0);
    return c.toDataURL('image/png');
}"""


@pytest.fixture(scope="module")
def microphone_wav(spoken_wav: Callable[[str], bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Silence, a question, then two minutes of silence (Chromium plays the file in a loop: the question
    must not come again before the test is over, however slow the machine)."""
    speech = media.decode_audio(spoken_wav("What is your favourite planet?"), 16_000)
    audio = np.concatenate([np.zeros(int(LEAD_S * 16_000), np.float32), speech, np.zeros(120 * 16_000, np.float32)])
    path = tmp_path_factory.mktemp("live-mic") / "question.wav"
    path.write_bytes(media.wav_bytes(audio, 16_000))
    return path


@pytest.fixture(scope="module")
def browser(microphone_wav: Path) -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        chromium = launch(playwright, LOOPBACK_PEERS, *fake_microphone(microphone_wav))
        yield chromium
        chromium.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"live-{name}.png"))


def grab(page: Any) -> np.ndarray:
    data = page.evaluate(GRAB_FRAME).split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def grab_for(page: Any, seconds: float) -> list[np.ndarray]:
    frames, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        frames.append(grab(page))
        time.sleep(0.06)
    return frames


def test_live_mode_answers_a_spoken_question_hands_free(browser: Any, live: ServerProcess, meter: MouthMeter) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live.base_url + "/?mode=live")
    page.wait_for_selector(".mode[data-mode='live'][aria-checked='true']", timeout=60_000)
    page.wait_for_selector("#live-panel[data-state='listening']", timeout=30_000)
    # The face plays, live, at its size, and idles: it moves while nobody speaks.
    page.wait_for_function(
        "() => { const v = document.getElementById('live-video');"
        " return v.videoWidth === 512 && v.currentTime > 0.5 && !v.paused; }",
        timeout=30_000,
    )
    idle = grab_for(page, 1.0)
    assert len(idle) >= 5 and max(np.abs(f.astype(int) - idle[0]).mean() for f in idle) > 0.05
    shot(page, "1-listening")

    # The question plays into the fake microphone: it is heard, answered, and the mouth moves.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#log li.you')].some(li => /planet/i.test(li.textContent)"
        " && !li.classList.contains('partial'))",
        timeout=90_000,
    )
    shot(page, "2-heard")
    page.wait_for_selector("#live-panel[data-state='speaking']", timeout=90_000)
    speaking = grab_for(page, 2.0)
    shot(page, "3-speaking")
    page.wait_for_function("() => document.querySelector('#log li.them:last-child .meta') !== null", timeout=120_000)
    page.wait_for_selector("#live-panel[data-state='listening']", timeout=30_000)
    reply = page.locator("#log li.them").last.inner_text()
    assert len(reply) > 10 and "voice after" in reply, reply
    shot(page, "4-answered")

    opening_speaking = meter.openings(speaking)
    opening_idle = meter.openings(idle)
    assert np.isfinite(opening_speaking).mean() > 0.8, "the face was not found in the live video"
    assert np.nanmax(opening_speaking) > np.nanmax(opening_idle) + 0.02, (opening_speaking, opening_idle)

    # Back to hold-to-talk: the live session ends on the server at once.
    closed = len([line for line in live.log_lines() if line.get("event") == "live session closed"])
    page.click(".mode[data-mode='ptt']")
    deadline = time.monotonic() + 15
    while len([line for line in live.log_lines() if line.get("event") == "live session closed"]) == closed:
        assert time.monotonic() < deadline, "the live session was not closed"
        time.sleep(0.1)
    assert page.locator("#live-panel").is_hidden()
    assert "mode=live" not in page.url
    shot(page, "5-left")
    assert errors == []
    page.close()
