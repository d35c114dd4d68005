"""Everything a running product holds: settings, personas, the model registry and the pipeline.

A ``Runtime`` is an async context manager, used the same way by the CLI, the server and the tests:

    async with Runtime(settings) as runtime:   # loading starts in the background
        await runtime.ready()                   # loaded, warm, every persona prepared (or ModelError)
        ...                                     # serve turns
    # models released, whatever happened inside

Entering returns at once so a server's port answers while the models load; ``state`` says how far
loading is. Leaving waits for a load still in progress and then releases every model and the session
store. With ``AVATAR_REDIS_URL`` the sessions live in Redis (shared by every replica), and Redis must
answer by the time the models are loaded, or start-up fails naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import anyio.from_thread

from avatar.backends.factory import model_specs
from avatar.config import Settings
from avatar.cores import CoreWatch
from avatar.errors import AvatarError, ModelError
from avatar.gpu import check_gpu_memory
from avatar.personas import CreatedPersonas, PersonaStore
from avatar.pipeline import Pipeline
from avatar.pipeline.redis_sessions import RedisSessionStore
from avatar.pipeline.sessions import MemorySessionStore, SessionStore
from avatar.pipeline.threads import run_blocking
from avatar.provenance import Provenance
from avatar.registry import ModelRegistry

log = logging.getLogger(__name__)

ALL_KINDS = ("asr", "llm", "tts", "face")
SESSION_CHECK_INTERVAL_S = 1.0  # how often start-up asks an unreachable Redis again while models load


def session_store(settings: Settings) -> SessionStore:
    """Redis when ``AVATAR_REDIS_URL`` is set (replicas share conversations), else this process's memory."""
    ttl, turns = settings.session_ttl_seconds, settings.llm_history_turns
    if settings.redis_url:
        return RedisSessionStore(settings.redis_url.get_secret_value(), ttl_seconds=ttl, max_turns=turns)
    return MemorySessionStore(ttl_seconds=ttl, max_turns=turns)


