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

from .encoding import token_pieces
from .errors import InputError
from .explanation import Explanation, LayerReport
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
    return window_rows(tokenizer, text, window, stride)[0]


def window_rows(tokenizer: Any, text: str, window: int, stride: int) -> tuple[int, int]:
    """``(windows, tokens)``: the rows ``text`` takes as windows of ``window`` tokens every
    ``stride`` content tokens, and the tokens in each (specials included; its first and only
    row when it fits one window)."""
    n = len(
        tokenizer(text, add_special_tokens=False, verbose=False, split_special_tokens=True)[
            "input_ids"
        ]
    )
    specials = tokenizer.num_special_tokens_to_add()
    room = window - specials
    windows = 1 if n <= room else math.ceil((n - room) / stride) + 1
    return windows, min(n + specials, window)


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
    merge = WindowMerge(text, tokenizer)
    for part in parts:
        merge.add(part)
    return merge.result(probabilities, prediction, window, stride)


class WindowMerge:
    """Windows of one text folded in one at a time, so that a long document's memory holds
    sums over its tokens, not every window's explanation.

    Token scores are averaged over the windows that hold each token; per layer, scores the
    same way, coherence weighted by window length, decoded tokens and ranks taken from the
    first window that holds each token.
    """

    def __init__(self, text: str, tokenizer: Any) -> None:
        full = tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            verbose=False,
            split_special_tokens=True,
        )
        self.text = text
        self.offsets = [tuple(o) for o in full["offset_mapping"]]
        self.pieces = token_pieces(tokenizer, full["input_ids"])
        self.word_ids = full.word_ids()
        self.slot = {span: i for i, span in enumerate(self.offsets)}
        size = len(self.offsets)
        self.total = [0.0] * size
        self.count = [0] * size
        self.first: Explanation | None = None
        self.layers_used: Counter[int | None] = Counter()
        self.window_layers: list[int | None] = []
        self.passes = [0, 0]
        self.reports: list[dict[str, Any]] = []

    def add(self, part: Explanation) -> None:
        """Fold in the explanation of the next window."""
        if self.first is None:
            self.first = part
            self.reports = [self._empty(r) for r in part.layers]
        slots = [self.slot.get((t.start, t.end)) for t in part.tokens]
        _accumulate(self.total, self.count, slots, [t.score for t in part.tokens])
        self.layers_used[part.layer] += 1
        self.window_layers.append(part.layer)
        self.passes[0] += part.forward_passes + 1
        self.passes[1] += part.backward_passes
        for merged, report in zip(self.reports, part.layers):
            _accumulate(merged["total"], merged["count"], slots, report.scores)
            merged["weight"] += len(part.tokens)
            if report.coherence is None:
                merged["coherence"] = None
            elif merged["coherence"] is not None:
                merged["coherence"] += report.coherence * len(part.tokens)
            merged["gradient"] = merged["gradient"] or report.has_position_gradient
            for name in ("own_rank", "top_tokens", "top_probs"):
                values, mine = merged[name], getattr(report, name)
                if values is None or not mine:
                    continue
                for t, i in enumerate(slots):
                    if i is not None and values[i] is None:
                        values[i] = mine[t]

    def result(
        self,
        probabilities: dict[str, float],
        prediction: str,
        window: int,
        stride: int,
        *,
        task: str = "single_label",
        score: float | None = None,
        entity: dict[str, Any] | None = None,
    ) -> Explanation:
        """The merged explanation of the whole text (what the task shows of it: ``task``,
        ``probabilities``, ``prediction`` and a regression head's ``score``)."""
        first = self.first
        if first is None:
            raise ValueError("no window was added")
        scores = [t / c if c else 0.0 for t, c in zip(self.total, self.count)]
        tokens, words = tokens_and_words(
            self.text, self.pieces, self.offsets, self.word_ids, scores, first.word_aggregation
        )
        options = dict(first.options)
        options.update(
            window=window,
            stride=stride,
            windows=len(self.window_layers),
            window_layers=self.window_layers,
        )
        return Explanation(
            text=self.text,
            model=first.model,
            method=first.method,
            prediction=prediction,
            target=first.target,
            probabilities=probabilities,
            tokens=tokens,
            words=words,
            layer=self.layers_used.most_common(1)[0][0],
            decoder=first.decoder,
            word_aggregation=first.word_aggregation,
            truncated=False,
            options=options,
            layers=[self._report(m) for m in self.reports],
            forward_passes=self.passes[0],
            backward_passes=self.passes[1],
            task=task,
            score=score,
            entity=entity,
            focus=first.focus,
        )

    def _empty(self, report: LayerReport) -> dict[str, Any]:
        size = len(self.offsets)
        return {
            "report": report,
            "total": [0.0] * size,
            "count": [0] * size,
            "weight": 0,
            "coherence": 0.0,
            "gradient": False,
            "own_rank": [None] * size if report.own_rank else None,
            "top_tokens": [None] * size if report.top_tokens else None,
            "top_probs": [None] * size if report.top_probs else None,
        }

    @staticmethod
    def _report(merged: dict[str, Any]) -> LayerReport:
        report: LayerReport = merged["report"]
        coherence = merged["coherence"]
        return LayerReport(
            layer=report.layer,
            coherence=None if coherence is None else coherence / max(1, merged["weight"]),
            has_position_gradient=merged["gradient"],
            scores=[t / c if c else 0.0 for t, c in zip(merged["total"], merged["count"])],
            own_rank=merged["own_rank"],
            top_tokens=merged["top_tokens"],
            top_probs=merged["top_probs"],
            note=report.note,
        )


def _accumulate(
    total: list[float], count: list[int], slots: list[int | None], values: list[float]
) -> None:
    for i, value in zip(slots, values):
        if i is not None:
            total[i] += value
            count[i] += 1
