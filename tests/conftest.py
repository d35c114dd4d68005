"""Shared fixtures: settings isolated from the environment, real speech, the embedded runtime."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from avatar import embedded, media
from avatar.config import PROJECT_ROOT, Settings, load_settings
from avatar.logs import route_structlog_to_stdlib
from avatar.types import ASR_SAMPLE_RATE, AudioArray, ChatMessage, VoiceSpec

# Fixtures that load the embedded models (in this process, or in a server they start). A test that
# uses one is marked ``models`` and left out of the fast lane (``make check``: -m "not slow and not models").
MODEL_FIXTURES = frozenset({"runtime", "prepared_models", "speech", "server", "guarded_server", "live"})


def pytest_configure(config: pytest.Config) -> None:
    # As `avatar serve` does: structlog's lines go through the standard library's logging, so pytest
    # shows them with a failure and an in-process server's file gets them. Before any logger is used:
    # structlog keeps the set-up a logger had when first used.
    route_structlog_to_stdlib()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.models)


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """A test that sets up logging (the CLI's ``main`` does, onto the stream pytest captures for that test
    alone) leaves the process's handlers as it found them: later lines (an in-process server's, a worker
    thread's) would otherwise go to a closed stream."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:  # pytest's own (subclasses) come and go with each phase of a test
        if type(handler) is logging.StreamHandler and handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Default settings (the embedded models) with outputs in a temporary folder; the real
    environment is ignored so a developer's AVATAR_* variables cannot change the tests."""
    return load_settings({}, output_dir=tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session")
def prepared_models(settings: Settings) -> Path:
    needed = embedded.needed(settings.llm_model)
    missing = [m.folder for m in needed if not embedded.is_prepared(settings.models_dir, m)]
    if missing:
        pytest.fail(f"embedded models not prepared ({', '.join(missing)}): run `make test`, which prepares them")
    return settings.models_dir


@pytest.fixture(scope="session")
def speech() -> Callable[[str], AudioArray]:
    """Real speech at 24 kHz from the embedded TTS."""
    from avatar.backends.hibari_tts import HibariSynthesizer

    tts = HibariSynthesizer()
    return lambda text: tts.synthesize(text, VoiceSpec("test"))


@pytest.fixture(scope="session")
def spoken_wav(speech: Callable[[str], AudioArray]) -> Callable[[str], bytes]:
    """A WAV file (bytes) of the text spoken."""
    return lambda text: media.wav_bytes(speech(text), 24_000)


@pytest.fixture(scope="session")
def model_loop() -> Iterator[BlockingPortal]:
    """The event loop (in a thread of its own) that holds the session's models, and in-process servers."""
    with start_blocking_portal() as portal:
        yield portal


@pytest.fixture(scope="session")
def runtime(settings: Settings, prepared_models: Path, model_loop: BlockingPortal) -> Iterator[object]:
    """Every embedded model loaded and warm, once for the whole session (as ``runtime.running`` does)."""
    from avatar.runtime import Runtime

    with model_loop.wrap_async_context_manager(Runtime(settings)) as rt:
        model_loop.call(rt.ready)
        yield rt


@pytest.fixture(scope="session")
def long_history() -> list[ChatMessage]:
    """Twelve turns of filler conversation: more than a small context window holds."""
    turns: list[ChatMessage] = []
    for turn in range(12):
        turns += [
            ChatMessage("user", f"question {turn}: tell me about the quick brown fox and the lazy dog"),
            ChatMessage("assistant", f"answer {turn}: the fox jumps over the dog, how are you today"),
        ]
    return turns


@pytest.fixture(scope="session")
def to_asr() -> Callable[[bytes], AudioArray]:
    return lambda wav: media.decode_audio(wav, ASR_SAMPLE_RATE)


@pytest.fixture(scope="session")
def portrait() -> Path:
    return PROJECT_ROOT / "assets" / "personas" / "eileen" / "portrait.png"


def silence(seconds: float, rate: int = 24_000) -> AudioArray:
    return np.zeros(int(seconds * rate), np.float32)
