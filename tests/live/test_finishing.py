"""Judging a pause: the words' ending, the turn-end model's P(complete), and what happens without it."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.server.live.finishing import (
    FinishOptions,
    TurnEndModel,
    is_backchannel,
    is_greeting,
    judge,
    unfinished_cue,
)

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
