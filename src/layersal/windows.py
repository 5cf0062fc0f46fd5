"""Long documents: explain overlapping windows, then merge them into one explanation.

A text longer than the model's maximum is split into windows of ``window`` tokens that start
every ``stride`` tokens (so neighbouring windows share ``window - stride`` tokens). Every
window is explained for the same target class, the document's prediction; a token seen by
several windows gets the mean of their scores, and words are re-formed over the whole text.
The document's probabilities are the mean of the windows' probabilities.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch

from .errors import InputError
from .explanation import Explanation, LayerReport, Token
from .words import tokens_and_words


def window_overlap(
    tokenizer: Any, max_length: int, window: int | None, stride: int | None
) -> tuple[int, int, int]:
    """``(window, stride, overlap)`` in tokens, checked; ``overlap`` is what the tokenizer takes.

    ``window`` counts special tokens too (default: the model's maximum); ``stride`` counts
    content tokens between window starts (default: half a window's content).
    """
    size = max_length if window is None else window
    specials = tokenizer.num_special_tokens_to_add()
    if not specials < size <= max_length:
        raise InputError(
            f"window must be between {specials + 1} and {max_length} tokens, not {size}"
        )
    room = size - specials
    step = max(1, room // 2) if stride is None else stride
    if not 0 < step <= room:
        raise InputError(
            f"stride must be between 1 and {room} tokens for a window of {size}, not {step}"
        )
    return size, step, room - step


def window_count(tokenizer: Any, text: str, window: int, stride: int) -> int:
    """How many windows of ``window`` tokens, every ``stride`` content tokens, ``text`` takes."""
    n = len(
        tokenizer(text, add_special_tokens=False, verbose=False, split_special_tokens=True)[
            "input_ids"
        ]
    )
    room = window - tokenizer.num_special_tokens_to_add()
    return 1 if n <= room else math.ceil((n - room) / stride) + 1


def document_probabilities(window_probs: torch.Tensor) -> torch.Tensor:
    """A document's class probabilities: the mean of its windows' probabilities."""
    return window_probs.mean(0)


def merge_windows(
    text: str,
    tokenizer: Any,
    parts: list[Explanation],
    probabilities: dict[str, float],
    prediction: str,
    window: int,
    stride: int,
) -> Explanation:
    """One explanation of ``text`` from its windows' explanations (all for the same target)."""
    full = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        verbose=False,
        split_special_tokens=True,
    )
    offsets = [tuple(o) for o in full["offset_mapping"]]
    pieces = tokenizer.convert_ids_to_tokens(full["input_ids"])
    slot = {span: i for i, span in enumerate(offsets)}
    scores = _mean_over_windows(
        [(p.tokens, [t.score for t in p.tokens]) for p in parts], slot, len(offsets)
    )
    first = parts[0]
    tokens, words = tokens_and_words(
        text, pieces, offsets, full.word_ids(), scores, first.word_aggregation
    )
    layers_used = Counter(p.layer for p in parts)
    options = dict(first.options)
    options.update(
        window=window, stride=stride, windows=len(parts), window_layers=[p.layer for p in parts]
    )
    return Explanation(
        text=text,
        model=first.model,
        method=first.method,
        prediction=prediction,
        target=first.target,
        probabilities=probabilities,
        tokens=tokens,
        words=words,
        layer=layers_used.most_common(1)[0][0],
        decoder=first.decoder,
        word_aggregation=first.word_aggregation,
        truncated=False,
        options=options,
        layers=_merge_layers(parts, slot, len(offsets)),
        forward_passes=sum(p.forward_passes for p in parts) + len(parts),
        backward_passes=sum(p.backward_passes for p in parts),
    )


def _mean_over_windows(
    parts: list[tuple[list[Token], list[float]]], slot: dict[tuple[int, int], int], size: int
) -> list[float]:
    total = [0.0] * size
    count = [0] * size
    for tokens, values in parts:
        for token, value in zip(tokens, values):
            i = slot.get((token.start, token.end))
            if i is not None:
                total[i] += value
                count[i] += 1
    return [t / c if c else 0.0 for t, c in zip(total, count)]


def _merge_layers(
    parts: list[Explanation], slot: dict[tuple[int, int], int], size: int
) -> list[LayerReport]:
    """Per layer: scores averaged like the tokens', coherence weighted by window length,
    decoded tokens and ranks from the first window that holds each token."""
    merged = []
    for index, report in enumerate(parts[0].layers):
        reports = [p.layers[index] for p in parts]
        scores = _mean_over_windows(
            [(p.tokens, r.scores) for p, r in zip(parts, reports)], slot, size
        )
        weights = [len(p.tokens) for p in parts]
        coherence = None
        known = [r.coherence for r in reports if r.coherence is not None]
        if len(known) == len(reports):
            coherence = sum(c * w for c, w in zip(known, weights)) / max(1, sum(weights))
        own_rank: list[Any] = [None] * size
        top_tokens: list[Any] = [None] * size
        top_probs: list[Any] = [None] * size
        for part, r in zip(parts, reports):
            for t, token in enumerate(part.tokens):
                i = slot.get((token.start, token.end))
                if i is None or own_rank[i] is not None or top_tokens[i] is not None:
                    continue
                own_rank[i] = r.own_rank[t] if r.own_rank else None
                top_tokens[i] = r.top_tokens[t] if r.top_tokens else None
                top_probs[i] = r.top_probs[t] if r.top_probs else None
        has_gradient = any(r.has_position_gradient for r in reports)
        merged.append(
            LayerReport(
                layer=report.layer,
                coherence=coherence,
                has_position_gradient=has_gradient,
                scores=scores,
                own_rank=own_rank if reports[0].own_rank else None,
                top_tokens=top_tokens if reports[0].top_tokens else None,
                top_probs=top_probs if reports[0].top_probs else None,
                note=report.note,
            )
        )
    return merged