class Runtime:
    def __init__(
        self, settings: Settings, kinds: tuple[str, ...] = ALL_KINDS, *, models: ModelRegistry | None = None
    ) -> None:
        """``models``: another runtime's registry, loaded and owned by it, to share instead of loading the
        same models again (a second app with other app settings in one process: the test suite's servers).
        This runtime then never releases them; its personas, sessions and pipeline settings are its own."""
        self.settings = settings
        self.kinds = kinds
        created = CreatedPersonas(
            settings.output_dir / "personas", ttl_seconds=settings.persona_ttl_seconds, max_count=settings.max_personas
        )
        self.personas = PersonaStore(settings.assets_dir / "personas", created)
        self.personas.get(settings.default_persona)  # a wrong default fails at start-up, not per request
        self.registry = models or ModelRegistry(model_specs(settings, kinds))
        self._owns_models = models is None
        self.sessions = session_store(settings)
        self.provenance = Provenance.from_files(settings.c2pa_cert_file, settings.c2pa_key_file)
        self.error: str | None = None  # why start-up failed, when it failed outside a model
        self._loading: asyncio.Future[None] | None = None
        self._loaded = False
        self._pipeline: Pipeline | None = None
        self.cores: CoreWatch | None = None  # the LLM's thread counts following the free cores

    # ------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Runtime:
        self._loading = asyncio.ensure_future(self._load())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()  # _load still waits for its thread: nothing is half-loaded below
            await asyncio.wait([self._loading])
        try:
            await run_blocking(self.close)
        finally:
            await self.sessions.close()

    async def _load(self) -> None:
        models = asyncio.ensure_future(run_blocking(self._start))
        errors: list[str] = []
        try:
            try:
                await self._check_sessions(models)
            except AvatarError as exc:
                errors.append(exc.message)
            try:
                await models
            except AvatarError as exc:
                errors.insert(0, exc.message)
            except Exception as exc:  # noqa: BLE001 - reported by state/ready(), never lost
                errors.insert(0, f"{type(exc).__name__}: {exc}")
        finally:
            if not models.done():  # cancelled while the models load: the thread still ends here
                models.cancel()
                await asyncio.wait([models])
        if errors:
            self.error = "; ".join(errors)
            log.error("start-up failed: %s", self.error)

    async def _check_sessions(self, models: asyncio.Future[None]) -> None:
        """Wait for a shared session store to answer, asking again while the models load (in a cluster
        Redis may start after this replica). Raises SessionStoreUnavailableError only once they are loaded."""
        if not isinstance(self.sessions, RedisSessionStore):
            return
        while True:
            try:
                await self.sessions.ping()
                return
            except AvatarError:
                if models.done():
                    raise
                await asyncio.wait([models], timeout=SESSION_CHECK_INTERVAL_S)

    def _start(self) -> None:
        """Check GPU memory, load and warm every model, then prepare each persona (voice conditioning,
        face) so no request pays for it. Refuses at once if the models cannot fit in free GPU memory."""
        check_gpu_memory(self.settings)
        self.registry.load_all()
        if self.registry.failed:
            return
        for persona in self.personas:
            if "tts" in self.kinds:
                self.registry.get("tts").prepare_voice(persona.voice_spec)
            if set(ALL_KINDS) <= set(self.kinds):
                self.pipeline.animate.prepare_path(persona.image_path)
        self._watch_cores()
        self._loaded = True

    def _watch_cores(self) -> None:
        """Start following the free cores with the LLM's threads, if it can change them (llama.cpp)."""
        if "llm" not in self.kinds or not self.settings.llm_adapt_threads or not self._owns_models:
            return
        llm = self.registry.get("llm")
        if not callable(getattr(llm, "set_threads", None)):
            return
        options = llm.options
        self.cores = CoreWatch(llm, writing=options.threads, reading=options.alone_threads)
        self.cores.start()
        log.info("threads: following the free cores (%s)", self.cores.status())

    def thread_status(self) -> dict[str, Any] | None:
        """What the core watch decided (``/readyz``), or None when it does not run."""
        return None if self.cores is None else self.cores.status()

    @property
    def state(self) -> str:
        """``loading`` until every model is loaded, warm and every persona prepared; then ``ready``,
        or ``failed`` for good."""
        if self.error or self.registry.failed:
            return "failed"
        return "ready" if self._loaded and self.registry.ready else "loading"

    async def ready(self) -> None:
        """Wait for loading to end; ModelError naming what failed if it did."""
        if self._loading is None:
            raise RuntimeError("enter the runtime first: async with Runtime(settings) as runtime")
        await asyncio.shield(self._loading)
        self.require_ready()

    def require_ready(self) -> None:
        if self.state == "ready":
            return
        reasons = self.registry.failures() + ([self.error] if self.error else [])
        raise ModelError("Start-up failed:\n  " + "\n  ".join(reasons or ["the models are still loading"]))

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            s = self.settings
            self._pipeline = Pipeline.from_registry(
                self.registry,
                self.personas,
                max_new_tokens=s.llm_max_new_tokens,
                max_sentences=s.llm_max_sentences,
                history_turns=s.llm_history_turns,
                sessions=self.sessions,
                max_text_chars=s.max_text_chars,
                default_persona=s.default_persona,
                stage_timeout=s.stage_timeout_seconds,
                provenance=self.provenance,
                visible_label=s.visible_label,
            )
        return self._pipeline

    def close(self) -> None:
        cores, self.cores = self.cores, None
        if cores is not None:
            cores.stop()
        if self._owns_models:
            self.registry.close()


@contextlib.contextmanager
def running(settings: Settings, kinds: tuple[str, ...] = ALL_KINDS) -> Iterator[Runtime]:
    """The same ``async with Runtime(...)`` for synchronous callers (bench, eval, test fixtures): the
    runtime is entered, made ready and left on an event loop in a thread of its own."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Runtime(settings, kinds)) as runtime,
    ):
        portal.call(runtime.ready)
        yield runtime
