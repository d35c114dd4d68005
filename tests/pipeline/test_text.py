import pytest

from avatar.pipeline.text import clean_reply, echoes, off_the_rails, speakable_arithmetic, split_sentences, usable_piece
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
