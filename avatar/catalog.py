"""The production model catalog: what each GPU model is, where it comes from, what it costs, its licence.

``avatar models pull NAME`` downloads one entry from the Hugging Face hub into ``models_cache/<folder>``;
``avatar models list`` shows every model the product knows (embedded and production), whether it is
present, its size, the backend that uses it and its licence. Backends use :func:`missing_model_message`
so a missing file is reported the same way everywhere: which file, and how to get it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar.embedded import EMBEDDED, EmbeddedModel, folder_size, is_prepared
from avatar.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

GB = 1_000_000_000
PULL_MARKER = ".pulled.json"


@dataclass(frozen=True)
class CatalogModel:
    """One production model: a Hugging Face repository pulled into ``models_cache/<folder>``.

    ``disk_gb`` and ``gpu_gb`` are approximate (GPU: weights in the serving dtype plus working memory
    for one request); ``gpu_gb_4bit`` is set for LLMs that can load in 4-bit NF4.
    """

    name: str
    kind: str  # asr | llm | tts | face
    backend: str  # the AVATAR_<KIND>_BACKEND value that uses it
    repo_id: str
    folder: str
    disk_gb: float
    gpu_gb: float
    license: str
    select: str  # the settings that select it
    required: tuple[str, ...]  # files (relative to the folder) that must be there to load it
    allow_patterns: tuple[str, ...] | None = None
    ignore_patterns: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    gpu_gb_4bit: float | None = None
    accept_license: bool = False  # pulling needs --accept-license (non-commercial or custom terms)
    note: str = ""


_WHISPER_FILES = ("config.json", "model.bin", "tokenizer.json", "preprocessor_config.json")
_WHISPER_PATTERNS = ("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*")
_HF_LLM_PATTERNS = ("*.json", "*.safetensors", "merges.txt", "vocab.json", "LICENSE*", "README.md")
_QWEN_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")

PRODUCTION: tuple[CatalogModel, ...] = (
    CatalogModel(
        name="whisper-large-v3-turbo",
        kind="asr",
        backend="whisper",
        repo_id="mobiuslabsgmbh/faster-whisper-large-v3-turbo",
        folder="whisper-large-v3-turbo",
        disk_gb=1.6,
        gpu_gb=2.0,
        license="MIT (OpenAI Whisper weights)",
        select="AVATAR_ASR_MODEL=whisper-large-v3-turbo",
        required=_WHISPER_FILES,
        allow_patterns=_WHISPER_PATTERNS,
        aliases=("large-v3-turbo", "turbo"),
        note="multilingual, 99 languages; fp16 on CUDA",
    ),
    CatalogModel(
        name="whisper-distil-large-v3",
        kind="asr",
        backend="whisper",
        repo_id="Systran/faster-distil-whisper-large-v3",
        folder="whisper-distil-large-v3",
        disk_gb=1.5,
        gpu_gb=1.9,
        license="MIT (distil-whisper weights)",
        select="AVATAR_ASR_MODEL=whisper-distil-large-v3",
        required=_WHISPER_FILES,
        allow_patterns=_WHISPER_PATTERNS,
        aliases=("distil-large-v3",),
        note="trained for English; fastest large model",
    ),
    CatalogModel(
        name="whisper-large-v3",
        kind="asr",
        backend="whisper",
        repo_id="Systran/faster-whisper-large-v3",
        folder="whisper-large-v3",
        disk_gb=3.1,
        gpu_gb=3.6,
        license="MIT (OpenAI Whisper weights)",
        select="AVATAR_ASR_MODEL=whisper-large-v3",
        required=_WHISPER_FILES,
        allow_patterns=_WHISPER_PATTERNS,
        aliases=("large-v3",),
    ),
    CatalogModel(
        name="qwen2.5-1.5b-instruct",
        kind="llm",
        backend="transformers",
        repo_id="Qwen/Qwen2.5-1.5B-Instruct",
        folder="qwen2.5-1.5b-instruct",
        disk_gb=3.1,
        gpu_gb=4.0,
        gpu_gb_4bit=1.8,
        license="Apache-2.0",
        select="AVATAR_LLM_MODEL=qwen2.5-1.5b-instruct",
        required=_QWEN_FILES,
        allow_patterns=_HF_LLM_PATTERNS,
    ),
    CatalogModel(
        name="qwen2.5-3b-instruct",
        kind="llm",
        backend="transformers",
        repo_id="Qwen/Qwen2.5-3B-Instruct",
        folder="qwen2.5-3b-instruct",
        disk_gb=6.2,
        gpu_gb=7.2,
        gpu_gb_4bit=2.8,
        license="Qwen Research License (non-commercial)",
        select="AVATAR_LLM_MODEL=qwen2.5-3b-instruct",
        required=_QWEN_FILES,
        allow_patterns=_HF_LLM_PATTERNS,
        accept_license=True,
    ),
    CatalogModel(
        name="qwen2.5-7b-instruct",
        kind="llm",
        backend="transformers",
        repo_id="Qwen/Qwen2.5-7B-Instruct",
        folder="qwen2.5-7b-instruct",
        disk_gb=15.2,
        gpu_gb=16.5,
        gpu_gb_4bit=5.8,
        license="Apache-2.0",
        select="AVATAR_LLM_MODEL=qwen2.5-7b-instruct AVATAR_LLM_QUANTIZATION=4bit",
        required=_QWEN_FILES,
        allow_patterns=_HF_LLM_PATTERNS,
        note="needs 4-bit (bitsandbytes, the gpu extra) to fit in 24 GB beside the other models",
    ),
    CatalogModel(
        name="xtts-v2",
        kind="tts",
        backend="xtts",
        repo_id="coqui/XTTS-v2",
        folder="xtts-v2",
        disk_gb=1.9,
        gpu_gb=3.0,
        license="Coqui Public Model License 1.0.0 (non-commercial use only)",
        select="AVATAR_TTS_BACKEND=xtts AVATAR_TTS_MODEL=xtts-v2",
        required=("config.json", "model.pth", "vocab.json"),
        allow_patterns=("config.json", "model.pth", "vocab.json", "speakers_xtts.pth", "LICENSE*", "README.md"),
        accept_license=True,
        note="voice cloning from each persona's voice sample; 17 languages; 24 kHz",
    ),
    CatalogModel(
        name="ditto-talkinghead",
        kind="face",
        backend="ditto",
        repo_id="digital-avatar/ditto-talkinghead",
        folder="ditto-talkinghead",
        disk_gb=2.5,
        gpu_gb=5.0,
        license="Apache-2.0",
        select="AVATAR_FACE_BACKEND=ditto AVATAR_DITTO_SDK=/path/to/ditto-talkinghead",
        required=("ditto_cfg/v0.4_hubert_cfg_trt_online.pkl", "ditto_trt_Ampere_Plus/decoder_fp16.engine"),
        allow_patterns=("ditto_cfg/*", "ditto_trt_Ampere_Plus/*", "README.md"),
        note="TensorRT engines for Ampere or newer GPUs; needs the SDK code (git clone) and the gpu extra",
    ),
    CatalogModel(
        name="ditto-talkinghead-pytorch",
        kind="face",
        backend="ditto",
        repo_id="digital-avatar/ditto-talkinghead",
        folder="ditto-talkinghead",
        disk_gb=2.5,
        gpu_gb=6.0,
        license="Apache-2.0",
        select="AVATAR_FACE_BACKEND=ditto AVATAR_DITTO_ENGINE=pytorch AVATAR_DITTO_SDK=/path/to/ditto-talkinghead",
        required=("ditto_cfg/v0.4_hubert_cfg_pytorch.pkl", "ditto_pytorch/models/decoder.pth"),
        allow_patterns=("ditto_cfg/*", "ditto_pytorch/*", "ditto_pytorch/**", "README.md"),
        note="PyTorch weights: any CUDA GPU, no TensorRT, slower",
    ),
)


def find(name: str) -> CatalogModel | None:
    """The catalog entry called ``name`` (or one of its aliases, or its folder name)."""
    for model in PRODUCTION:
        if name in (model.name, model.folder, *model.aliases):
            return model
    return None


def names() -> list[str]:
    return [model.name for model in PRODUCTION]


def resolve_model_dir(path: Path) -> Path:
    """``path`` itself when it exists; else, when its name is a catalog alias (``large-v3-turbo``), the
    entry's folder beside it. Lets a setting name a model by the name users know it by."""
    if path.exists():
        return path
    model = find(path.name)
    return path.parent / model.folder if model is not None else path


