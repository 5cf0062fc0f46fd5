"""Tokens and words of an explanation, and merging sub-word tokens into words (with character
offsets into the original text)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Token:
    """A (sub-word) token of the input with its character span and score.

    ``segment``: 0, or 1 for a token of the second text of a pair; ``start``/``end`` index into
    that segment's text.
    """

    text: str
    start: int
    end: int
    score: float
    word: int
    segment: int = 0


@dataclass
class Word:
    """A word: its tokens merged, scored by the explanation's ``word_aggregation`` rule
    (``segment`` and offsets as for :class:`Token`)."""

    text: str
    start: int
    end: int
    score: float
    tokens: list[int]
    segment: int = 0


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


def tokens_and_words(
    text: str,
    pieces: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    scores: Sequence[float],
    rule: str,
) -> tuple[list[Token], list[Word]]:
    """Scored tokens of ``text`` and the words they form (word score by ``rule``)."""
    spans = group_words(word_ids, offsets)
    word_of = {t: w for w, span in enumerate(spans) for t in span.tokens}
    tokens = [
        Token(text=piece, start=start, end=end, score=score, word=word_of[i])
        for i, (piece, (start, end), score) in enumerate(zip(pieces, offsets, scores))
    ]
    words = []
    for span in spans:
        start, end = _trimmed(text, span.start, span.end)
        words.append(
            Word(
                text=text[start:end],
                start=start,
                end=end,
                score=aggregate([scores[t] for t in span.tokens], rule),
                tokens=list(span.tokens),
            )
        )
    return tokens, words


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """A word's span without the whitespace a byte-level tokenizer counts into its first
    token (GPT-2's ``Ġword`` spans the space before it); a span of only whitespace stays."""
    inner = text[start:end]
    stripped = inner.strip()
    if not stripped:
        return start, end
    left = start + len(inner) - len(inner.lstrip())
    return left, left + len(stripped)


def segmented_tokens_and_words(
    texts: Sequence[str],
    segments: Sequence[int],
    pieces: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    scores: Sequence[float],
    rule: str,
) -> tuple[list[Token], list[Word]]:
    """:func:`tokens_and_words` for the tokens of several texts (a pair's two segments): the
    tokens of segment ``k`` (``segments[i] == k``, in order) belong to ``texts[k]``, and
    token and word indices run on across segments."""
    tokens: list[Token] = []
    words: list[Word] = []
    for k, text in enumerate(texts):
        mine = [i for i, segment in enumerate(segments) if segment == k]
        part_tokens, part_words = tokens_and_words(
            text,
            [pieces[i] for i in mine],
            [offsets[i] for i in mine],
            [word_ids[i] for i in mine],
            [scores[i] for i in mine],
            rule,
        )
        for token in part_tokens:
            token.word += len(words)
            token.segment = k
        for word in part_words:
            word.tokens = [t + len(tokens) for t in word.tokens]
            word.segment = k
        tokens += part_tokens
        words += part_words
    return tokens, words
