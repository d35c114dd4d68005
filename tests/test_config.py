from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from avatar.config import DOCS, Settings, documented_table, load_settings, settings_table
from avatar.errors import ConfigError


def test_defaults_need_no_configuration() -> None:
    s = load_settings({})
    backends = (s.asr_backend, s.llm_backend, s.tts_backend, s.face_backend)
    assert backends == ("whisper", "auto", "hibari", "puppet")
    assert s.llm_model == "qwen2.5-coder-0.5b-instruct" and s.llm_threads == 1 and s.llm_context_tokens == 2048
    assert s.model_path(s.asr_model) == s.models_dir / "whisper-tiny.en"


def test_environment_is_parsed_and_typed() -> None:
    s = load_settings({"AVATAR_PORT": "9000", "AVATAR_ASR_VAD": "off", "AVATAR_MAX_UPLOAD_MB": "2.5"})
    assert s.port == 9000 and s.asr_vad is False and s.max_upload_mb == 2.5


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AVATAR_PORT": "eighty"}, "AVATAR_PORT"),
        ({"AVATAR_TTS_BACKEND": "espeak"}, "AVATAR_TTS_BACKEND"),
        ({"AVATAR_FPS": "0"}, "AVATAR_FPS"),
        ({"AVATAR_ASR_DEVICE": "tpu"}, "AVATAR_ASR_DEVICE"),
        ({"AVATAR_MAX_QUEUED_REQUESTS": "-1"}, "AVATAR_MAX_QUEUED_REQUESTS"),
        ({"AVATAR_ASR_THREADS": "-2"}, "AVATAR_ASR_THREADS"),
        ({"AVATAR_LLM_BACKEND": "ollama"}, "AVATAR_LLM_BACKEND"),
        ({"AVATAR_LLM_THREADS": "-1"}, "AVATAR_LLM_THREADS"),
        ({"AVATAR_LLM_ALONE_THREADS": "many"}, "AVATAR_LLM_ALONE_THREADS"),
        ({"AVATAR_LLM_CONTEXT_TOKENS": "100"}, "AVATAR_LLM_CONTEXT_TOKENS"),
        ({"AVATAR_LLM_SEED": "-5"}, "AVATAR_LLM_SEED"),
        ({"AVATAR_CONFIG": "/nonexistent/avatar.toml"}, "AVATAR_CONFIG"),
    ],
)
def test_bad_setting_names_itself(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_toml_file_and_environment_precedence(tmp_path: Path) -> None:
    path = tmp_path / "avatar.toml"
    path.write_text("[avatar]\nport = 7000\nfps = 30\n")
    s = load_settings({"AVATAR_CONFIG": str(path), "AVATAR_PORT": "7001"})
    assert s.fps == 30 and s.port == 7001
    path.write_text("[avatar]\nspeed_of_light = 3\n")
    with pytest.raises(ConfigError, match="Unknown setting 'speed_of_light'"):
        load_settings({"AVATAR_CONFIG": str(path)})


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({"AVATAR_PUBLIC_URL": "avatar.example.com"}, "AVATAR_PUBLIC_URL"),
        ({"AVATAR_PUBLIC_URL": "https://avatar.example.com/?x=1"}, "AVATAR_PUBLIC_URL"),
        ({"AVATAR_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"}, "AVATAR_TRUSTED_PROXIES"),
        ({"AVATAR_CORS_ORIGINS": "https://app.example.com/"}, "AVATAR_CORS_ORIGINS"),
        ({"AVATAR_MAX_IMAGE_PIXELS": "100"}, "AVATAR_MAX_IMAGE_PIXELS"),
        ({"AVATAR_MAX_CONNECTIONS": "0"}, "AVATAR_MAX_CONNECTIONS"),
        ({"AVATAR_HEADER_TIMEOUT_SECONDS": "0"}, "AVATAR_HEADER_TIMEOUT_SECONDS"),
        ({"AVATAR_MAX_OUTPUT_MB": "-1"}, "AVATAR_MAX_OUTPUT_MB"),
    ],
)
def test_hardening_settings_are_validated(environ: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        load_settings(environ)


def test_hardening_settings_parse() -> None:
    settings = load_settings(
        {
            "AVATAR_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1 ,",
            "AVATAR_CORS_ORIGINS": "https://a.example,http://localhost:3000",
            "AVATAR_PUBLIC_URL": "https://avatar.example.com/base",
        }
    )
    assert settings.trusted_proxy_list == ("10.0.0.0/8", "127.0.0.1")
    assert settings.cors_origin_list == ("https://a.example", "http://localhost:3000")
    assert load_settings({}).cors_origin_list == () and load_settings({}).max_image_pixels == 40_000_000


def test_a_setting_states_its_range_and_its_choices_once() -> None:
    # The message comes from the field itself: its range, or the Literal's names.
    with pytest.raises(ConfigError, match=r"AVATAR_LLM_MAX_SENTENCES=0 is out of range \(1-100\)"):
        load_settings({"AVATAR_LLM_MAX_SENTENCES": "0"})
    with pytest.raises(ConfigError, match="choose one of: puppet, ditto"):
        load_settings({"AVATAR_FACE_BACKEND": "sadtalker"})
    assert load_settings({"AVATAR_LLM_MAX_SENTENCES": "100"}).llm_max_sentences == 100  # the bound itself is in


def test_secrets_are_never_shown() -> None:
    key, password, credential = "k" * 32, "hunter2-redis", "turn-credential-9"
    s = load_settings(
        {
            "AVATAR_API_KEYS": key,
            "AVATAR_REDIS_URL": f"redis://user:{password}@localhost:6379/0",
            "AVATAR_LIVE_ICE_SERVERS": "turn:turn.example.org:3478",
            "AVATAR_LIVE_ICE_USERNAME": "someone",
            "AVATAR_LIVE_ICE_CREDENTIAL": credential,
        }
    )
    assert s.api_keys.get_secret_value() == key  # the value is there for the code that needs it ...
    shown = f"{s!r} {s} {s.api_keys} {s.redis_url!r}"
    assert all(secret not in shown for secret in (key, password, credential))  # ... and nowhere else
    with pytest.raises(ConfigError) as refused:
        load_settings({"AVATAR_REDIS_URL": f"http://user:{password}@localhost"})
    assert password not in str(refused.value)


def test_the_configuration_docs_are_the_settings_table() -> None:
    documented = documented_table(DOCS.read_text(encoding="utf-8"))
    assert documented == settings_table(), "docs/configuration.md is out of date: run `python -m avatar.config`"
    assert documented.count("\n") == len(fields(Settings)) + 2  # a row per setting, under the header
