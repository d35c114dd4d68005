"""Personas: a reference photo, a voice and a system prompt.

The bundled personas are read once from ``assets/personas/<name>/``; personas people create from their
own photo live in a folder of their own (under the output folder, which replicas may share), each
expiring after a while and their number bounded, and are read from disk when asked for, so every
replica sees them. A persona folder holds ``persona.toml`` (display name, prompt, language, voice), the
photo it names and, optionally, a voice sample for engines that clone voices. Names come from users, so
they are checked against a strict pattern before they touch the file system.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from avatar.errors import ConfigError, UnknownPersonaError
from avatar.media import atomic_path
from avatar.types import VoiceSpec

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

UNNAMED_PROMPT = (
    "You are the person in this photo, talking out loud with a visitor. Speak as yourself, in the first "
    "person. Reply in one or two short, friendly spoken sentences. No lists, no emoji, no stage directions."
)
DEFAULT_PROMPT = (
    "You are {display_name}. You are talking out loud with a visitor. "
    "Reply in one or two short, friendly spoken sentences. No lists, no emoji, no stage directions."
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
    expires: float | None = None
    """For a created persona, when it is removed (seconds since the epoch); bundled ones stay."""

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
            "created": self.expires is not None,
            "expires": None if self.expires is None else round(self.expires),
        }


class PersonaStore:
    """The bundled personas in one folder, read once, and the created ones (when given), looked up by
    validated name."""

    def __init__(self, root: Path, created: CreatedPersonas | None = None) -> None:
        self.root = root
        self.created = created
        self._personas: dict[str, Persona] = {}
        if not root.is_dir():
            raise ConfigError(f"AVATAR_ASSETS_DIR: persona folder {root} does not exist.")
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if (folder / "persona.toml").is_file() and NAME_PATTERN.match(folder.name):
                self._personas[folder.name] = load_persona(folder)
        if not self._personas:
            raise ConfigError(f"No personas in {root}: each needs a folder with a persona.toml (see README).")

    def get(self, name: str) -> Persona:
        if NAME_PATTERN.match(name):
            if name in self._personas:
                return self._personas[name]
            found = self.created.get(name) if self.created is not None and name.startswith(CREATED_PREFIX) else None
            if found is not None:
                return found
        known = ", ".join(self._personas)
        raise UnknownPersonaError(
            f"Unknown persona {name[:64]!r}. Available personas: {known}"
            + (", or one created with POST /api/v1/personas (they expire)." if self.created is not None else ".")
        )

    def is_bundled(self, name: str) -> bool:
        return name in self._personas

    def __iter__(self) -> Iterator[Persona]:
        """The bundled personas (the ones every request may rely on)."""
        return iter(self._personas.values())

    def everyone(self) -> list[Persona]:
        """Bundled and created personas, for listings."""
        return [*self._personas.values(), *(self.created.all() if self.created is not None else [])]

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


CREATED_PREFIX = "p-"
CREATED_PATTERN = re.compile(r"^p-[0-9a-f]{16}$")
PORTRAIT = "portrait.jpg"
VOICE = "voice.wav"
MAX_PORTRAIT_SIDE = 2048  # kept photos are scaled down to this: the face is framed at 512 px anyway


class CreatedPersonas:
    """Personas made from uploaded photos: ``<root>/<id>/``, each removed ``ttl_seconds`` after it was
    last used, at most ``max_count`` of them (the least recently used goes first).

    The folder may be shared by replicas: every lookup reads the disk (a small TOML file, cached by its
    modification time), and a persona is complete once its ``persona.toml`` exists, which is written
    last, atomically.
    """

    def __init__(
        self, root: Path, *, ttl_seconds: float, max_count: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = root
        self.ttl = ttl_seconds
        self.max_count = max_count
        self.clock = clock
        self._cache: dict[str, tuple[int, Persona]] = {}

    def new_name(self) -> str:
        return CREATED_PREFIX + secrets.token_hex(8)

    def folder(self, name: str) -> Path:
        if not CREATED_PATTERN.match(name):
            raise UnknownPersonaError(f"No created persona {name[:64]!r}.")
        return self.root / name

    def get(self, name: str) -> Persona | None:
        """The created persona by that name, or None (unknown or expired)."""
        meta = self.folder(name) / "persona.toml"
        try:
            stamp = meta.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if self.clock() - stamp / 1e9 > self.ttl:
            self.remove(name)
            return None
        cached = self._cache.get(name)
        if cached is None or cached[0] != stamp:
            persona = load_persona(meta.parent)
            cached = (stamp, Persona(**{**persona.__dict__, "expires": stamp / 1e9 + self.ttl}))
            self._cache[name] = cached
        return cached[1]

    def touch(self, name: str) -> None:
        """Count a use: the time to live starts again."""
        meta = self.folder(name) / "persona.toml"
        try:
            os.utime(meta)
        except FileNotFoundError:
            pass

    def all(self) -> list[Persona]:
        found = [self.get(folder.name) for folder in self._folders()]
        return sorted((p for p in found if p is not None), key=lambda p: p.expires or 0, reverse=True)

    def begin(self, name: str) -> Path:
        """An empty folder for a persona being created (it is not a persona until ``finish``)."""
        folder = self.folder(name)
        folder.mkdir(parents=True)
        return folder

    def finish(self, name: str, meta: dict[str, str]) -> Persona:
        """Write the persona's ``persona.toml`` (making it visible), then evict past the count limit."""
        folder = self.folder(name)
        lines = [f"{key} = {_toml_string(value)}" for key, value in meta.items()]
        with atomic_path(folder / "persona.toml") as tmp:
            tmp.write_text(
                "# Created from an uploaded photo through POST /api/v1/personas.\n" + "\n".join(lines) + "\n"
            )
        self._evict(keep=name)
        persona = self.get(name)
        assert persona is not None
        return persona

    def remove(self, name: str) -> None:
        self._cache.pop(name, None)
        shutil.rmtree(self.folder(name), ignore_errors=True)

    def sweep(self) -> int:
        """Remove expired personas and half-made ones older than the time to live; the number removed."""
        removed = 0
        now = self.clock()
        for folder in self._folders(complete=False):
            meta = folder / "persona.toml"
            try:
                stamp = (meta if meta.exists() else folder).stat().st_mtime
            except FileNotFoundError:
                continue
            if now - stamp > self.ttl:
                self.remove(folder.name)
                removed += 1
        return removed

    def _evict(self, keep: str) -> None:
        folders = sorted(self._folders(), key=lambda f: (f / "persona.toml").stat().st_mtime)
        for folder in folders[: max(0, len(folders) - self.max_count)]:
            if folder.name != keep:
                self.remove(folder.name)

    def _folders(self, *, complete: bool = True) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [
            f
            for f in self.root.iterdir()
            if CREATED_PATTERN.match(f.name) and (not complete or (f / "persona.toml").is_file())
        ]


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escaping is a subset TOML reads the same way."""
    return json.dumps(value, ensure_ascii=False)
