"""Text normalisation for word error rates: both sides of a comparison are written the same way.

Lower-case, punctuation stripped, numbers spelled out (cardinals, ordinals, simple years and decimals),
a few abbreviations expanded. Whisper writes "Mr. Dashwood scored 10 in 1999" where a reference says
"mister dashwood scored ten in nineteen ninety nine"; after this both read the same, so the error rate
counts misheard words and not spelling conventions.
"""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"), (100, "hundred"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "vs": "versus", "etc": "et cetera"}
_NUMBER_WORDS = {*_ONES, *_TENS[2:], "hundred", "thousand", "million", "billion"}

_THOUSANDS_SEP = re.compile(r"(?<=\d),(?=\d{3}\b)")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_INTEGER = re.compile(r"\d+")
_CURRENCY = re.compile(r"[$£€](\d[\d.]*)")
_ABBREV = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\b\.?")


def cardinal(n: int) -> str:
    """English words for a non-negative integer, without "and": 2024 → "two thousand twenty four"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{cardinal(head)} {name}" + (f" {cardinal(rest)}" if rest else "")
    raise AssertionError("unreachable")  # pragma: no cover


def ordinal(n: int) -> str:
    """English ordinal words: 21 → "twenty first"."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year(n: int) -> str:
    """How a year is said: 1969 → "nineteen sixty nine", 1900 → "nineteen hundred", 1905 → "nineteen oh
    five", 2024 → "twenty twenty four"; 2000-2009 as cardinals ("two thousand five")."""
    if 2000 <= n <= 2009:
        return cardinal(n)
    head, tail = divmod(n, 100)
    if tail == 0:
        return f"{cardinal(head)} hundred"
    if tail < 10:
        return f"{cardinal(head)} oh {cardinal(tail)}"
    return f"{cardinal(head)} {cardinal(tail)}"


def _is_year(digits: str) -> bool:
    # A bare four-digit number in this range is read as a year far more often than as a quantity.
    return len(digits) == 4 and (1100 <= int(digits) <= 1999 or 2000 <= int(digits) <= 2099)


def _spell_integer(match: re.Match[str]) -> str:
    digits = match.group(0)
    if len(digits) > 1 and digits.startswith("0"):
        return " ".join(_ONES[int(d)] for d in digits)  # codes and times like 007: digit by digit
    return f" {year(int(digits)) if _is_year(digits) else cardinal(int(digits))} "


def _spell_money(match: re.Match[str]) -> str:
    amount = match.group(1).rstrip(".")
    whole, _, cents = amount.partition(".")
    spoken = f"{cardinal(int(whole))} dollars"  # never a year: "$1200" is twelve hundred... dollars
    return f" {spoken} {cardinal(int(cents))} cents " if cents and int(cents) else f" {spoken} "


def _spell_decimal(match: re.Match[str]) -> str:
    whole, frac = match.groups()
    return f" {cardinal(int(whole))} point {' '.join(_ONES[int(d)] for d in frac)} "


def normalize(text: str) -> str:
    """The words of ``text`` in canonical form, separated by single spaces."""
    text = text.lower().replace("’", "'").replace("‘", "'")
    text = _ABBREV.sub(lambda m: f" {_ABBREVIATIONS[m.group(1)]} ", text)
    text = _THOUSANDS_SEP.sub("", text)
    text = _CURRENCY.sub(_spell_money, text)
    text = text.replace("%", " percent ").replace("&", " and ")
    text = _ORDINAL.sub(lambda m: f" {ordinal(int(m.group(1)))} ", text)
    text = _DECIMAL.sub(_spell_decimal, text)
    text = _INTEGER.sub(_spell_integer, text)
    text = re.sub(r"[^a-z' ]+", " ", text)  # hyphens, slashes and every other mark separate words
    text = text.replace("'", "")
    words = text.split()
    return " ".join(_drop_number_and(words))


def _drop_number_and(words: list[str]) -> list[str]:
    """ "one hundred and five" → "one hundred five", so a spelled-out "and" inside a number is not an error."""
    kept = []
    for i, word in enumerate(words):
        inside_number = (
            word == "and"
            and 0 < i < len(words) - 1
            and words[i - 1] in ("hundred", "thousand", "million", "billion")
            and words[i + 1] in _NUMBER_WORDS
        )
        if not inside_number:
            kept.append(word)
    return kept
