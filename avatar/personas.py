"""Personas: a reference photo, a voice and a system prompt, read from ``assets/personas/<name>/``.

A persona folder holds ``persona.toml`` (display name, prompt, language, voice), the photo it names and,
optionally, a voice sample for engines that clone voices. Names come from users, so they are checked
against a strict pattern before they touch the file system.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from avatar.errors import ConfigError, UnknownPersonaError
from avatar.types import VoiceSpec

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# The wording measured best on the embedded chat models (`avatar eval --only replies`): small models drift
# into the third person unless told plainly to say "I".
DEFAULT_PROMPT = (
    "You are {display_name}. You are talking out loud with a visitor. Always speak about yourself as "
    '"I", never as "{display_name}" or in the third person. Answer directly in one or two short, friendly '
    "spoken sentences, in the visitor's language. No lists, emoji, stage directions or code."
)


@dataclass(frozen=True)
class Persona:
    name: str
    display_name: str
    image_path: Path
    system_prompt: str
    language: str = "en"
    voice: str | None = None
    voice_sample: Path | None = None
    speed: float = 1.0
    fallback_reply: str = "Sorry, I lost my train of thought. Could you say that again?"

    @property
    def voice_spec(self) -> VoiceSpec:
        sample = str(self.voice_sample) if self.voice_sample else None
        return VoiceSpec(key=self.name, language=self.language, voice=self.voice, sample=sample, speed=self.speed)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "language": self.language,
            "has_voice_sample": self.voice_sample is not None,
        }


class PersonaStore:
    """The personas in one folder, read once, looked up by validated name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._personas: dict[str, Persona] = {}
        if not root.is_dir():
            raise ConfigError(f"AVATAR_ASSETS_DIR: persona folder {root} does not exist.")
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if (folder / "persona.toml").is_file() and NAME_PATTERN.match(folder.name):
                self._personas[folder.name] = load_persona(folder)
        if not self._personas:
            raise ConfigError(f"No personas in {root}: each needs a folder with a persona.toml (see README).")

    def get(self, name: str) -> Persona:
        if not NAME_PATTERN.match(name) or name not in self._personas:
            known = ", ".join(self._personas)
            raise UnknownPersonaError(f"Unknown persona {name[:64]!r}. Available personas: {known}.")
        return self._personas[name]

    def __iter__(self) -> Iterator[Persona]:
        return iter(self._personas.values())

    def names(self) -> list[str]:
        return list(self._personas)


def load_persona(folder: Path) -> Persona:
    """Read one persona folder; a mistake in it is a ConfigError naming the file."""
    meta_path = folder / "persona.toml"
    try:
        meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{meta_path}: cannot read persona: {exc}") from None
    display_name = str(meta.get("display_name", folder.name))
    image = folder / str(meta.get("image", "portrait.png"))
    if not image.is_file():
        raise ConfigError(f"{meta_path}: image {image.name!r} not found in {folder}.")
    sample_name = meta.get("voice_sample")
    sample = folder / str(sample_name) if sample_name else None
    if sample is not None and not sample.is_file():
        raise ConfigError(f"{meta_path}: voice_sample {sample.name!r} not found in {folder}.")
    prompt = str(meta.get("system_prompt", DEFAULT_PROMPT)).format(display_name=display_name)
    persona = Persona(
        name=folder.name,
        display_name=display_name,
        image_path=image,
        system_prompt=prompt.strip(),
        language=str(meta.get("language", "en")),
        voice=meta.get("voice"),
        voice_sample=sample,
        speed=float(meta.get("speed", 1.0)),
    )
    if "fallback_reply" in meta:
        persona = Persona(**{**persona.__dict__, "fallback_reply": str(meta["fallback_reply"])})
    return persona
