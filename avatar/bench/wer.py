"""Word error rate: the fewest word substitutions, deletions and insertions that turn the reference
into the hypothesis, over the number of reference words. Both texts are normalised first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from avatar.bench.normalize import normalize


@dataclass(frozen=True)
class WordErrors:
    """The alignment counts of one or more reference/hypothesis pairs."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors per reference word (0.0 for an empty reference with an empty hypothesis)."""
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.reference_words

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )


def align(reference: list[str], hypothesis: list[str]) -> WordErrors:
    """Levenshtein alignment of two word lists, counted by kind of error."""
    n, m = len(reference), len(hypothesis)
    # cost[i][j]: (total, subs, dels, ins) for reference[:i] against hypothesis[:j]; ties prefer
    # substitutions, which is how WER tools conventionally count a swapped word.
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        row = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            if reference[i - 1] == hypothesis[j - 1]:
                row.append(prev[j - 1])
                continue
            t, s, d, k = prev[j - 1]
            best = (t + 1, s + 1, d, k)
            t, s, d, k = prev[j]
            if t + 1 < best[0]:
                best = (t + 1, s, d + 1, k)
            t, s, d, k = row[j - 1]
            if t + 1 < best[0]:
                best = (t + 1, s, d, k + 1)
            row.append(best)
        prev = row
    _, subs, dels, ins = prev[m]
    return WordErrors(subs, dels, ins, n)


def join_compounds(words: list[str], vocabulary: set[str]) -> list[str]:
    """Adjacent words whose concatenation is a single word of ``vocabulary`` joined into it.

    "cold hearted" and "coldhearted" (or "every day" and "everyday") are one spelling choice, not two
    recognition errors; joining towards the other side's spelling makes both read the same.
    """
    out: list[str] = []
    i = 0
    while i < len(words):
        if i + 1 < len(words) and words[i] + words[i + 1] in vocabulary:
            out.append(words[i] + words[i + 1])
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Counts for one pair of texts, after normalising both and reconciling compound spellings."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    ref_count = len(ref)
    ref, hyp = join_compounds(ref, set(hyp)), join_compounds(hyp, set(ref))
    counts = align(ref, hyp)
    # The rate stays per word the reference was written with.
    return WordErrors(counts.substitutions, counts.deletions, counts.insertions, ref_count)


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> WordErrors:
    """Counts summed over (reference, hypothesis) pairs: the rate weights each clip by its length."""
    total = WordErrors()
    for reference, hypothesis in pairs:
        total = total + word_errors(reference, hypothesis)
    return total
