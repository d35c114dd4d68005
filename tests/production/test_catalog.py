"""The production catalog: names, missing-file messages, `models pull` and `models list`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from avatar import catalog
from avatar.config import Settings
from avatar.embedded import EMBEDDED
from avatar.errors import ConfigError, ModelError


def fake_hub(files: dict[str, bytes]) -> Any:
    """Stands in for huggingface_hub.snapshot_download (the hub is an outside service): writes ``files``
    into ``local_dir`` and records each call."""
    calls: list[dict[str, Any]] = []

    def download(**kwargs: Any) -> str:
        calls.append(kwargs)
        for name, data in files.items():
            path = Path(kwargs["local_dir"]) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return str(kwargs["local_dir"])

    download.calls = calls  # type: ignore[attr-defined]
    return download


def test_models_are_found_by_name_alias_or_folder():
    turbo = catalog.find("whisper-large-v3-turbo")
    assert turbo is not None and turbo.kind == "asr" and turbo.backend == "whisper"
    assert catalog.find("large-v3-turbo") is turbo and catalog.find("turbo") is turbo
    assert catalog.find("nope") is None
    assert {m.kind for m in catalog.PRODUCTION} == {"asr", "llm", "tts", "face"}
    for model in catalog.PRODUCTION:
        assert model.license and model.required and model.disk_gb > 0 and model.gpu_gb > 0


def test_xtts_is_marked_non_commercial():
    xtts = catalog.find("xtts-v2")
    assert xtts is not None and "non-commercial" in xtts.license and xtts.accept_license


def test_an_alias_resolves_to_the_catalog_folder(tmp_path: Path):
    assert catalog.resolve_model_dir(tmp_path / "large-v3-turbo") == tmp_path / "whisper-large-v3-turbo"
    (tmp_path / "my-model").mkdir()
    assert catalog.resolve_model_dir(tmp_path / "my-model") == tmp_path / "my-model"


def test_missing_file_messages_say_how_to_get_the_model(tmp_path: Path):
    pulled = catalog.missing_model_message(tmp_path / "qwen2.5-3b-instruct", ["config.json"], "chat model")
    assert "qwen2.5-3b-instruct/config.json" in pulled and "avatar models pull qwen2.5-3b-instruct" in pulled
    embedded = catalog.missing_model_message(tmp_path / EMBEDDED[0].folder, ["model.bin"], "Whisper")
    assert "avatar models prepare" in embedded
    other = catalog.missing_model_message(tmp_path / "mine", ["model.bin"], "Whisper")
    assert "mine/model.bin" in other and "avatar models list" in other


def test_pull_offline_says_how_to_bring_the_model_in(tmp_path: Path):
    # A closed port on this machine: the hub client fails to connect, exactly as it does offline.
    with pytest.raises(ModelError) as caught:
        catalog.pull("whisper-large-v3-turbo", tmp_path, endpoint="http://127.0.0.1:9")
    message = caught.value.message
    assert message.startswith("Cannot reach the Hugging Face hub to pull whisper-large-v3-turbo")
    assert "on a machine that is online" in message and str(tmp_path / "whisper-large-v3-turbo") in message
    assert list(tmp_path.iterdir()) == []  # nothing half-made left behind


def test_pull_downloads_into_place(tmp_path: Path):
    hub = fake_hub({name: b"x" for name in catalog.find("qwen2.5-1.5b-instruct").required})  # type: ignore[union-attr]
    folder = catalog.pull("qwen2.5-1.5b-instruct", tmp_path, download=hub)
    assert folder == tmp_path / "qwen2.5-1.5b-instruct"
    assert (folder / "config.json").is_file() and (folder / catalog.PULL_MARKER).is_file()
    assert "Apache-2.0" in (folder / "SOURCE.md").read_text()
    assert not list(tmp_path.glob(".*partial"))
    call = hub.calls[0]
    assert call["repo_id"] == "Qwen/Qwen2.5-1.5B-Instruct" and "*.safetensors" in call["allow_patterns"]
    catalog.pull("qwen2.5-1.5b-instruct", tmp_path, download=hub)
    assert len(hub.calls) == 1  # already present: nothing downloaded


def test_pull_refuses_an_incomplete_download(tmp_path: Path):
    with pytest.raises(ModelError, match=r"without model\.bin"):
        catalog.pull("whisper-distil-large-v3", tmp_path, download=fake_hub({"config.json": b"{}"}))
    assert not (tmp_path / "whisper-distil-large-v3").exists()


def test_pull_asks_for_licence_acceptance(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"Coqui Public Model License.*--accept-license"):
        catalog.pull("xtts-v2", tmp_path, download=fake_hub({}))
    files = {"config.json": b"{}", "model.pth": b"x", "vocab.json": b"{}"}
    assert catalog.pull("xtts-v2", tmp_path, accept_license=True, download=fake_hub(files)).is_dir()


def test_pull_of_an_unknown_model_lists_the_known_ones(tmp_path: Path):
    with pytest.raises(ConfigError, match="whisper-large-v3-turbo"):
        catalog.pull("gpt-5", tmp_path)


def test_list_covers_embedded_and_production_models(settings: Settings, tmp_path: Path):
    models_dir = tmp_path / "models"
    turbo = models_dir / "whisper-large-v3-turbo"
    turbo.mkdir(parents=True)
    for name in catalog.find("whisper-large-v3-turbo").required:  # type: ignore[union-attr]
        (turbo / name).write_bytes(b"0123456789")
    rows = {r.name: r for r in catalog.list_models(settings.replace(models_dir=models_dir, asr_model="turbo"))}
    assert {m.folder for m in EMBEDDED} | {"hibari-tts"} | set(catalog.names()) == set(rows)
    row = rows["whisper-large-v3-turbo"]
    assert row.present and row.in_use and row.size_bytes == 40 and row.backend == "whisper"
    assert row.license.startswith("MIT") and row.origin == "production"
    missing = rows["xtts-v2"]
    assert not missing.present and not missing.in_use and missing.size_bytes == int(1.9 * catalog.GB)
    assert missing.how_to_get == "avatar models pull xtts-v2 --accept-license"
    assert rows["hibari-tts"].in_use and rows["hibari-tts"].present  # the default TTS
    assert not rows["whisper-tiny.en"].in_use and rows["whisper-tiny.en"].origin == "embedded"
    assert all(isinstance(r.as_dict()["size_bytes"], int) for r in rows.values())


def test_the_chat_backend_follows_the_models_format(settings: Settings, tmp_path: Path):
    def backend(model: str, **changes: str) -> str:
        return catalog.llm_backend_for(settings.replace(models_dir=tmp_path, llm_model=model, **changes))

    (tmp_path / "gguf-only").mkdir()
    (tmp_path / "gguf-only" / "model.gguf").write_bytes(b"GGUF")
    (tmp_path / "hf-only").mkdir()
    (tmp_path / "hf-only" / "config.json").write_text("{}")
    (tmp_path / "both").mkdir()
    (tmp_path / "both" / "config.json").write_text("{}")
    (tmp_path / "both" / "model.gguf").write_bytes(b"GGUF")
    assert backend("gguf-only") == "llamacpp" and backend(str(tmp_path / "gguf-only" / "model.gguf")) == "llamacpp"
    assert backend("hf-only") == "transformers"
    assert backend("both") == "llamacpp" and backend("both", llm_device="cuda") == "transformers"
    # Not there yet: what the name stands for, so the error says how to get it.
    assert backend("qwen2.5-coder-1.5b-instruct") == "llamacpp" and backend("qwen2.5-3b-instruct") == "transformers"
    assert backend("hf-only", llm_backend="llamacpp") == "llamacpp"  # an explicit choice is kept
