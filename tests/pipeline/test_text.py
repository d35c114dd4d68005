from pathlib import Path

import pytest
from scripted import ScriptedChat

from avatar.knowledge import Knowledge
from avatar.personas import Persona
from avatar.pipeline.pieces import PieceSplitter
from avatar.pipeline.text import (
    INVENTS,
    TAKES_VISITOR_FACTS,
    clean_reply,
    echoes,
    invented_specifics,
    off_the_rails,
    recites,
    speakable_arithmetic,
    split_sentences,
    unfinished,
    usable_piece,
)
from avatar.prompt import build_messages
from avatar.types import ChatMessage


def test_split_sentences() -> None:
    assert split_sentences("It was amazing. The view! Would you go? Yes") == [
        "It was amazing.",
        "The view!",
        "Would you go?",
        "Yes",
    ]
    assert split_sentences("It cost 3.5 million dollars.") == ["It cost 3.5 million dollars."]


def test_clean_reply_keeps_two_whole_sentences_and_no_markup() -> None:
    raw = "Eileen: **Flying** was amazing. I loved it 🚀! We orbited Earth. And then the"
    assert clean_reply(raw) == "Flying was amazing. I loved it!"
    assert clean_reply("Just a fragment without end") == "Just a fragment without end"
    assert clean_reply("   ") == ""


def test_arithmetic_signs_between_numbers_are_spoken() -> None:
    assert clean_reply("7 × 8 = 56.") == "7 times 8 equals 56."
    assert clean_reply("12+30=42 and 100 - 37 = 63.") == "12 plus 30 equals 42 and 100 minus 37 equals 63."
    assert speakable_arithmetic("I flew 1990-2000, 24/7.") == "I flew 1990-2000, 24/7."  # ranges stay


EILEEN_PROMPT = (
    "You are Eileen, a retired astronaut who flew the Space Shuttle. Answer the visitor's question in one "
    "or two short spoken sentences. Never use lists, emoji or stage directions."
)
ASKED = [ChatMessage("system", EILEEN_PROMPT), ChatMessage("user", "What is seven times eight?")]


@pytest.mark.parametrize(
    ("piece", "why"),
    [
        ("Sure<|im_end|> user: what next", "template markers"),
        ("Assistant: I can help with that.", "template markers"),
        ("As an AI language model, I have never been to space.", "out of character"),
        ("I am Qwen, created by Alibaba Cloud.", "out of character"),
        ("As an artificial intelligence, I don't have memories.", "out of character"),
        ("I'm sorry, but I can't assist with that.", "out of character"),
        ("I am an AI, so I don't have a favorite planet.", "out of character"),
        ("I’m just an AI and cannot fly.", "out of character"),
        ("I don't have feelings, but thank you.", "out of character"),
        ("print(7 * 8)", "code"),
        ("def multiply(a, b): return a * b", "code"),
        ("space space space space space.", "stuck on repeat"),
        ("Answer the visitor's question in one or two short spoken sentences.", "reads back the system prompt"),
        ("You are Eileen, a retired astronaut who flew the Space Shuttle.", "reads back the system prompt"),
        ("What is seven times eight?", "repeats the question"),
        ("What is seven times", "repeats the question"),  # a first piece cut before a phrase: its opening
    ],
)
def test_off_the_rails_pieces_are_named(piece: str, why: str) -> None:
    assert off_the_rails(piece, ASKED) == why
    assert not usable_piece(piece, ASKED)


@pytest.mark.parametrize(
    "piece",
    [
        "Seven times eight is fifty-six.",
        "I am a retired astronaut who flew the Space Shuttle.",  # its own description, in its own words
        "I loved every minute of it, and I would go again tomorrow!",
        "The print shop printed my mission patch.",
        "Bonjour ! Je vais très bien, merci.",
        "I'm not an AI, I'm Eileen.",
        "I am an aircraft lover.",
    ],
)
def test_ordinary_replies_are_usable(piece: str) -> None:
    assert off_the_rails(piece, ASKED) is None and usable_piece(piece, ASKED)
    assert not usable_piece("... !", ASKED)  # nothing to say


def test_echoes_counts_runs_of_consecutive_words() -> None:
    assert echoes("so I flew the Space Shuttle twice", EILEEN_PROMPT, 4)
    assert not echoes("the Shuttle I flew", EILEEN_PROMPT, 4)


# --------------------------------------------------------------------- knowledge and the visitor

