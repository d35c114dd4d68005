"""Settings, built once from a mapping (the environment) and an optional TOML file.

Nothing else in the package reads ``os.environ``: tests pass a dict. Every setting is named
``AVATAR_<FIELD>`` in the environment and ``<field>`` in the TOML file (``AVATAR_CONFIG`` names the
file); the environment wins over the file. A bad value raises ``ConfigError`` naming the setting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from avatar.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ASR_BACKENDS = ("whisper",)
LLM_BACKENDS = ("auto", "llamacpp", "transformers")
TTS_BACKENDS = ("hibari", "xtts")
FACE_BACKENDS = ("puppet", "ditto")
DEVICES = ("auto", "cpu", "cuda")
QUANTIZATIONS = ("none", "4bit", "8bit")
DITTO_ENGINES = ("tensorrt", "pytorch")
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class Settings:
    """Every knob of the product. Defaults run the embedded CPU models from ``models_cache/``."""

    models_dir: Path = PROJECT_ROOT / "models_cache"
    assets_dir: Path = PROJECT_ROOT / "assets"
    output_dir: Path = PROJECT_ROOT / "out" / "results"
    default_persona: str = "eileen"
    threads: int = 0  # 0: every core

    asr_backend: str = "whisper"
    asr_model: str = "whisper-tiny.en"  # a folder in models_dir, or a path
    asr_device: str = "auto"
    asr_compute_type: str = "auto"
    asr_vad: bool = True
    asr_beam_size: int = 1
    asr_word_timestamps: bool = False
    asr_short_window: bool = True  # a short utterance is encoded in a window just longer than itself
    # CTranslate2 on the CPU. One thread by default: with two, torch in the same process (the LLM) ran
    # 1.7x slower per token on 2 cores while Whisper tiny gained nothing (bench/PROFILE.md). 0: AVATAR_THREADS.
    asr_threads: int = 1

    # llamacpp: a GGUF file on the CPU; transformers: a Hugging Face folder, for GPUs; auto: by the model's
    # format. The default model was chosen by measurement in the running service (README "Models").
    llm_backend: str = "auto"
    llm_model: str = "qwen2.5-coder-0.5b-instruct"
    llm_device: str = "auto"
    llm_dtype: str = "auto"
    llm_max_new_tokens: int = 60
    llm_max_sentences: int = 2  # a reply is cut off after this many sentences (spoken replies stay short)
    llm_history_turns: int = 6
    llm_temperature: float = 0.3
    llm_quantization: str = "none"  # none | 4bit | 8bit (CUDA, bitsandbytes)
    # llamacpp only. Threads while the model runs alone, reading the prompt and writing the first piece
    # of the reply, and while it generates the rest beside the face renderer (0: AVATAR_THREADS; README
    # "Why llama.cpp, which model, how many threads"). The context bounds the KV cache (0: the model's
    # own, 32k for Qwen).
    llm_alone_threads: int = 0
    llm_threads: int = 1
    llm_context_tokens: int = 2048
    llm_seed: int = -1  # -1: a random seed per process; any other value repeats the same replies

    tts_backend: str = "hibari"
    tts_model: str = "xtts-v2"  # used by xtts only
    tts_device: str = "auto"  # xtts only; hibari always runs on the CPU

    face_backend: str = "puppet"
    face_model: str = "face/face_landmarker.task"  # puppet; ditto reads ditto_* settings
    ditto_sdk: str = ""
    ditto_checkpoints: str = ""  # empty: models_cache/ditto-talkinghead, else <sdk>/checkpoints
    ditto_engine: str = "tensorrt"
    ditto_data_root: str = ""
    ditto_cfg: str = ""
    video_size: int = 512
    fps: int = 25

    max_upload_mb: float = 20.0
    max_audio_seconds: float = 60.0
    max_text_chars: int = 1000
    result_ttl_seconds: int = 3600
    persona_ttl_seconds: int = 86_400  # a persona created from an uploaded photo lasts this long after its last use
    max_personas: int = 100  # created personas kept at most (the least recently used goes first)
    session_ttl_seconds: int = 1800
    # Conversation sessions in Redis, shared by every replica (redis://host:6379/0); empty: in memory.
    redis_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    shutdown_grace_seconds: float = 30.0
    max_queued_requests: int = 8  # model requests that may wait while one runs; more are told to retry
    stage_timeout_seconds: float = 120.0  # one model call (a token, a sentence, a chunk of frames) at most
    turn_timeout_seconds: float = 300.0  # a whole turn at most, queue wait excluded
    health_check_seconds: float = 15.0  # how often a failing model is tried again (its warm-up call)
    faults: str = ""  # fault injection for tests and drills, e.g. "llm:raise,face:raise:skip=2" (README)
    # Names this process's staging folder inside a results folder replicas may share; empty: host-port.
    replica_id: str = ""

    # Hardening: input bounds, slow clients, access, outputs (README "Security and operations").
    max_image_pixels: int = 40_000_000  # a photo's width × height, judged from its header before decoding
    public_url: str = ""  # e.g. https://avatar.example.com: result URLs are absolute under it; empty: relative
    trusted_proxies: str = ""  # comma-separated IPs/networks whose X-Forwarded-For/-Proto are believed; "*": any
    header_timeout_seconds: float = 10.0  # from connecting (or the previous response) to a whole request head
    body_timeout_seconds: float = 15.0  # the longest wait for the next piece of a request body
    min_upload_bytes_per_second: int = 8192  # slower bodies are cut off (408) once past the body timeout
    keep_alive_seconds: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 100  # open connections; a request on one more is answered 503 busy
    max_header_bytes: int = 16384  # a request line and headers larger than this are refused (400)
    api_keys: str = ""  # comma-separated bearer tokens; empty (and no file): the API is open
    api_keys_file: str = ""  # a file of bearer tokens, one a line (# comments), added to api_keys
    cors_origins: str = ""  # comma-separated origins browsers may call the API from ("*": any); empty: none
    max_output_mb: float = 1024.0  # results on disk; past it the oldest are removed first

    # Live mode (WebRTC, POST /api/v1/live): see README "Live mode".
    max_live_sessions: int = 4  # open live connections at most; one more is told to retry (503)
    live_end_silence_ms: int = 400  # silence after speech that ends the user's turn
    live_early_reply: bool = True  # begin the reply at the first pause, held back until the turn has ended
    live_vad_threshold: float = 0.5  # Silero speech probability that counts as speech
    live_barge_in_threshold: float = 0.8  # ... while the face speaks (its own voice must not interrupt it)
    live_barge_in_ms: int = 96  # speech this long (three 32 ms windows) while the face speaks interrupts it
    live_partial_seconds: float = 1.0  # a partial transcript after each this much more speech
    live_max_utterance_seconds: float = 30.0  # a turn ends after this much speech even without a pause
    live_idle_timeout_seconds: int = 300  # a live session nobody speaks to for this long is closed
    live_idle_loop_seconds: float = 12.0  # length of the pre-drawn idle motion (played back and forth)
    live_buffer_seconds: float = 20.0  # reply media made ahead of playback at most (then the stages wait)
    live_video_kbps: int = 800  # VP8 bit rate of the face video
    live_ice_servers: str = ""  # STUN/TURN URLs, comma-separated (stun:host:3478, turn:host:3478?transport=udp)
    live_ice_username: str = ""  # for the turn: URLs
    live_ice_credential: str = ""
    live_host_addresses: str = ""  # IPs to offer as host candidates, comma-separated; empty: every interface

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


def _choice(setting: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{setting}={value!r} is not supported; choose one of: {', '.join(allowed)}.")


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
    _choice("AVATAR_ASR_BACKEND", s.asr_backend, ASR_BACKENDS)
    _choice("AVATAR_LLM_BACKEND", s.llm_backend, LLM_BACKENDS)
    _choice("AVATAR_TTS_BACKEND", s.tts_backend, TTS_BACKENDS)
    _choice("AVATAR_FACE_BACKEND", s.face_backend, FACE_BACKENDS)
    _choice("AVATAR_LLM_QUANTIZATION", s.llm_quantization, QUANTIZATIONS)
    _choice("AVATAR_DITTO_ENGINE", s.ditto_engine, DITTO_ENGINES)
    for name in ("asr_device", "llm_device", "tts_device"):
        _choice(f"AVATAR_{name.upper()}", getattr(s, name), DEVICES)
    positive = {
        "threads": s.threads >= 0,
        "asr_beam_size": s.asr_beam_size >= 1,
        "asr_threads": s.asr_threads >= 0,
        "llm_max_new_tokens": 1 <= s.llm_max_new_tokens <= 4096,
        "llm_history_turns": s.llm_history_turns >= 0,
        "llm_max_sentences": 1 <= s.llm_max_sentences <= 100,
        "llm_temperature": 0.0 <= s.llm_temperature <= 2.0,
        "llm_threads": 0 <= s.llm_threads <= 256,
        "llm_alone_threads": 0 <= s.llm_alone_threads <= 256,
        "llm_context_tokens": s.llm_context_tokens == 0 or 256 <= s.llm_context_tokens <= 131_072,
        "llm_seed": -1 <= s.llm_seed < 2**32 - 1,
        "video_size": 64 <= s.video_size <= 2048 and s.video_size % 2 == 0,
        "fps": 1 <= s.fps <= 60,
        "max_upload_mb": s.max_upload_mb > 0,
        "max_audio_seconds": s.max_audio_seconds > 0,
        "max_text_chars": s.max_text_chars > 0,
        "result_ttl_seconds": s.result_ttl_seconds > 0,
        "persona_ttl_seconds": s.persona_ttl_seconds > 0,
        "max_personas": 1 <= s.max_personas <= 100_000,
        "session_ttl_seconds": s.session_ttl_seconds > 0,
        "port": 0 <= s.port <= 65535,
        "shutdown_grace_seconds": s.shutdown_grace_seconds >= 0,
        "max_queued_requests": s.max_queued_requests >= 0,
        "stage_timeout_seconds": s.stage_timeout_seconds > 0,
        "turn_timeout_seconds": s.turn_timeout_seconds > 0,
        "health_check_seconds": s.health_check_seconds > 0,
        "max_image_pixels": 1_000_000 <= s.max_image_pixels <= 1_000_000_000,
        "header_timeout_seconds": s.header_timeout_seconds > 0,
        "body_timeout_seconds": s.body_timeout_seconds > 0,
        "min_upload_bytes_per_second": s.min_upload_bytes_per_second >= 0,
        "keep_alive_seconds": s.keep_alive_seconds >= 1,
        "max_connections": s.max_connections >= 1,
        "max_header_bytes": 1024 <= s.max_header_bytes <= 1_048_576,
        "max_output_mb": s.max_output_mb > 0,
        "max_live_sessions": 0 <= s.max_live_sessions <= 1000,
        "live_end_silence_ms": 100 <= s.live_end_silence_ms <= 5000,
        "live_vad_threshold": 0.05 <= s.live_vad_threshold <= 0.95,
        "live_barge_in_threshold": s.live_vad_threshold <= s.live_barge_in_threshold <= 0.99,
        "live_barge_in_ms": 32 <= s.live_barge_in_ms <= 5000,
        "live_partial_seconds": s.live_partial_seconds >= 0,
        "live_max_utterance_seconds": 1 <= s.live_max_utterance_seconds <= s.max_audio_seconds,
        "live_idle_timeout_seconds": s.live_idle_timeout_seconds > 0,
        "live_idle_loop_seconds": 1 <= s.live_idle_loop_seconds <= 120,
        "live_buffer_seconds": 0.2 <= s.live_buffer_seconds <= 600,
        "live_video_kbps": 100 <= s.live_video_kbps <= 20_000,
    }
    _check_redis_url(s.redis_url)
    if s.replica_id and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", s.replica_id):
        raise ConfigError(
            f"AVATAR_REPLICA_ID={s.replica_id!r}: use up to 64 letters, digits, '.', '_' or '-' (it names a folder)."
        )
    for name, ok in positive.items():
        if not ok:
            raise ConfigError(f"AVATAR_{name.upper()}={getattr(s, name)!r} is out of range; see docs/configuration.md.")
    _validate_public_url(s.public_url)
    _validate_proxies(s.trusted_proxy_list)
    _validate_origins(s.cors_origin_list)
    _validate_live(s)


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