def llm_backend_for(settings: Any) -> str:
    """The chat backend AVATAR_LLM_BACKEND selects; ``auto`` (the default) goes by the model's format.

    A GGUF file, or a folder holding one, runs on llama.cpp; a transformers folder (config.json) on
    transformers. A folder with both (the embedded SmolLM2) uses llama.cpp unless AVATAR_LLM_DEVICE is
    cuda. A model not there yet is taken for what its name stands for (an embedded GGUF model, or a
    production catalog entry), so the start-up error says how to get the right files.
    """
    if settings.llm_backend != "auto":
        return str(settings.llm_backend)
    path = resolve_model_dir(settings.model_path(settings.llm_model))
    if path.is_file():
        return "llamacpp" if path.suffix == ".gguf" else "transformers"
    has_gguf = path.is_dir() and any(path.glob("*.gguf"))
    if (path / "config.json").is_file() and not (has_gguf and settings.llm_device != "cuda"):
        return "transformers"
    if has_gguf:
        return "llamacpp"
    embedded = next((m for m in EMBEDDED if m.folder == path.name), None)
    if embedded is not None:
        return embedded.backends[0]
    return "transformers" if find(path.name) is not None else "llamacpp"


def missing_model_message(folder: Path, missing: list[str], what: str, how: str | None = None) -> str:
    """A start-up error naming the missing file(s) and how to get them (pull, prepare or copy)."""
    files = ", ".join(str(folder / name) for name in missing)
    model = find(folder.name)
    embedded = next((m for m in EMBEDDED if m.folder == folder.name), None)
    if how is None and model is not None:
        how = (
            f"Get it with `avatar models pull {model.name}` (online), or download {model.repo_id} from the "
            f"Hugging Face hub on a machine that is online and copy the folder to {folder}."
        )
    elif how is None and embedded is not None:
        how = f"Prepare it with `{prepare_command(embedded)}`."
    elif how is None:
        how = (
            f"Put a {what} there, or point the setting at another folder; `avatar models list` shows the "
            f"models this product knows ({', '.join(names())})."
        )
    return f"{what}: missing {files}. {how}"