EILEEN_ORDERS = (
    'You are Eileen, a retired astronaut. Always speak about yourself as "I", never as "Eileen" or "she". '
    "Answer directly in one or two short sentences."
)
BIOGRAPHY = (
    "I am Eileen Collins, a retired NASA astronaut and a retired colonel of the United States Air Force. "
    "I flew on four Space Shuttle missions: twice as the pilot and twice as the commander."
)
GROUNDED_PERSONA = Persona("eileen", "Eileen", Path("portrait.png"), EILEEN_ORDERS, knowledge=Knowledge(BIOGRAPHY))
GROUNDED = build_messages(
    GROUNDED_PERSONA,
    [],
    "And so, my fellow Americans",
    ["Your name is Tomasz."],
)


def test_instructions_read_back_in_other_words_are_caught() -> None:
    said = 'I am always speaking about myself as "I" and never as "Eileen" or "she".'
    assert not echoes(said, EILEEN_ORDERS)  # no six words of the orders in a row: the old rule let it through
    assert off_the_rails(said, GROUNDED) == "reads back the system prompt"
    assert off_the_rails("I always speak my mind and never lie.", GROUNDED) is None


def test_a_long_stretch_of_the_knowledge_is_recited_even_in_pieces() -> None:
    first, second = BIOGRAPHY.split(". ", 1)
    assert off_the_rails(first + ".", GROUNDED) is None  # one sentence of its facts answers a question
    assert off_the_rails(second, GROUNDED) is None
    assert off_the_rails(second, GROUNDED, spoken=first + ".") == "recites its knowledge"
    assert recites(second, BIOGRAPHY, first) and not recites("I loved it.", BIOGRAPHY, first)
    # The splitter passes what it already spoke: the second sentence of the recital is not spoken.
    splitter = PieceSplitter(2, GROUNDED)
    out = [piece for token in ScriptedChat(BIOGRAPHY + " Bye.").tokens for piece in splitter.feed(token)]
    out += splitter.finish()
    assert not any("four Space Shuttle missions" in piece for piece in out), out


def test_the_visitor_facts_are_never_taken_for_its_own() -> None:
    assert off_the_rails("Yes, my name is Tomasz.", GROUNDED) == TAKES_VISITOR_FACTS
    assert off_the_rails("I'm Tomasz, a teacher.", GROUNDED) == TAKES_VISITOR_FACTS
    assert off_the_rails("Yes, your name is Tomasz.", GROUNDED) is None
    lives = build_messages(GROUNDED_PERSONA, [], "Where do I live?", ["You live in Accra."])
    assert off_the_rails("I live in Accra.", lives) == TAKES_VISITOR_FACTS
    assert off_the_rails("I live in Houston.", lives) is None
    # The splitter says it back to the visitor, as the note has it.
    splitter = PieceSplitter(2, lives)
    out = [piece for token in ScriptedChat("I live in Accra. It is lovely.").tokens for piece in splitter.feed(token)]
    assert out + splitter.finish() == ["You live in Accra.", "It is lovely."]
    # Also when its opening alone would have been handed on first ("I work as a nurse | in Leeds").
    works = build_messages(GROUNDED_PERSONA, [], "What do I do?", ["You work as a nurse in Leeds."])
    splitter = PieceSplitter(2, works)
    out = [p for token in ScriptedChat("I work as a nurse in Leeds, you said.").tokens for p in splitter.feed(token)]
    assert out + splitter.finish() == ["You work as a nurse in Leeds."]


MARTA = Persona(
    "marta",
    "Marta",
    Path("portrait.png"),
    "You are Marta Lindqvist, a retired lighthouse keeper.",
    knowledge=Knowledge("I was born in 1952 on the island of Skarvø, where my father kept the lighthouse."),
)


@pytest.mark.parametrize(
    ("piece", "invented"),
    [
        ("My mother's name was Olav.", ["Olav"]),
        ("As a child I had a cat named Mister Whiskers.", ["Mister", "Whiskers"]),
        ("My husband is Lars Berg.", ["Lars", "Berg"]),
        ("I first went to sea in 1960.", ["1960"]),
        ("My dog is called Fyr, and he is 12.", ["12", "Fyr"]),
        # What the prompt holds, the visitor's name and the question's words are not made up.
        ("I was born in 1952 on Skarvø.", []),
        ("My father kept the lighthouse on Skarvø, Tomasz.", []),
        ("I never went to Bergen myself.", []),
        ("I looked down at the Earth and thought of Norway.", []),  # names of the world, not of its kin
        # Not a claim about its own life, or an opinion: free.
        ("The capital of France is Paris.", []),
        ("A spider has 8 legs.", []),
        ("My favourite planet is Saturn.", []),
        ("I think the first man on the Moon was Neil Armstrong.", []),
    ],
)
def test_numbers_and_names_of_its_own_life_the_prompt_lacks_are_made_up(piece: str, invented: list[str]) -> None:
    messages = build_messages(
        MARTA, [ChatMessage("user", "Did you know Bergen?")], "Tell me more.", ["Your name is Tomasz."]
    )
    assert invented_specifics(piece, messages) == invented
    assert (off_the_rails(piece, messages) == INVENTS) == bool(invented)


