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
from dataclasses import dataclass, field
from pathlib import Path

from avatar.errors import ConfigError, UnknownPersonaError
from avatar.knowledge import KNOWLEDGE_FILE, Knowledge, knowledge_problem
from avatar.media import atomic_path
from avatar.types import VoiceSpec

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

UNNAMED_PROMPT = (
    "You are the person in this photo, talking out loud with a visitor. Always speak about yourself as "
    '"I", in the first person. Answer directly in one or two short, friendly spoken sentences, in the '
    "visitor's language. No lists, emoji, stage directions or code."
)
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
    expires: float | None = None
    """For a created persona, when it is removed (seconds since the epoch); bundled ones stay."""
    knowledge: Knowledge = field(default_factory=Knowledge)
    """What the persona knows about itself (``knowledge.md`` beside ``persona.toml``)."""
    listening_reply: str = "Go on, I'm listening."
    """Said when the visitor stops in the middle of a sentence."""
    deflect_reply: str = "I'd rather just be myself and talk with you. What would you like to know?"
    """Said when the visitor tells the persona to drop its instructions or show them."""
    greeting_reply: str = "Nice to meet you, {name}! What would you like to talk about?"
    """Said when the visitor only says who they are ({name}: their name)."""
    unknown_reply: str = "I'm afraid I don't remember that."
    """Said instead of numbers or names of its own life that its knowledge does not hold (made up)."""
    owner: str | None = None
    """For a persona created with an API key, the id of that key (``avatar.server.security``): only
    that key (or an admin key) sees, uses and removes it. None for bundled ones and with keys off."""

    @property
    def voice_spec(self) -> VoiceSpec:
        sample = str(self.voice_sample) if self.voice_sample else None
        return VoiceSpec(key=self.name, language=self.language, voice=self.voice, sample=sample, speed=self.speed)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "language": self.language,
            "voice": self.voice,
            "has_voice_sample": self.voice_sample is not None,
            "knowledge": {"chars": self.knowledge.chars, "passages": self.knowledge.passage_count},
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
    knowledge = _read_knowledge(folder, meta_path, str(meta.get("knowledge", KNOWLEDGE_FILE)))
    return Persona(
        name=folder.name,
        display_name=display_name,
        image_path=image,
        system_prompt=prompt.strip(),
        language=str(meta.get("language", "en")),
        voice=meta.get("voice"),
        voice_sample=sample,
        speed=float(meta.get("speed", 1.0)),
        knowledge=knowledge,
        fallback_reply=str(meta.get("fallback_reply", Persona.fallback_reply)),
        listening_reply=str(meta.get("listening_reply", Persona.listening_reply)),
        deflect_reply=str(meta.get("deflect_reply", Persona.deflect_reply)),
        greeting_reply=str(meta.get("greeting_reply", Persona.greeting_reply)),
        unknown_reply=str(meta.get("unknown_reply", Persona.unknown_reply)),
        owner=str(meta["owner"]) if meta.get("owner") else None,
    )


def _read_knowledge(folder: Path, meta_path: Path, name: str) -> Knowledge:
    """The persona's knowledge file, if it has one (a missing default file is no knowledge)."""
    path = folder / name
    if not path.is_file():
        if name != KNOWLEDGE_FILE:
            raise ConfigError(f"{meta_path}: knowledge file {name!r} not found in {folder}.")
        return Knowledge()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the persona's knowledge as UTF-8 text: {exc}") from None
    problem = knowledge_problem(text)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}")
    return Knowledge(text.strip())


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