def prepare_command(model: EmbeddedModel) -> str:
    """The command that prepares an embedded model (a chat model is named: only the default is prepared
    without asking)."""
    return f"avatar models prepare --llm {model.folder}" if model.kind == "llm" else "avatar models prepare"


def check_files(folder: Path, required: tuple[str, ...], what: str, how: str | None = None) -> None:
    """Raise ModelError naming every file of ``required`` that is not in ``folder`` (``how``: the fix,
    when the default advice, which is derived from the folder's name, does not fit)."""
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise ModelError(missing_model_message(folder, missing, what, how))


# ---------------------------------------------------------------------------------------------- pull

Downloader = Callable[..., Any]
"""``huggingface_hub.snapshot_download``'s signature; tests pass their own."""


def pull(
    name: str,
    models_dir: Path,
    *,
    accept_license: bool = False,
    endpoint: str | None = None,
    download: Downloader | None = None,
) -> Path:
    """Download catalog model ``name`` into ``models_dir/<folder>`` and return that folder.

    The files go to a hidden ``.<folder>.partial`` folder first (a later pull resumes it) and are moved
    into place only when every required file is there. Offline, or when the hub cannot be reached, this
    raises ModelError saying how to bring the folder in by hand. ``endpoint`` names a hub mirror (the
    default is HF_ENDPOINT or huggingface.co).
    """
    model = find(name)
    if model is None:
        raise ConfigError(f"Unknown model {name!r}. Models that can be pulled: {', '.join(names())}.")
    if model.accept_license and not accept_license:
        raise ConfigError(
            f"{model.name} is released under the {model.license}. Read its terms on the model page "
            f"(https://huggingface.co/{model.repo_id}) and pull again with --accept-license if you agree."
        )
    target = models_dir / model.folder
    if _has_files(target, model.required):
        log.info("model already present", extra={"model": model.name, "path": str(target)})
        return target
    if download is None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()  # the CLI turns the hub's bars off for every other command
        download = snapshot_download
    staging = models_dir / f".{model.folder}.partial"
    if target.is_dir():  # another variant shares this folder (ditto): add to it, keep what is there
        shutil.copytree(target, staging, dirs_exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        download(
            repo_id=model.repo_id,
            local_dir=str(staging),
            allow_patterns=list(model.allow_patterns) if model.allow_patterns else None,
            ignore_patterns=list(model.ignore_patterns) or None,
            endpoint=endpoint,
        )
    except Exception as exc:
        if not any(p.is_file() for p in staging.rglob("*")):
            shutil.rmtree(staging, ignore_errors=True)  # nothing to resume: leave nothing behind
        raise ModelError(_download_failure(model, models_dir, exc)) from exc
    missing = [f for f in model.required if not (staging / f).is_file()]
    if missing:
        raise ModelError(
            f"The download of {model.repo_id} finished without {', '.join(missing)}; the repository may have "
            f"changed. The partial download is in {staging}."
        )
    (staging / PULL_MARKER).write_text(json.dumps({"name": model.name, "repo_id": model.repo_id}))
    (staging / "SOURCE.md").write_text(
        f"# {model.name}\n\n- Source: https://huggingface.co/{model.repo_id}\n- License: {model.license}\n"
        f"- Pulled by `avatar models pull {model.name}`.\n- Select it with: {model.select}\n"
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _download_failure(model: CatalogModel, models_dir: Path, exc: Exception) -> str:
    by_hand = (
        f"download {model.repo_id} on a machine that is online (`avatar models pull {model.name}` there) and "
        f"copy the folder to {models_dir / model.folder}"
    )
    if _is_offline(exc):
        return f"Cannot reach the Hugging Face hub to pull {model.name} ({_root_cause(exc)}); {by_hand}."
    return f"Pulling {model.name} from the Hugging Face hub failed: {_root_cause(exc)}. Try again, or {by_hand}."


def _is_offline(exc: BaseException) -> bool:
    """True when the failure is "no network" rather than, say, a missing repository."""
    names: set[str] = set()
    seen: BaseException | None = exc
    while seen is not None:
        names.update(cls.__name__ for cls in type(seen).__mro__)
        seen = seen.__cause__ or seen.__context__
    offline = {
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
        "ConnectError",
        "ConnectTimeout",
        "ConnectionError",
        "TimeoutException",
        "NetworkError",
    }
    return bool(names & offline)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _has_files(folder: Path, required: tuple[str, ...]) -> bool:
    return all((folder / name).is_file() for name in required)


# ---------------------------------------------------------------------------------------------- list


@dataclass(frozen=True)
class ModelRow:
    """One line of `avatar models list`."""

    name: str
    kind: str
    backend: str
    origin: str  # embedded | production
    present: bool
    size_bytes: int  # on disk when present, else the catalog's estimate of the download
    license: str
    path: str
    in_use: bool  # selected by the current settings
    how_to_get: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def list_models(settings: Any) -> list[ModelRow]:
    """Every model the product knows, embedded first, with what the current settings select."""
    models_dir = Path(settings.models_dir)
    rows = [_embedded_row(settings, models_dir, m) for m in EMBEDDED]
    rows.append(_hibari_row(settings))
    rows.extend(_production_row(settings, models_dir, m) for m in PRODUCTION)
    return rows


def _selected_paths(settings: Any) -> dict[str, set[Path]]:
    """The model folders the settings point at, per kind (only for the backends that are selected)."""
    path = settings.model_path
    selected: dict[str, set[Path]] = {"asr": set(), "llm": set(), "tts": set(), "face": set(), "turn": set()}
    if getattr(settings, "live_turn_detector", "silence") == "smart-turn" and getattr(settings, "max_live_sessions", 0):
        selected["turn"].add(Path(settings.models_dir) / "smart-turn")  # live mode's turn-end model
    selected["asr"].add(resolve_model_dir(path(settings.asr_model)))
    selected["llm"].add(resolve_model_dir(path(settings.llm_model)))
    if settings.tts_backend == "xtts":
        selected["tts"].add(resolve_model_dir(path(settings.tts_model)))
    if settings.face_backend == "puppet":
        selected["face"].add(path(settings.face_model).parent)
    else:
        selected["face"].add(ditto_checkpoints_dir(settings))
    return {kind: {p.resolve() for p in paths} for kind, paths in selected.items()}


def ditto_checkpoints_dir(settings: Any) -> Path:
    """Ditto's checkpoints: AVATAR_DITTO_CHECKPOINTS, else models_cache/ditto-talkinghead, else the SDK's own
    ``checkpoints/`` folder (where its README puts them)."""
    configured = settings.ditto_checkpoints
    if configured:
        return settings.model_path(configured)
    default = Path(settings.models_dir) / "ditto-talkinghead"
    sdk = settings.ditto_sdk
    if not default.is_dir() and sdk and (Path(sdk).expanduser() / "checkpoints").is_dir():
        return Path(sdk).expanduser() / "checkpoints"
    return default


def _embedded_row(settings: Any, models_dir: Path, model: EmbeddedModel) -> ModelRow:
    folder = models_dir / model.folder
    present = is_prepared(models_dir, model)
    return ModelRow(
        name=model.folder,
        kind=model.kind,
        backend=", ".join(model.backends),
        origin="embedded",
        present=present,
        size_bytes=folder_size(folder) if folder.exists() else 0,
        license=model.license,
        path=str(folder),
        in_use=folder.resolve() in _selected_paths(settings).get(model.kind, set()),
        how_to_get=prepare_command(model),
    )


def _hibari_row(settings: Any) -> ModelRow:
    spec = importlib.util.find_spec("hibari")
    location = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    return ModelRow(
        name="hibari-tts",
        kind="tts",
        backend="hibari",
        origin="embedded",
        present=location is not None,
        size_bytes=folder_size(location) if location else 0,
        license="Apache-2.0 (Kokoro-82M distilled voice; NOTICE credits Kokoro, misaki)",
        path=str(location or "(package hibari-tts)"),
        in_use=settings.tts_backend == "hibari",
        how_to_get="installed with the product (package hibari-tts)",
    )


def _production_row(settings: Any, models_dir: Path, model: CatalogModel) -> ModelRow:
    folder = models_dir / model.folder
    if model.kind == "face":
        folder = ditto_checkpoints_dir(settings)
    present = _has_files(folder, model.required)
    in_use = folder.resolve() in _selected_paths(settings)[model.kind]
    if model.kind == "face":
        engine = settings.ditto_engine
        in_use = in_use and settings.face_backend == "ditto" and model.name.endswith("pytorch") == (engine == "pytorch")
    flag = " --accept-license" if model.accept_license else ""
    return ModelRow(
        name=model.name,
        kind=model.kind,
        backend=model.backend,
        origin="production",
        present=present,
        size_bytes=folder_size(folder) if present else int(model.disk_gb * GB),
        license=model.license,
        path=str(folder),
        in_use=in_use,
        how_to_get=f"avatar models pull {model.name}{flag}",
    )
