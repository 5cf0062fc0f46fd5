"""Merging sub-word tokens into words, with character offsets into the original text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WORD_AGGREGATIONS = ("sum", "mean", "max")


@dataclass(frozen=True)
class Span:
    """A word: its character span and the indices of its tokens."""

    start: int
    end: int
    tokens: tuple[int, ...]


def group_words(word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]]) -> list[Span]:
    """Group consecutive tokens with the same word id (from the fast tokenizer) into words.

    Tokens without a word id form a word each.
    """
    spans: list[Span] = []
    current: int | None = None
    for index, (word, (start, end)) in enumerate(zip(word_ids, offsets)):
        if spans and word is not None and word == current:
            last = spans[-1]
            spans[-1] = Span(min(last.start, start), max(last.end, end), last.tokens + (index,))
        else:
            spans.append(Span(start, end, (index,)))
        current = word
    return spans


def aggregate(scores: Sequence[float], rule: str) -> float:
    """One word's score from its tokens' scores: ``sum``, ``mean`` or ``max`` (largest |score|,
    sign kept)."""
    if rule == "sum":
        return float(sum(scores))
    if rule == "mean":
        return float(sum(scores) / len(scores))
    if rule == "max":
        return float(max(scores, key=abs))
    raise ValueError(f"word aggregation must be one of {WORD_AGGREGATIONS}, not {rule!r}")
