"""The registry with real backends: failure states, warm-up, readiness."""

from __future__ import annotations

from pathlib import Path

from avatar.backends.factory import model_specs
from avatar.backends.hibari_tts import HibariSynthesizer
from avatar.backends.whisper import WhisperRecognizer
from avatar.config import Settings
from avatar.registry import ModelRegistry, ModelSpec, ModelState


def test_missing_model_fails_with_the_reason(settings: Settings, tmp_path: Path) -> None:
    broken = settings.replace(asr_model=str(tmp_path / "nowhere"))
    registry = ModelRegistry(model_specs(broken, kinds=("asr",)))
    registry.load_all()
    state = registry.states()["asr"]
    assert state["state"] == "failed"
    assert f"missing {tmp_path / 'nowhere' / 'model.bin'}" in state["error"]
    assert not registry.ready and registry.failed


def test_one_failure_does_not_stop_the_others(settings: Settings, tmp_path: Path, prepared_models: Path) -> None:
    broken = settings.replace(llm_model=str(tmp_path / "no-llm"))
    registry = ModelRegistry(model_specs(broken, kinds=("llm", "tts")))
    registry.load_all()
    states = registry.states()
    assert states["llm"]["state"] == "failed" and "no-llm/model.gguf" in states["llm"]["error"]
    assert states["tts"]["state"] == "ready"
    registry.close()
    assert registry.states()["tts"]["state"] == "closed"


class CountingHibari(HibariSynthesizer):
    """The real synthesiser, counting how often it is warmed."""

    warmups = 0

    def warmup(self) -> None:
        CountingHibari.warmups += 1
        super().warmup()


def test_warmup_runs_once_and_load_is_timed() -> None:
    loads = []

    def factory() -> CountingHibari:
        loads.append(1)
        return CountingHibari()

    registry = ModelRegistry([ModelSpec("tts", "hibari", factory)])
    registry.load_all()
    registry.load_all()  # already loaded: nothing happens
    state = registry.states()["tts"]
    assert state["state"] == ModelState.READY.value and registry.ready
    assert state["load_seconds"] > 0 and state["warm_seconds"] > 0
    assert len(loads) == 1 and CountingHibari.warmups == 1


def test_whisper_loads_the_embedded_model(prepared_models: Path) -> None:
    asr = WhisperRecognizer(prepared_models / "whisper-tiny.en")
    assert asr.english_only and asr.device == "cpu" and asr.compute_type == "int8"


def test_a_runtime_sharing_another_ones_models_never_releases_them(settings: Settings) -> None:
    """Runtime(models=...): a second app's runtime on the loaded models (the test suite's in-process
    servers) loads nothing and, when it closes, leaves them to the runtime that loaded them."""
    from avatar.runtime import Runtime

    loads: list[int] = []

    def factory() -> CountingHibari:
        loads.append(1)
        return CountingHibari()

    owner = Runtime(settings, kinds=("tts",))
    owner.registry = ModelRegistry([ModelSpec("tts", "hibari", factory)])
    owner.registry.load_all()
    borrower = Runtime(settings.replace(max_queued_requests=1), kinds=("tts",), models=owner.registry)
    borrower.registry.load_all()  # what entering it does: already loaded, nothing happens
    borrower.close()
    assert len(loads) == 1 and owner.registry.states()["tts"]["state"] == "ready"
    owner.close()
    assert owner.registry.states()["tts"]["state"] == "closed"
