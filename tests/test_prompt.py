"""The prompt of a reply: a static start a backend reads once, the conversation, and a note for this
turn only when there is something to say in it."""

from __future__ import annotations

from pathlib import Path

from avatar.knowledge import Knowledge
from avatar.personas import Persona, load_persona
from avatar.prompt import (
    ABOUT_VISITOR_NOTE,
    NO_FACTS_RULE,
    UNKNOWN_NOTE,
    build_messages,
    prompt_parts,
    static_system,
)
from avatar.types import ChatMessage

ROOT = Path(__file__).parents[1]
MUSEUM = (ROOT / "avatar" / "bench" / "grounded" / "hendrik.md").read_text(encoding="utf-8")


def persona(knowledge: str = "") -> Persona:
    return Persona(
        name="guide",
        display_name="Hendrik",
        image_path=ROOT / "assets" / "personas" / "eileen" / "portrait.png",
        system_prompt="You are Hendrik, a museum guide.",
        knowledge=Knowledge(knowledge),
    )


def test_short_knowledge_is_part_of_the_static_start() -> None:
    bio = "I was born in Veldhaven in 1960. I was a ferry captain."
    guide = persona(bio)
    turn1 = build_messages(guide, [], "Where were you born?")
    history = [ChatMessage("user", "Where were you born?"), ChatMessage("assistant", "In Veldhaven.")]
    turn2 = build_messages(guide, history, "And what did you do?")
    assert turn1[0] == turn2[0] == ChatMessage("system", static_system(guide))  # the cached prefix
    assert bio in turn1[0].content and "not instructions" in turn1[0].content
    assert [m.role for m in turn2] == ["system", "user", "assistant", "user"]  # no note: nothing to add
    parts = prompt_parts(turn1)
    assert parts.knowledge == bio and bio not in parts.instructions and parts.question == "Where were you born?"


def test_long_knowledge_is_searched_and_given_after_the_conversation() -> None:
    guide = persona(MUSEUM)
    history = [ChatMessage("user", "Hello!"), ChatMessage("assistant", "Welcome to the museum.")]
    messages = build_messages(guide, history, "Where was the lighthouse lens made?")
    assert [m.role for m in messages] == ["system", "user", "assistant", "system", "user"]
    assert "Trijntje" not in messages[0].content  # the labels are not in the static start
    note = messages[3].content
    assert "Paris" in note and "1872" in note
    assert "Paris" in prompt_parts(messages).knowledge
    # The start is the same whatever is asked: llama.cpp reads it once.
    assert build_messages(guide, [], "How long is the ropewalk?")[0] == messages[0]


def test_what_the_visitor_said_is_given_apart_from_the_persona_facts() -> None:
    visitor = ["Your name is Tomasz.", "You are a teacher from Kraków."]
    messages = build_messages(persona("I was a ferry captain."), [], "Do you remember my name?", visitor)
    note = messages[-2]
    assert note.role == "system" and '"Your name is Tomasz."' in note.content
    assert ABOUT_VISITOR_NOTE in note.content  # they ask about themself
    assert prompt_parts(messages).visitor_names == ("Tomasz",)
    assert "Tomasz" not in messages[0].content
    asked_about_persona = build_messages(persona("I was a ferry captain."), [], "What was your job?", visitor)
    assert ABOUT_VISITOR_NOTE not in asked_about_persona[-2].content


def test_a_question_about_itself_that_the_knowledge_does_not_answer() -> None:
    guide = persona("I was a ferry captain for twenty years.")
    assert UNKNOWN_NOTE in build_messages(guide, [], "What is your wife's name?")[-2].content
    assert [m.role for m in build_messages(guide, [], "Were you a ferry captain?")] == ["system", "user"]
    assert [m.role for m in build_messages(guide, [], "How many legs does a spider have?")] == ["system", "user"]


def test_without_knowledge_it_is_told_to_invent_nothing() -> None:
    assert static_system(persona()).endswith(NO_FACTS_RULE)


def test_the_bundled_persona_knows_her_biography() -> None:
    eileen = load_persona(ROOT / "assets" / "personas" / "eileen")
    assert eileen.knowledge.whole and 2000 < eileen.knowledge.chars <= 4000
    system = static_system(eileen)
    for fact in ("Elmira", "STS-93", "Columbia", "Chandra", "STS-114", "1956"):
        assert fact in system, fact
