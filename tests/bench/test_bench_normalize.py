from __future__ import annotations

import pytest

from avatar.bench.normalize import cardinal, normalize, ordinal, year


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (42, "forty two"),
        (100, "one hundred"),
        (105, "one hundred five"),
        (999, "nine hundred ninety nine"),
        (1000, "one thousand"),
        (2024, "two thousand twenty four"),
        (9999, "nine thousand nine hundred ninety nine"),
        (1_000_000, "one million"),
    ],
)
def test_cardinal(n: int, words: str) -> None:
    assert cardinal(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (1, "first"),
        (2, "second"),
        (3, "third"),
        (5, "fifth"),
        (8, "eighth"),
        (9, "ninth"),
        (12, "twelfth"),
        (20, "twentieth"),
        (21, "twenty first"),
        (23, "twenty third"),
        (100, "one hundredth"),
    ],
)
def test_ordinal(n: int, words: str) -> None:
    assert ordinal(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (1969, "nineteen sixty nine"),
        (1900, "nineteen hundred"),
        (1905, "nineteen oh five"),
        (2005, "two thousand five"),
        (2024, "twenty twenty four"),
    ],
)
def test_year(n: int, words: str) -> None:
    assert year(n) == words


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("Go forward 10 meters.", "go forward ten meters"),
        ("And Mr. Dashwood, Dr. Smith!", "and mister dashwood doctor smith"),
        ("The launch was delayed until the 23rd of July.", "the launch was delayed until the twenty third of july"),
        ("I first flew in space in 1995.", "i first flew in space in nineteen ninety five"),
        (
            "It costs $1,200 or $3.50 and 20% more",
            "it costs one thousand two hundred dollars or three dollars fifty cents and twenty percent more",
        ),
        ("Pi is 3.14", "pi is three point one four"),
        ("Agent 007", "agent zero zero seven"),
        ("Cold-hearted, don’t  you think?", "cold hearted dont you think"),
        ("one hundred and five", "one hundred five"),
        ("rock and roll", "rock and roll"),
        ("", ""),
    ],
)
def test_normalize(text: str, normal: str) -> None:
    assert normalize(text) == normal


def test_words_and_digits_normalise_alike() -> None:
    assert normalize("The 2nd of 12 launches in 1999") == normalize(
        "The second of twelve launches in nineteen ninety-nine"
    )
