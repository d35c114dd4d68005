"""The voice catalogue: what a request may name, and what it is told."""

from __future__ import annotations

import pytest

from avatar.errors import InvalidRequestError
from avatar.voices import EMBEDDED_VOICES, find_voice, language_note, voices_for


def test_the_embedded_engine_offers_a_male_and_female_voices_the_cloning_engine_none() -> None:
    voices = voices_for("hibari")
    assert voices == EMBEDDED_VOICES and voices[0].name == "heart"
    assert {v.gender for v in voices} == {"female", "male"}
    assert {v.engine for v in voices} == {"hibari", "kokoro"}
    assert voices_for("xtts") == ()


def test_an_unknown_voice_is_refused_naming_the_voices_there_are() -> None:
    with pytest.raises(InvalidRequestError, match="heart, jm_kumo, jf_gongitsune") as caught:
        find_voice("nobody", voices_for("hibari"))
    assert caught.value.status == 422
    with pytest.raises(InvalidRequestError, match="no named voices"):
        find_voice("heart", voices_for("xtts"))
    assert find_voice("jm_kumo", voices_for("hibari")).gender == "male"


def test_another_language_than_the_personas_is_said_not_refused() -> None:
    kumo = find_voice("jm_kumo", voices_for("hibari"))
    assert language_note(kumo, "en") is None and language_note(kumo, "en-GB") is None
    note = language_note(kumo, "fr")
    assert note is not None and "jm_kumo" in note and "fr" in note
