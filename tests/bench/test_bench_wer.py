from __future__ import annotations

from avatar.bench.wer import WordErrors, align, corpus_wer, join_compounds, word_errors


def test_identical_texts_have_no_errors() -> None:
    assert word_errors("Go forward ten meters.", "go forward 10 meters").rate == 0.0


def test_each_kind_of_error_is_counted() -> None:
    counts = align("a b c d".split(), "a x c d e".split())
    assert (counts.substitutions, counts.deletions, counts.insertions) == (1, 0, 1)
    assert counts.rate == 0.5
    deleted = align("a b c".split(), "a c".split())
    assert (deleted.deletions, deleted.errors, deleted.reference_words) == (1, 1, 3)


def test_empty_sides() -> None:
    assert align([], []).rate == 0.0
    assert align("a b".split(), []).rate == 1.0
    assert align([], ["a"]).rate == 1.0  # insertions against nothing: as bad as can be


def test_a_real_misrecognition() -> None:
    # Whisper tiny.en on the committed LibriVox clip 0880.
    counts = word_errors("he was not an ill disposed young man", "He was not an old-sposed young man.")
    assert counts.errors == 2 and counts.reference_words == 8


def test_compound_spellings_are_not_errors() -> None:
    assert word_errors("rather cold hearted", "rather coldhearted").errors == 0
    assert word_errors("everyday life", "every day life").errors == 0
    assert join_compounds(["cold", "hearted", "man"], {"coldhearted"}) == ["coldhearted", "man"]


def test_corpus_rate_weights_by_length() -> None:
    total = corpus_wer([("one two three four", "one two three four"), ("five six", "five")])
    assert total == WordErrors(0, 1, 0, 6)
    assert abs(total.rate - 1 / 6) < 1e-9