def test_a_made_up_answer_becomes_the_persona_saying_it_does_not_remember() -> None:
    messages = build_messages(MARTA, [], "What was your mother's name?", [])
    splitter = PieceSplitter(2, messages, MARTA.unknown_reply)
    script = "My mother's name was Olav, and she was a teacher in Oslo. She loved the sea."
    out = [piece for token in ScriptedChat(script).tokens for piece in splitter.feed(token)]
    out += splitter.finish()
    assert out == ["I'm afraid I don't remember that."]
    assert splitter.complete and splitter.shown == "I'm afraid I don't remember that."  # shown as said
    # From its knowledge, the answer is spoken as written.
    splitter = PieceSplitter(2, build_messages(MARTA, [], "Where were you born?", []), MARTA.unknown_reply)
    out = [piece for token in ScriptedChat("I was born on Skarvø in 1952.").tokens for piece in splitter.feed(token)]
    assert " ".join(out + splitter.finish()) == "I was born on Skarvø in 1952."


def test_a_sentence_broken_off_is_unfinished() -> None:
    for said in ("Um, so I was wondering", "What I really wanted to ask you is", "So the thing about the...", "And,"):
        assert unfinished(said), said
    for said in ("What is your name?", "Tell me about the Moon.", "And so, my fellow Americans", "Wow!", "I like it"):
        assert not unfinished(said), said


FAMILY = Persona(
    "marta",
    "Marta",
    Path("portrait.png"),
    "You are Marta Lindqvist, a retired lighthouse keeper.",
    knowledge=Knowledge(
        "I married Olav, a boat builder, in 1981. We have one daughter, Ingrid. On the island I kept a cat "
        "named Fyr. My favourite food is fish soup, the way my mother made it."
    ),
)


@pytest.mark.parametrize(
    ("question", "piece", "invented"),
    [
        # A name of its facts given for someone, or something, else is as made up as a new one.
        ("What was your mother's name?", "My mother's name was Olav.", ["Olav"]),
        ("What is your dog called?", "My dog is Fyr.", ["Fyr"]),
        ("What was your father's name?", "My father was called Olav Lindqvist.", ["Olav"]),
        # The facts tie the name to the relation, in the same words or in a word for it ("married").
        ("What is your husband's name?", "My husband's name is Olav.", []),
        ("What is your husband's name?", "My husband is Olav, a boat builder.", []),
        ("What was your cat called?", "My cat was called Fyr.", []),
        ("What was your cat called?", "I had a cat named Fyr.", []),
        ("What is your daughter's name?", "My daughter's name is Ingrid.", []),
        # Titles and authors of its own past that nothing in the prompt holds.
        (
            "What was your favourite book as a child?",
            'As a child I was fascinated by "The Great Gatsby" by F. Scott Fitzgerald.',
            ["Great", "Gatsby", "F", "Scott", "Fitzgerald"],
        ),
        ("Do you like books?", "I love 'The Hobbit' by Tolkien.", []),  # an opinion: free
    ],
)
def test_a_known_name_given_for_another_relation_or_a_title_of_its_past_is_made_up(
    question: str, piece: str, invented: list[str]
) -> None:
    messages = build_messages(FAMILY, [], question, [])
    assert [w.rstrip(".") for w in invented_specifics(piece, messages)] == invented
    assert (off_the_rails(piece, messages) == INVENTS) == bool(invented)


def test_numbers_worked_out_from_the_questions_numbers_are_not_made_up() -> None:
    sums = build_messages(FAMILY, [], "If I have 3 apples and buy 4 more, how many apples do I have?", [])
    assert invented_specifics("I have 7 apples now.", sums) == []
    one = build_messages(FAMILY, [], "When did you first go to sea?", [])
    assert invented_specifics("I first went to sea in 1960.", one) == ["1960"]
