"""Judging a pause: the words' ending, the turn-end model's P(complete), and what happens without it."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.server.live.finishing import (
    FinishOptions,
    TurnEndModel,
    heard_words,
    is_backchannel,
    is_greeting,
    is_vocal_sound,
    judge,
    unfinished_cue,
)
from avatar.types import Segment, Transcript, Word

OPTIONS = FinishOptions(finished_ms=200, unsure_ms=700, unfinished_ms=1500, fallback_ms=400)


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("So what was it like,", ","),
        ("I was wondering if you...", "..."),
        ("I want to fly one day because.", "because"),
        ("What did you eat and?", "and"),  # Whisper's question mark after a cut-off question
        ("Um, so, um", "um"),
        ("Tell me about the", "the"),
        ("Could you tell me more about", "about"),
        ("What did you", "did you"),
        ("Where can we", "can we"),
        ("What are you thinking of?", None),  # a question may end in a preposition
        ("Where are you from?", None),
        ("How are you", None),
        ("Yes, I can.", None),
        ("Thank you.", None),
        ("What is your name?", None),
        ("", None),
    ],
)
def test_the_words_ending_says_whether_the_phrase_goes_on(text: str, cue: str | None) -> None:
    assert unfinished_cue(text) == cue


def test_a_greeting_alone_is_told_from_a_question_that_begins_with_one() -> None:
    assert is_greeting("Hello!") and is_greeting("Hi there, Eileen.") and is_greeting("Good morning.")
    assert not is_greeting("Hello, what was your favourite part of flying?")
    assert not is_greeting("Hi there, how are")
    assert not is_greeting("What is your name?")


@pytest.mark.parametrize(
    ("probability", "text", "why", "wait_ms"),
    [
        (0.98, "What is your name?", "finished", 200),
        (0.98, "Tell me about the", "unfinished", 1500),  # the words win: a phrase end is not a sentence end
        (0.94, "And so, my fellow Americans,", "unfinished", 1500),
        (0.98, "Hello!", "unsure", 700),  # a question usually follows a greeting
        (0.80, "What did the cities look like?", "unsure", 700),
        (0.05, "So what was it like when you", "unfinished", 1500),
        (0.05, "What was it like?", "unfinished", 1500),  # the question mark is no sign of a whole question
        (0.98, None, "finished", 200),  # the words were not had in time: the model alone
        (0.01, "", "no_words", 200),  # a cough: nothing to wait for (and nothing is answered)
        (None, "Tell me about the", "no_model", 400),  # the model failed: the silence rule
    ],
)
def test_a_pause_is_judged_from_the_model_and_the_words(
    probability: float | None, text: str | None, why: str, wait_ms: int
) -> None:
    verdict = judge(probability, text, OPTIONS)
    assert (verdict.why, verdict.wait_ms) == (why, wait_ms)


def test_a_turn_end_model_that_fails_to_load_leaves_the_silence_rule_and_says_why() -> None:
    def broken() -> object:
        raise FileNotFoundError("models_cache/smart-turn/smart-turn-v3.2-cpu.onnx")

    model = TurnEndModel("smart-turn", broken)  # type: ignore[arg-type]
    assert model.status() == {"configured": "smart-turn", "using": "silence", "state": "loading"}
    model.load()
    assert not model.available and model.probability(np.zeros(16_000, np.float32)) is None
    status = model.status()
    assert status["using"] == "silence" and status["state"] == "failed"
    assert "smart-turn-v3.2-cpu.onnx" in str(status["error"])


def test_a_failing_call_answers_none_and_is_counted_while_good_calls_go_on() -> None:
    calls: list[int] = []

    def flaky(audio: np.ndarray) -> float:
        calls.append(audio.size)
        if len(calls) == 2:
            raise RuntimeError("onnxruntime: bad input")
        return 0.9

    model = TurnEndModel("smart-turn", lambda: flaky)
    model.load()
    audio = np.zeros(1600, np.float32)
    assert [model.probability(audio) for _ in range(3)] == [0.9, None, 0.9]
    status = model.status()
    assert status["using"] == "smart-turn" and status["failed_calls"] == 1 and "bad input" in str(status["error"])


def test_the_silence_rule_loads_nothing() -> None:
    def never() -> object:
        raise AssertionError("the silence rule needs no model")

    model = TurnEndModel("silence", never)  # type: ignore[arg-type]
    model.load()
    assert model.status() == {"configured": "silence", "using": "silence", "state": "off"}


@pytest.mark.parametrize(
    ("heard", "keeps_the_turn"),
    [
        ("Mm-hmm.", True),
        ("Uh huh.", True),
        ("Yeah, okay.", True),
        ("I see.", True),
        ("Ha ha.", True),  # a laugh
        ("[coughing]", True),  # Whisper's note of a noise
        ("(clears throat)", True),
        ("", True),
        (None, True),  # nothing recognisable
        ("Wait.", False),
        ("Yeah, but what about Mars?", False),
        ("Stop, please.", False),
        ("Okay okay okay okay", False),  # more than a listener's nod
    ],
)
def test_a_backchannel_or_a_noise_is_told_from_words_that_take_the_turn(
    heard: str | None, keeps_the_turn: bool
) -> None:
    assert is_backchannel(heard) is keeps_the_turn


@pytest.mark.parametrize(
    ("unsure_reading", "a_hum"),
    [
        ("M'hama.", True),  # how tiny.en spells a "mm-hm" it cannot make out
        ("Eha.", True),  # an "uh-huh"
        ("A hum.", True),  # an "ahem"
        ("Mm-hmm.", True),
        ("Wait.", False),
        ("Hey!", False),
        ("Tell me more.", False),
        ("Um, ah, um, ah.", False),  # more than a listener's hum
        ("", False),  # no words at all is a noise, told by ``is_backchannel``
    ],
)
def test_an_unsure_reading_spelt_like_a_hum_is_a_sound_not_words(unsure_reading: str, a_hum: bool) -> None:
    assert is_vocal_sound(unsure_reading) is a_hum


def _transcript(*words: tuple[str, float]) -> Transcript:
    timed = tuple(Word(text, i * 0.3, i * 0.3 + 0.3, p) for i, (text, p) in enumerate(words))
    text = " ".join(w for w, _ in words)
    return Transcript(text, "en", (Segment(text, 0.0, len(words) * 0.3, timed),))


def test_the_words_the_recogniser_guessed_at_the_end_are_left_out() -> None:
    """Whisper tiny at the first pause of what-did-you: "What did you mean?", its last word at 0.43."""
    guessed = _transcript(("What", 0.81), ("did", 0.98), ("you", 0.99), ("mean?", 0.43))
    assert heard_words(guessed) == "What did you"
    two = _transcript(("What", 0.9), ("did", 0.98), ("you", 0.99), ("eat", 0.45), ("there?", 0.2))
    assert heard_words(two) == "What did you"
    three = _transcript(("tell", 0.9), ("me", 0.5), ("about", 0.4), ("it?", 0.2))
    assert heard_words(three) == "tell me"  # at most two are left out
    said = _transcript(("What", 0.8), ("is", 0.99), ("your", 0.99), ("name?", 0.98))
    assert heard_words(said) == "What is your name?"
    unsure_inside = _transcript(("up", 0.98), ("in", 0.35), ("space.", 0.94))
    assert heard_words(unsure_inside) == "up in space."  # only from the end
    no_words = Transcript("What did you mean?", "en", (Segment("What did you mean?", 0.0, 1.0),))
    assert heard_words(no_words) == "What did you mean?"  # a recogniser without probabilities


def test_a_guessed_last_word_does_not_make_a_cut_off_question_look_finished() -> None:
    """In the bench the turn-end model gave 0.59 at that pause: without the guess left out, a 700 ms
    wait (shorter than the 1.0 s pause: a premature turn); with it, the words say unfinished."""
    text, sure = "What did you mean?", "What did you"
    assert judge(0.59, text, OPTIONS).why == "unsure"
    verdict = judge(0.59, text, OPTIONS, sure)
    assert (verdict.why, verdict.wait_ms, verdict.cue) == ("unfinished", 1500, "did you")
    # Leaving words out only ever adds a cue: a cue in the whole transcript stays.
    assert judge(0.9, "I want to fly one day because...", OPTIONS, "I want to fly one day").cue == "..."
    # A finished question whose words were all sure is judged as before.
    assert judge(0.99, "What is your name?", OPTIONS, "What is your name?").why == "finished"
