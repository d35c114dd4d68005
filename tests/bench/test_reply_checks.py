"""The reply-quality rules on hand-written good and bad replies."""

from __future__ import annotations

import pytest

from avatar.bench.reply_checks import (
    CHECKS,
    ReplyCase,
    check_reply,
    copies,
    first_person,
    gives_number,
    guess_language,
    markup,
    sentence_count_ok,
    third_person_self,
)

PROMPT = (
    "You are Eileen, a retired astronaut who flew the Space Shuttle, talking out loud with a visitor. Answer "
    "in one or two short spoken sentences."
)


def test_first_person_in_each_language() -> None:
    assert first_person("I loved it up there.", "en") and first_person("My favourite was the first.", "en")
    assert not first_person("Eileen ate pizza in space.", "en")
    assert first_person("J'adore les étoiles.", "fr") and first_person("Je vais bien.", "fr")
    assert first_person("Ich hatte keine Angst.", "de") and not first_person("Der Start war laut.", "de")
    assert first_person("Fue increíble, estaba muy feliz.", "es") and not first_person("Fue increíble.", "es")


def test_speaking_of_oneself_by_name_is_third_person() -> None:
    assert third_person_self("Eileen ate a pizza in space.", "Eileen")
    assert third_person_self("Eileen's favourite memory is the launch.", "Eileen")
    assert not third_person_self("I'm Eileen, and I flew the shuttle.", "Eileen")
    assert not third_person_self("My name is Eileen.", "Eileen")
    assert third_person_self("I'm Eileen. Eileen loved it.", "Eileen")
    assert not third_person_self("I ate tortillas.", "Eileen")


@pytest.mark.parametrize(
    ("raw", "found"),
    [
        ("- launch\n- orbit\n- landing", "list"),
        ("1. Launch\n2. Orbit", "list"),
        ("It was **amazing**.", "markdown"),
        ("Use `print()`.", "markdown"),
        ("I loved it 🚀!", "emoji"),
        ("*smiles* It was lovely.", "stage direction"),
        ("(laughs) Of course I did.", "stage direction"),
        ("[pause] Well, yes.", "stage direction"),
        ("It was lovely (and loud).", None),
        ("We orbited 16 times a day - every 90 minutes.", None),
    ],
)
def test_markup_a_voice_cannot_say(raw: str, found: str | None) -> None:
    assert markup(raw) == found


def test_arithmetic_in_digits_or_words() -> None:
    assert gives_number("7 times 8 equals 56.", 56) and gives_number("That's fifty-six.", 56)
    assert not gives_number("It is 54, or maybe 65.", 56) and not gives_number("It is 156.", 56)


def test_language_is_told_from_frequent_words() -> None:
    assert guess_language("It was the best day of my life.") == "en"
    assert guess_language("Bonjour ! Je vais très bien, merci.") == "fr"
    assert guess_language("Ich hatte keine Angst, es war sehr schön.") == "de"
    assert guess_language("Fue muy bonito, y no tuve miedo.") == "es"
    assert guess_language("56.") is None


def test_one_or_two_finished_sentences() -> None:
    assert sentence_count_ok("Yes. I loved it!") and sentence_count_ok("It was great.")
    assert not sentence_count_ok("One. Two. Three.") and not sentence_count_ok("It was the best")
    assert not sentence_count_ok("")


def test_a_copy_of_the_prompt_or_the_question() -> None:
    assert copies("You are Eileen, a retired astronaut who flew the Space Shuttle.", "Hi", PROMPT)
    assert copies("Answer in one or two short spoken sentences.", "Hi", PROMPT)
    assert copies("What is 7 times 8?", "What is 7 times 8?", PROMPT)
    assert not copies("I'm Eileen, a retired astronaut who flew the Space Shuttle.", "Who are you?", PROMPT)
    assert not copies("It was 56.", "What is 7 times 8?", PROMPT)


def test_check_reply_applies_each_rule_only_where_it_belongs() -> None:
    good = check_reply(
        ReplyCase("What did you eat in space?"),
        "I ate tortillas with peanut butter. They were lovely!",
        "I ate tortillas with peanut butter. They were lovely!",
        fallback=False,
        persona_name="Eileen",
        system_prompt=PROMPT,
    )
    assert set(good) == set(CHECKS)
    assert good["arithmetic"] is None and good["remembers"] is None
    assert all(value for value in good.values() if value is not None)
    bad = check_reply(
        ReplyCase("What is 7 times 8?", about_self=False, answer=56),
        "Eileen thinks it is 54. Eileen likes numbers. Really.",
        "**Eileen** thinks it is 54.",
        fallback=False,
        persona_name="Eileen",
        system_prompt=PROMPT,
    )
    failed = {name for name, value in bad.items() if value is False}
    assert failed == {"no_third_person", "no_markup", "one_or_two_sentences", "arithmetic"}
    assert bad["first_person"] is None
    fallback = check_reply(
        ReplyCase("Hattest du Angst?", language="de"),
        "Sorry, I lost my train of thought.",
        "",
        fallback=True,
        persona_name="Eileen",
        system_prompt=PROMPT,
    )
    assert fallback["answered"] is False and fallback["language"] is None and fallback["first_person"] is None
