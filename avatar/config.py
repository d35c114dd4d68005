"""Settings, built once from a mapping (the environment) and an optional TOML file.

Nothing else in the package reads ``os.environ``: tests pass a dict. Every setting is named
``AVATAR_<FIELD>`` in the environment and ``<field>`` in the TOML file (``AVATAR_CONFIG`` names the
file); the environment wins over the file. A bad value raises ``ConfigError`` naming the setting.

Each setting is stated once, on its field: its default, its doc and its range (``setting(...)``); a
choice among names is a ``Literal``; a secret is a ``SecretStr`` (shown as stars). Validation and the
table in docs/configuration.md (``settings_table``; a test keeps it current) come from the fields.
Field metadata rather than pydantic-settings: the package keeps a frozen dataclass built from a plain
mapping, its own error messages naming ``AVATAR_*``, and no new dependency.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from avatar.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

REDIS_SCHEMES = ("redis", "rediss", "unix")


class SecretStr:
    """A setting's value that is never shown: its repr and str are stars (logs, error messages, a
    printed Settings). ``get_secret_value()`` is the value itself (named as pydantic names it)."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = str(value)

    def get_secret_value(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"SecretStr({str(self)!r})"


def setting(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> Any:
    """A settings field: its default, what it is for (the docs table), and the range of a number."""
    return field(default=default, metadata={"doc": doc, "ge": ge, "gt": gt, "le": le})


@dataclass(frozen=True)
class Settings:
    """Every knob of the product. Defaults run the embedded CPU models from ``models_cache/``."""

    models_dir: Path = setting(PROJECT_ROOT / "models_cache", "where model folders live")
    assets_dir: Path = setting(PROJECT_ROOT / "assets", "personas and samples")
    output_dir: Path = setting(PROJECT_ROOT / "out" / "results", "the service's results")
    default_persona: str = setting("eileen", "the persona a turn talks to when it names none")
    threads: int = setting(0, "CPU threads for the models (`0`: every core)", ge=0)

    asr_backend: Literal["whisper"] = setting("whisper", "the speech recogniser (faster-whisper)")
    asr_model: str = setting("whisper-tiny.en", "a CTranslate2 Whisper folder (in the models dir, or a path)")
    asr_device: Literal["auto", "cpu", "cuda"] = setting("auto", "where Whisper runs (`auto`: CUDA when present)")
    asr_compute_type: str = setting("auto", "CTranslate2 compute type (`auto`: float16 on CUDA, int8 on the CPU)")
    asr_vad: bool = setting(True, "Silero voice-activity filter")
    asr_beam_size: int = setting(1, "Whisper's beam size (1: greedy, the fastest)", ge=1)
    asr_word_timestamps: bool = setting(False, "word timings in transcripts")
    asr_short_window: bool = setting(
        True,
        "encode a short utterance (under 28 s of speech) in a window just longer than itself instead of Whisper's 30 "
        "s: 3-4x faster on a CPU, same words on the eval clips; `false` always uses the 30 s window",
    )
    # CTranslate2 on the CPU. One thread by default: with two, torch in the same process (the LLM) ran
    # 1.7x slower per token on 2 cores while Whisper tiny gained nothing (bench/PROFILE.md). 0: AVATAR_THREADS.
    asr_threads: int = setting(
        1, "CPU threads for CTranslate2 (`0`: `AVATAR_THREADS`); more slows the LLM beside it", ge=0
    )

    # The default model was chosen by measurement in the running service (docs/models.md).
    llm_backend: Literal["auto", "llamacpp", "transformers"] = setting(
        "auto",
        "`llamacpp` (a GGUF model on the CPU), `transformers` (a Hugging Face folder; GPUs), or `auto`: by the "
        "model's format (a folder holding both, like SmolLM2's, runs on llama.cpp unless `AVATAR_LLM_DEVICE=cuda`)",
    )
    llm_model: str = setting(
        "qwen2.5-coder-0.5b-instruct",
        "a chat model: an embedded name (`avatar models list`), a folder in the models dir, or a path (a `.gguf` file"
        " for llama.cpp)",
    )
    llm_device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", "transformers: where the model runs (`auto`: CUDA when present)"
    )
    llm_dtype: str = setting("auto", "transformers: the weights' type (`auto`: bf16/fp16 on CUDA, float32 on the CPU)")
    llm_max_new_tokens: int = setting(60, "reply length limit in tokens", ge=1, le=4096)
    llm_max_sentences: int = setting(2, "sentences a reply may have before it is cut off (1-100)", ge=1, le=100)
    llm_history_turns: int = setting(6, "turns of history kept per session", ge=0)
    llm_temperature: float = setting(0.3, "0 = greedy", ge=0.0, le=2.0)
    llm_quantization: Literal["none", "4bit", "8bit"] = setting("none", "`4bit` / `8bit` on CUDA (bitsandbytes)")
    llm_alone_threads: int = setting(
        0,
        "llama.cpp: CPU threads while the model runs alone, reading the prompt (and with `llama-cpp-python`, "
        "writing the first spoken piece) (`0`: `AVATAR_THREADS`, every core); measured in docs/models.md",
        ge=0,
        le=256,
    )
    llm_threads: int = setting(
        1,
        "llama.cpp: CPU threads writing the reply beside the face renderer (with `llama-cpp-python`, the rest after "
        "the first piece) (`0`: `AVATAR_THREADS`)",
        ge=0,
        le=256,
    )
    llm_adapt_threads: bool = setting(
        True,
        "llama.cpp: follow the cores this process gets: fewer threads while other processes take cores its "
        "threads would spin on, the set counts again once the machine is quiet (`avatar/cores.py`); `false`: "
        "`AVATAR_LLM_THREADS` and `AVATAR_LLM_ALONE_THREADS` as given",
    )
    llm_context_tokens: int = setting(
        2048,
        "llama.cpp: context (KV cache) size, 256-131072; the oldest turns are dropped to fit (`0`: the model's own, "
        "32k for Qwen)",
    )
    llm_seed: int = setting(
        -1,
        "llama.cpp sampler seed; `-1` a random one per process, any other value repeats replies (`avatar eval` uses 7)",
        ge=-1,
        le=2**32 - 2,
    )
    llamacpp_runtime: Literal["xllamacpp", "llama-cpp-python"] = setting(
        "xllamacpp",
        "llama.cpp's Python binding: `xllamacpp` (a prebuilt wheel, installed by default) or `llama-cpp-python` "
        "(built from source for this CPU by `make install-llama-source`); compared in docs/models.md",
    )

    tts_backend: Literal["hibari", "xtts"] = setting("hibari", "`hibari` (embedded) or `xtts`")
    tts_model: str = setting("xtts-v2", "XTTS only: its model folder (in the models dir, or a path)")
    tts_device: Literal["auto", "cpu", "cuda"] = setting(
        "auto", "XTTS only (hibari always runs on the CPU; `auto`: CUDA when present)"
    )

    face_backend: Literal["puppet", "ditto"] = setting("puppet", "`puppet` (embedded) or `ditto`")
    face_model: str = setting(
        "face/face_landmarker.task",
        "the puppet's MediaPipe FaceLandmarker file (in the models dir, or a path); Ditto reads the `AVATAR_DITTO_*` "
        "settings",
    )
    ditto_sdk: str = setting("", "Ditto: its cloned repository (the SDK)")
    ditto_checkpoints: str = setting(
        "", "Ditto: its checkpoints folder (empty: `models_cache/ditto-talkinghead`, else `<sdk>/checkpoints`)"
    )
    ditto_engine: Literal["tensorrt", "pytorch"] = setting("tensorrt", "Ditto: which of its engines runs")
    ditto_data_root: str = setting("", "Ditto: its models' folder, if not the engine's own in the checkpoints")
    ditto_cfg: str = setting("", "Ditto: its configuration file, if not the engine's own in the checkpoints")
    video_size: int = setting(512, "output frame size in pixels (even, 64-2048)")
    fps: int = setting(25, "output frame rate", ge=1, le=60)

    max_upload_mb: float = setting(20.0, "largest upload", gt=0)
    max_audio_seconds: float = setting(60.0, "longest audio in a request", gt=0)
    max_text_chars: int = setting(1000, "longest typed question", gt=0)
    result_ttl_seconds: int = setting(3600, "results expire this long after they are made", gt=0)
    persona_ttl_seconds: int = setting(
        86_400, "personas created from photos are kept this long after their last use", gt=0
    )
    max_personas: int = setting(
        100, "personas created from photos kept at most (the least recently used goes first)", ge=1, le=100_000
    )
    session_ttl_seconds: int = setting(1800, "conversation sessions expire this long after their last turn", gt=0)
    redis_url: SecretStr = setting(
        SecretStr(""),
        "unset: sessions in memory; set: kept in Redis, shared by every replica: "
        "`redis://[user:password@]host:6379/0`, "
        "`rediss://…` (TLS) or `unix:///path.sock`. Same TTL and history bound as in memory. Redis must answer by the"
        " time the models are loaded, or start-up fails naming it; if it goes away later, requests that need it get "
        "503 `session_store_unavailable` with `Retry-After`",
    )
    host: str = setting("127.0.0.1", "the address the service listens on")
    port: int = setting(8000, "its port", ge=0, le=65535)
    shutdown_grace_seconds: float = setting(30.0, "on SIGTERM, turns in flight may finish for this long", ge=0)
    max_queued_requests: int = setting(
        8,
        "model requests that may wait while one runs; past that, 503 `busy` with `Retry-After`, and `/readyz` is 503 "
        "`busy`",
        ge=0,
    )
    stage_timeout_seconds: float = setting(120.0, "longest model call (a token, a sentence, a chunk of frames)", gt=0)
    turn_timeout_seconds: float = setting(
        300.0, "longest turn holding the models (queue excluded), every transport", gt=0
    )
    health_check_seconds: float = setting(15.0, "how often a model that keeps failing is tried again", gt=0)
    faults: str = setting(
        "", "injected faults for drills and tests (`kind:mode[:skip=N][:count=N][:seconds=S]`, comma-separated)"
    )
    replica_id: str = setting(
        "", "names this process's staging folder in a results folder replicas share (unset: host-port)"
    )

    # Hardening: input bounds, slow clients, access, outputs (docs/service.md, "Security and operations").
    max_image_pixels: int = setting(
        40_000_000,
        "largest photo (width × height), read from its header before decoding",
        ge=1_000_000,
        le=1_000_000_000,
    )
    public_url: str = setting(
        "", "e.g. `https://avatar.example.com`: result URLs are absolute under it; unset: relative"
    )
    trusted_proxies: str = setting(
        "", "IPs/networks (comma-separated, `*`: any) whose `X-Forwarded-For`/`-Proto` are believed; unset: none"
    )
    header_timeout_seconds: float = setting(
        10.0, "deadline for a whole request head (from connecting or the last response)", gt=0
    )
    body_timeout_seconds: float = setting(15.0, "longest pause in a request body", gt=0)
    min_upload_bytes_per_second: int = setting(
        8192, "slowest average body rate once past the body timeout (408 below it; `0`: none)", ge=0
    )
    keep_alive_seconds: int = setting(5, "an idle keep-alive connection is closed after this", ge=1)
    max_connections: int = setting(
        100, "connections served at once (503 `busy` past that; the probes are always answered)", ge=1
    )
    max_header_bytes: int = setting(16384, "largest request head", ge=1024, le=1_048_576)
    api_keys: SecretStr = setting(SecretStr(""), "bearer keys, comma-separated; unset (and no file): the API is open")
    admin_api_keys: SecretStr = setting(
        SecretStr(""), "admin bearer keys, comma-separated: valid keys that see and remove what any key made"
    )
    api_keys_file: str = setting("", "a file of bearer keys, one a line (`#` comments), added to `AVATAR_API_KEYS`")
    cors_origins: str = setting("", "origins whose pages may call the API (comma-separated, `*`: any); unset: CORS off")
    max_output_mb: float = setting(
        1024.0, "disk for results; past it the oldest are removed first (created personas not counted)", gt=0
    )
    c2pa_cert_file: str = setting(
        "",
        "PEM certificate chain (signer first) that signs the C2PA manifest marking every MP4 as AI-generated; "
        "unset: a self-signed test certificate made at start-up (verifiers report it untrusted)",
    )
    c2pa_key_file: str = setting("", "PEM private key (ES256) of `AVATAR_C2PA_CERT_FILE`")
    visible_label: str = setting("", "text drawn along the bottom of every video (e.g. `AI-generated`); unset: none")
    min_free_disk_mb: float = setting(
        200.0,
        "free space the output folder's disk keeps: below it the oldest results are removed first, and "
        "while it stays below, `/readyz` is 503 `storage_full`",
        ge=0,
    )

    # Live mode (WebRTC, POST /api/v1/live): docs/live.md.
    max_live_sessions: int = setting(
        4,
        "live connections open at once; one more is refused (503 `busy`, `Retry-After`); `0` switches live mode off",
        ge=0,
        le=1000,
    )
    live_turn_detector: Literal["smart-turn", "silence"] = setting(
        "smart-turn",
        "what ends the user's turn: each pause judged by the turn-end model and the words so far, or silence alone "
        "(`AVATAR_LIVE_END_SILENCE_MS`)",
    )
    live_finished_silence_ms: int = setting(
        200, "smart-turn: the pause that ends a turn judged finished", ge=32, le=5000
    )
    live_unsure_silence_ms: int = setting(
        700,
        "smart-turn: ... judged unsure (a greeting alone; the model leaning to complete but not sure)",
        ge=32,
        le=5000,
    )
    live_unfinished_silence_ms: int = setting(
        1500, "smart-turn: the longest pause after an unfinished phrase (then the turn ends anyway)", ge=100, le=10_000
    )
    live_turn_threshold: float = setting(
        0.5,
        "smart-turn: the model's P(complete) that counts as probably finished (0.95 and over: surely)",
        ge=0.05,
        le=0.95,
    )
    live_end_silence_ms: int = setting(
        400,
        "silence after speech that ends the user's turn (the silence rule; also smart-turn's when its model fails)",
        ge=100,
        le=5000,
    )
    live_early_reply: bool = setting(
        True,
        "begin the reply at the first short pause, held back until the turn has ended (`false`: only read its prompt "
        "ahead)",
    )
    live_backchannels: bool = setting(
        True,
        'a sound over the reply pauses it; it resumes if that was a backchannel ("mm-hm") or a noise, and stops '
        "for words (`false`: any speech loud and long enough stops it)",
    )
    live_vad_threshold: float = setting(0.5, "Silero speech probability that counts as speech", ge=0.05, le=0.95)
    live_barge_in_threshold: float = setting(
        0.8, "... while the face speaks (at least `AVATAR_LIVE_VAD_THRESHOLD`, at most 0.99)"
    )
    live_barge_in_ms: int = setting(96, "speech this long while the face speaks interrupts it", ge=32, le=5000)
    live_partial_seconds: float = setting(
        1.0, "a partial transcript after each this much more speech (`0`: none)", ge=0
    )
    live_max_utterance_seconds: float = setting(
        30.0, "a turn ends after this much speech even without a pause (1 s up to `AVATAR_MAX_AUDIO_SECONDS`)"
    )
    live_idle_timeout_seconds: int = setting(300, "a live session nobody speaks in for this long is closed", gt=0)
    live_idle_loop_seconds: float = setting(
        12.0, "idle motion drawn per persona (played forwards and backwards)", ge=1, le=120
    )
    live_buffer_seconds: float = setting(
        20.0,
        "reply media made ahead of playback at most (encoded, ~0.1 MB/s): the models are free again once a reply is "
        "made",
        ge=0.2,
        le=600,
    )
    live_video_kbps: int = setting(800, "VP8 bit rate of the face", ge=100, le=20_000)
    live_ice_servers: str = setting(
        "", "STUN/TURN URLs, comma-separated (`stun:host:3478,turn:host:3478?transport=udp`); also handed to the page"
    )
    live_ice_username: str = setting("", "for the `turn:` URLs")
    live_ice_credential: SecretStr = setting(SecretStr(""), "for the `turn:` URLs")
    live_host_addresses: str = setting(
        "", "IP addresses offered as host candidates, comma-separated (unset: every interface and loopback)"
    )

    def model_path(self, value: str) -> Path:
        """A model setting as a path: absolute, or relative to ``models_dir``."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.models_dir / path

    @property
    def replica(self) -> str:
        """This process's name among replicas sharing ``output_dir``: stable across its restarts."""
        return self.replica_id or f"{socket.gethostname()}-{self.port}"

    @property
    def cpu_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return split_list(self.cors_origins)

    @property
    def trusted_proxy_list(self) -> tuple[str, ...]:
        return split_list(self.trusted_proxies)

    @property
    def ice_server_urls(self) -> tuple[str, ...]:
        return split_list(self.live_ice_servers)

    @property
    def host_addresses(self) -> tuple[str, ...]:
        return split_list(self.live_host_addresses)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def split_list(value: str) -> tuple[str, ...]:
    """The items of a comma-separated setting, stripped, blanks dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from ``environ`` (default: the process environment), its TOML file, overrides."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    config_file = environ.get("AVATAR_CONFIG")
    if config_file:
        raw.update(_read_toml(Path(config_file)))
    for f in fields(Settings):
        key = f"AVATAR_{f.name.upper()}"
        if key in environ:
            raw[f.name] = environ[key]
    raw.update({k: v for k, v in overrides.items() if v is not None})

    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise ConfigError(f"Unknown setting {name!r}. Known settings: {', '.join(sorted(known))}.")
        values[name] = _coerce(name, value, type(getattr(Settings(), name)))
    settings = Settings(**values)
    _validate(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"AVATAR_CONFIG names {path}, which does not exist. Fix the path or unset it.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"AVATAR_CONFIG file {path} is not valid TOML: {exc}.") from None
    return dict(data.get("avatar", data))


def _coerce(name: str, value: Any, kind: type) -> Any:
    setting = f"AVATAR_{name.upper()}"
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is Path:
            return Path(text).expanduser().resolve()
        return kind(text)
    except ValueError:
        raise ConfigError(f"{setting}={text!r} is not a valid {kind.__name__}.") from None


ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def _validate_live(s: Settings) -> None:
    for url in s.ice_server_urls:
        if not url.startswith(ICE_SCHEMES) or len(url) <= len(url.split(":")[0]) + 1:
            raise ConfigError(
                f"AVATAR_LIVE_ICE_SERVERS: {url!r} is not a STUN/TURN URL; write e.g. stun:stun.example.org:3478 "
                "or turn:turn.example.org:3478?transport=udp (comma-separated)."
            )
    if any(url.startswith(("turn:", "turns:")) for url in s.ice_server_urls) and not (
        s.live_ice_username and s.live_ice_credential
    ):
        raise ConfigError("A TURN server needs AVATAR_LIVE_ICE_USERNAME and AVATAR_LIVE_ICE_CREDENTIAL.")
    for address in s.host_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(
                f"AVATAR_LIVE_HOST_ADDRESSES: {address!r} is not an IP address (e.g. 127.0.0.1,192.168.1.20)."
            ) from None


def _validate(s: Settings) -> None:
    hints = get_type_hints(Settings)
    for f in fields(Settings):
        value = getattr(s, f.name)
        choices = get_args(hints[f.name]) if get_origin(hints[f.name]) is Literal else ()
        if choices and value not in choices:
            raise ConfigError(
                f"AVATAR_{f.name.upper()}={value!r} is not supported; choose one of: {', '.join(choices)}."
            )
        if not _in_range(value, f.metadata):
            raise ConfigError(f"AVATAR_{f.name.upper()}={value!r} is out of range ({_range_text(f.metadata)}).")
    # Ranges that depend on another setting, or are not an interval.
    related = {
        "llm_context_tokens": s.llm_context_tokens == 0 or 256 <= s.llm_context_tokens <= 131_072,
        "video_size": 64 <= s.video_size <= 2048 and s.video_size % 2 == 0,
        "live_barge_in_threshold": s.live_vad_threshold <= s.live_barge_in_threshold <= 0.99,
        "live_max_utterance_seconds": 1 <= s.live_max_utterance_seconds <= s.max_audio_seconds,
        "live_unsure_silence_ms": s.live_finished_silence_ms
        <= s.live_unsure_silence_ms
        <= s.live_unfinished_silence_ms,
    }
    for name, ok in related.items():
        if not ok:
            raise ConfigError(f"AVATAR_{name.upper()}={getattr(s, name)!r} is out of range; see docs/configuration.md.")
    _check_redis_url(s.redis_url.get_secret_value())
    if s.replica_id and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", s.replica_id):
        raise ConfigError(
            f"AVATAR_REPLICA_ID={s.replica_id!r}: use up to 64 letters, digits, '.', '_' or '-' (it names a folder)."
        )
    _validate_public_url(s.public_url)
    _validate_proxies(s.trusted_proxy_list)
    _validate_origins(s.cors_origin_list)
    _validate_live(s)


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    return not (
        (meta.get("ge") is not None and value < meta["ge"])
        or (meta.get("gt") is not None and value <= meta["gt"])
        or (meta.get("le") is not None and value > meta["le"])
    )


def _range_text(meta: Mapping[str, Any]) -> str:
    """``≥ 1``, ``> 0``, ``1-100``: the range of a number, as the docs table shows it."""
    low, above, high = meta.get("ge"), meta.get("gt"), meta.get("le")
    if low is not None and high is not None:
        return f"{_number(low)}-{_number(high)}"
    parts = [f"≥ {_number(low)}" if low is not None else "", f"> {_number(above)}" if above is not None else ""]
    parts.append(f"≤ {_number(high)}" if high is not None else "")
    return ", ".join(p for p in parts if p)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_table() -> str:
    """The Markdown table of every setting (docs/configuration.md holds it; a test keeps it current)."""
    hints = get_type_hints(Settings)
    rows = ["| setting | default | allowed | meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        hint = hints[f.name]
        if get_origin(hint) is Literal:
            allowed = " ".join(f"`{choice}`" for choice in get_args(hint))
        elif hint is bool:
            allowed = "`true` `false`"
        else:
            allowed = _range_text(f.metadata)
        doc = f.metadata["doc"].replace("|", "\\|")
        rows.append(f"| `AVATAR_{f.name.upper()}` | {_shown(f.default)} | {allowed} | {doc} |")
    return "\n".join(rows) + "\n"


def _shown(default: Any) -> str:
    if isinstance(default, Path):
        return f"`{default.relative_to(PROJECT_ROOT)}/`" if default.is_relative_to(PROJECT_ROOT) else f"`{default}`"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, SecretStr) or default == "":
        return "–"
    return f"`{_number(default) if isinstance(default, int | float) else default}`"


def _validate_public_url(url: str) -> None:
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"AVATAR_PUBLIC_URL={url!r} is not a base URL; give scheme and host, e.g. https://avatar.example.com "
            "(a path prefix is allowed; no query or fragment)."
        )


def _validate_proxies(proxies: tuple[str, ...]) -> None:
    for proxy in proxies:
        if proxy == "*":
            continue
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"AVATAR_TRUSTED_PROXIES: {proxy!r} is not an IP address or network (e.g. 10.0.0.0/8, 127.0.0.1, *)."
            ) from None


def _validate_origins(origins: tuple[str, ...]) -> None:
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ConfigError(
                f"AVATAR_CORS_ORIGINS: {origin!r} is not an origin; write scheme://host[:port], e.g. "
                "https://app.example.com (no path, no trailing slash)."
            )


def _check_redis_url(url: str) -> None:
    """A Redis URL of a scheme redis-py understands (its text is not echoed: it may hold a password)."""
    if not url:
        return
    parts = urlsplit(url)
    try:
        valid = parts.scheme in REDIS_SCHEMES and bool(parts.hostname or parts.path) and parts.port != 0
    except ValueError:  # a port that is not a number in range
        valid = False
    if not valid:
        raise ConfigError(
            "AVATAR_REDIS_URL is not a Redis URL; use redis://[user:password@]host:6379/0, rediss://… (TLS) "
            "or unix:///path/to/redis.sock, or leave it empty to keep sessions in memory."
        )


TABLE_START = "<!-- settings table: python -m avatar.config -->\n"
TABLE_END = "<!-- end of the settings table -->\n"
DOCS = PROJECT_ROOT / "docs" / "configuration.md"


def documented_table(text: str) -> str:
    """The settings table held in the text of docs/configuration.md."""
    return text[text.index(TABLE_START) + len(TABLE_START) : text.index(TABLE_END)]


if __name__ == "__main__":  # python -m avatar.config: rewrite the table in docs/configuration.md
    current = DOCS.read_text(encoding="utf-8")
    DOCS.write_text(current.replace(documented_table(current), settings_table()), encoding="utf-8")
