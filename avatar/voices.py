"""The embedded voices a persona can speak with, and the checks on a voice asked for by name.

Two engines speak them: hibari (its bundled Kokoro-distilled voice, ``heart``) and the full Kokoro-82M
(``avatar.backends.kokoro_tts``, style voices of Japanese speakers reading hibari's English phonemes).
Which of Kokoro's voices are offered was measured (docs/models.md, "Voices"): the ASR round trip of
``make eval`` (word error rate) and the median pitch. A voice-cloning engine (XTTS) has no named
voices: it speaks in each persona's cloned sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from avatar.errors import InvalidRequestError

DEFAULT_VOICE = "heart"


@dataclass(frozen=True)
class Voice:
    name: str
    engine: str  # "hibari" or "kokoro"
    gender: str  # "female" or "male"
    language: str  # what it speaks here (the phonemizer's language), as a persona's ``language``
    accent: str
    description: str

    def describe(self) -> dict[str, str]:
        return asdict(self)


EMBEDDED_VOICES: tuple[Voice, ...] = (
    Voice("heart", "hibari", "female", "en", "American", "hibari's bundled voice (Kokoro-distilled): quick and clear"),
    Voice("jm_kumo", "kokoro", "male", "en", "Japanese", "Kokoro-82M's male voice, a low, calm speaker"),
    Voice("jf_gongitsune", "kokoro", "female", "en", "Japanese", "Kokoro-82M, a brighter female voice"),
)
KOKORO_VOICES: tuple[str, ...] = tuple(v.name for v in EMBEDDED_VOICES if v.engine == "kokoro")


def voices_for(tts_backend: str) -> tuple[Voice, ...]:
    """The named voices the configured engine speaks (none for a voice-cloning one)."""
    return EMBEDDED_VOICES if tts_backend == "hibari" else ()


def find_voice(name: str, voices: tuple[Voice, ...]) -> Voice:
    """The voice called ``name``; InvalidRequestError (422) naming the voices there are otherwise."""
    for voice in voices:
        if voice.name == name:
            return voice
    if not voices:
        raise InvalidRequestError(
            f"Unknown voice {name[:40]!r}: this server's speech engine clones each persona's voice sample and "
            "has no named voices; leave 'voice' out."
        )
    raise InvalidRequestError(
        f"Unknown voice {name[:40]!r}. The voices are: {', '.join(v.name for v in voices)} (GET /api/v1/voices)."
    )


def language_note(voice: Voice, language: str) -> str | None:
    """What to tell the caller when the voice speaks another language than the persona's (accepted)."""
    if voice.language.split("-")[0].lower() == language.split("-")[0].lower():
        return None
    return (
        f"The voice {voice.name!r} speaks {voice.language}, but the persona's language is {language}: its "
        f"replies are read with {voice.language} pronunciation."
    )
