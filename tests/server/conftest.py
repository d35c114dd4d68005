"""Fixtures: the real service (one per session, models loaded once), an httpx client, test media."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from anyio.from_thread import BlockingPortal
from in_process import InProcessServer, in_process
from live_server import GUARDED_ENV, ServerProcess, serving
from PIL import Image

from avatar import media
from avatar.runtime import Runtime


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> Iterator[ServerProcess]:
    yield from serving(tmp_path_factory.mktemp("server"))


# A second server with every guard configured (live_server.GUARDED_ENV): API keys, CORS, a public URL,
# short client deadlines, a small connection cap. The security and slow-client tests share it. Only app
# settings differ, so it runs in this process on the models already loaded (in_process.py).
@pytest.fixture(scope="session")
def guarded_server(
    tmp_path_factory: pytest.TempPathFactory, model_loop: BlockingPortal, runtime: Runtime
) -> Iterator[InProcessServer]:
    yield from in_process(model_loop, runtime, tmp_path_factory.mktemp("guarded"), **GUARDED_ENV)


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        yield http


@pytest.fixture(scope="session")
def planet_question(spoken_wav: Callable[[str], bytes]) -> bytes:
    return spoken_wav("What is your favourite planet?")


@pytest.fixture(scope="session")
def followup_question(spoken_wav: Callable[[str], bytes]) -> bytes:
    return spoken_wav("Why do you like it so much?")


@pytest.fixture(scope="session")
def silence_wav() -> bytes:
    return media.wav_bytes(np.zeros(16_000 * 2, np.float32), 16_000)


@pytest.fixture(scope="session")
def faceless_png() -> bytes:
    """A photo with no face in it: a smooth colour gradient."""
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    rgb = np.stack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)), np.full((256, 256), 90, np.uint8)], -1)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
