from __future__ import annotations

from pathlib import Path

import pytest

from avatar.config import PROJECT_ROOT
from avatar.errors import ConfigError, UnknownPersonaError
from avatar.personas import PersonaStore

PERSONAS = PROJECT_ROOT / "assets" / "personas"


def test_default_persona_is_complete() -> None:
    eileen = PersonaStore(PERSONAS).get("eileen")
    assert eileen.image_path.is_file() and eileen.voice_sample is not None and eileen.voice_sample.is_file()
    assert "one or two short" in eileen.system_prompt and 'never as "Eileen"' in eileen.system_prompt
    assert eileen.voice_spec.key == "eileen"
    for name in ("persona.toml", "portrait.png", "voice.wav"):
        assert name in (PERSONAS / "eileen" / "SOURCES.md").read_text()


@pytest.mark.parametrize("name", ["nobody", "../eileen", "eileen/../../etc", "EILEEN", "", "a" * 500])
def test_unknown_or_unsafe_names_are_rejected(name: str) -> None:
    with pytest.raises(UnknownPersonaError, match="Available personas: eileen"):
        PersonaStore(PERSONAS).get(name)


def test_broken_persona_folder_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "persona.toml").write_text('image = "missing.png"\n')
    with pytest.raises(ConfigError, match=r"missing\.png"):
        PersonaStore(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        PersonaStore(tmp_path / "nope")
