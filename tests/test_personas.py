from __future__ import annotations

import os
from pathlib import Path

import pytest

from avatar.config import PROJECT_ROOT
from avatar.errors import ConfigError, UnknownPersonaError
from avatar.personas import CreatedPersonas, PersonaStore

PERSONAS = PROJECT_ROOT / "assets" / "personas"


def test_default_persona_is_complete() -> None:
    eileen = PersonaStore(PERSONAS).get("eileen")
    assert eileen.image_path.is_file() and eileen.voice_sample is not None and eileen.voice_sample.is_file()
    assert "one or two short" in eileen.system_prompt and 'never as "Eileen"' in eileen.system_prompt
    assert eileen.voice_spec.key == "eileen"
    for name in ("persona.toml", "portrait.png", "voice.wav", "knowledge.md"):
        assert name in (PERSONAS / "eileen" / "SOURCES.md").read_text()
    described = eileen.describe()["knowledge"]
    assert isinstance(described, dict)  # describe() is typed dict[str, object]
    assert "Elmira" in eileen.knowledge.text and described["chars"] == eileen.knowledge.chars


def test_knowledge_is_read_beside_the_persona_and_checked(tmp_path: Path) -> None:
    portrait = (PERSONAS / "eileen" / "portrait.png").read_bytes()
    folder = tmp_path / "ada"
    folder.mkdir()
    (folder / "portrait.png").write_bytes(portrait)
    (folder / "persona.toml").write_text('display_name = "Ada"\n')
    assert PersonaStore(tmp_path).get("ada").knowledge.chars == 0  # none: no file
    (folder / "knowledge.md").write_text("I keep bees in Lyon.\n", encoding="utf-8")
    ada = PersonaStore(tmp_path).get("ada")
    assert ada.knowledge.text == "I keep bees in Lyon." and ada.describe()["knowledge"] == {"chars": 20, "passages": 1}
    (folder / "knowledge.md").write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError, match="UTF-8"):
        PersonaStore(tmp_path)
    (folder / "knowledge.md").write_text("x" * 50_001)
    with pytest.raises(ConfigError, match="50,000"):
        PersonaStore(tmp_path)
    (folder / "persona.toml").write_text('knowledge = "facts.md"\n')
    with pytest.raises(ConfigError, match=r"facts\.md"):
        PersonaStore(tmp_path)


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


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _make(store: CreatedPersonas, portrait: Path, clock: Clock) -> str:
    name = store.new_name()
    folder = store.begin(name)
    (folder / "portrait.jpg").write_bytes(portrait.read_bytes())
    persona = store.finish(name, {"display_name": 'Sam "the" tester', "image": "portrait.jpg"})
    os.utime(folder / "persona.toml", (clock.now, clock.now))
    assert persona.display_name == 'Sam "the" tester' and persona.expires is not None
    clock.now += 1
    return name


def test_created_personas_expire_and_are_bounded(tmp_path: Path) -> None:
    clock = Clock()
    portrait = PERSONAS / "eileen" / "portrait.png"
    store = CreatedPersonas(tmp_path, ttl_seconds=100, max_count=2, clock=clock)
    personas = PersonaStore(PERSONAS, store)
    first, second = _make(store, portrait, clock), _make(store, portrait, clock)
    assert personas.get(first).name == first and not personas.is_bundled(first)
    assert [p.name for p in personas.everyone()] == ["eileen", second, first]
    third = _make(store, portrait, clock)  # past the limit: the least recently used goes
    assert {p.name for p in store.all()} == {second, third}
    with pytest.raises(UnknownPersonaError, match="POST /api/v1/personas"):
        personas.get(first)
    clock.now += 95  # the newest two are 96 and 97 s old
    assert store.sweep() == 0
    clock.now += 10
    assert store.sweep() == 2 and store.all() == []
    # A half-made folder (no persona.toml) is not a persona, and is swept once old.
    folder = store.begin(store.new_name())
    assert store.all() == [] and store.get(folder.name) is None
    os.utime(folder, (clock.now - 200, clock.now - 200))
    assert store.sweep() == 1 and not folder.exists()


@pytest.mark.parametrize("name", ["eileen", "p-../../etc", "P-ABC", "p-"])
def test_created_persona_names_are_checked(tmp_path: Path, name: str) -> None:
    store = CreatedPersonas(tmp_path, ttl_seconds=100, max_count=2)
    with pytest.raises(UnknownPersonaError):
        store.folder(name)
