"""What the visitor says about themself, kept as notes the persona can say back to them."""

from __future__ import annotations

import pytest

from avatar.visitor import MAX_NOTES, introduction, notes_in, remember


@pytest.mark.parametrize(
    ("said", "notes"),
    [
        (
            "Hello! My name is Tomasz and I'm a teacher from Kraków.",
            ["Your name is Tomasz.", "You are a teacher from Kraków."],
        ),
        ("Hi, I'm Anna. I work as a nurse in Leeds.", ["Your name is Anna.", "You work as a nurse in Leeds."]),
        ("My name is Kofi and I live in Accra.", ["Your name is Kofi.", "You live in Accra."]),
        ("I'm from Chicago, and my name is Lena.", ["Your name is Lena.", "You are from Chicago."]),
        ("my name is tomasz nowak, nice to meet you.", ["Your name is Tomasz."]),
        ("I have two kids and my daughter is three.", ["You have two kids and your daughter is three."]),
        ("I'm American.", []),  # a nationality after "I'm" is no name
        ("Hi, I'm fine.", []),
        ("I'm wondering about the Moon.", []),
        ("What is your name?", []),
        ("Am I a good pilot?", []),  # a question tells nothing about them
    ],
)
def test_notes(said: str, notes: list[str]) -> None:
    assert notes_in(said) == notes


def test_notes_are_kept_and_a_new_name_replaces_the_old() -> None:
    notes = remember([], "My name is Sam. I live in Oslo.")
    notes = remember(notes, "What did you eat in space?")
    assert notes == ["Your name is Sam.", "You live in Oslo."]
    notes = remember(notes, "Actually, call me Max.")
    assert notes == ["You live in Oslo.", "Your name is Max."]
    for k in range(MAX_NOTES + 3):
        notes = remember(notes, f"I am {20 + k} years old.")
    assert len(notes) == MAX_NOTES and notes[-1] == f"You are {20 + MAX_NOTES + 2} years old."


def test_an_introduction_and_nothing_else() -> None:
    assert introduction("Hello! My name is Tomasz and I'm a teacher from Kraków.") == "Tomasz"
    assert introduction("Hi, I'm Anna. I work as a nurse in Leeds.") == "Anna"
    assert introduction("Hi, I'm Anna. What is your name?") is None
    assert introduction("My name is Bob. Tell me about space.") is None
    assert introduction("I live in Oslo.") is None  # no name: the model answers
