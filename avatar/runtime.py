"""Everything a running product holds: settings, personas, the model registry and the pipeline.

Built from Settings, started once (load, warm, prepare every persona's voice and face), closed once.
The CLI and the HTTP server both use it, so a turn runs the same way from either.
"""

from __future__ import annotations

import asyncio
import logging

from avatar.backends.factory import model_specs
from avatar.config import Settings
from avatar.errors import ModelError
from avatar.gpu import check_gpu_memory
from avatar.personas import PersonaStore
from avatar.pipeline import Pipeline
from avatar.registry import ModelRegistry

log = logging.getLogger(__name__)

ALL_KINDS = ("asr", "llm", "tts", "face")


class Runtime:
    def __init__(self, settings: Settings, kinds: tuple[str, ...] = ALL_KINDS) -> None:
        self.settings = settings
        self.personas = PersonaStore(settings.assets_dir / "personas")
        self.personas.get(settings.default_persona)  # a wrong default fails at start-up, not per request
        self.registry = ModelRegistry(model_specs(settings, kinds))
        self._pipeline: Pipeline | None = None

    def start_blocking(self) -> None:
        """Check GPU memory, load and warm every model, then prepare each persona (voice conditioning,
        face) so no request pays for it. Refuses at once if the models cannot fit in free GPU memory."""
        check_gpu_memory(self.settings)
        self.registry.load_all()
        if self.registry.failed:
            return
        kinds = set(self.registry.states())
        for persona in self.personas:
            if "tts" in kinds:
                self.registry.get("tts").prepare_voice(persona.voice_spec)
            if "face" in kinds and "asr" in kinds and "llm" in kinds:
                self.pipeline.animate.prepare_path(persona.image_path)

    async def start(self) -> None:
        await asyncio.to_thread(self.start_blocking)

    def require_ready(self) -> None:
        if not self.registry.ready:
            raise ModelError("Models failed to load:\n  " + "\n  ".join(self.registry.failures()))

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            s = self.settings
            self._pipeline = Pipeline.from_registry(
                self.registry,
                self.personas,
                max_new_tokens=s.llm_max_new_tokens,
                history_turns=s.llm_history_turns,
                session_ttl=s.session_ttl_seconds,
                max_text_chars=s.max_text_chars,
                default_persona=s.default_persona,
                overlapped=s.overlap,
            )
        return self._pipeline

    def close(self) -> None:
        self.registry.close()
