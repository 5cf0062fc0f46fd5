"""The user-facing entry point: ``explain(texts, model=..., method="dls", ...)``."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, overload

import torch

from .encoding import Encoded, encode, model_input_names, select_rows, token_pieces
from .errors import InputError, TruncationWarning
from .explanation import Explanation
from .inputs import TextItem, TextPair, check_texts, is_pair, item_length
from .models import DEFAULT_MODEL, LoadedModel, load
from .passes import forward
from .saliency import (
    Attribution,
    check_method,
    methods,
    prepare_options,
    renamed_options,
    run_method,
)
from .targets import Target, target_indices
from .windows import WindowMerge, document_probabilities, window_count, window_overlap
from .words import WORD_AGGREGATIONS, segmented_tokens_and_words


@overload
def explain(texts: str | TextPair, model: Any = ..., **kwargs: Any) -> Explanation: ...
@overload
def explain(texts: Sequence[TextItem], model: Any = ..., **kwargs: Any) -> list[Explanation]: ...


def explain(
    texts: TextItem | Sequence[TextItem],
    model: Any = None,
    *,
    method: str = "dls",
    target: Target | Sequence[Target] = None,
    word_aggregation: str = "sum",
    batch_size: int = 16,
    lm_head: str | None = None,
    progress: bool | ProgressFn = False,
    long_texts: str = "windows",
    window: int | None = None,
    stride: int | None = None,
    options: Mapping[str, Any] | None = None,
    **method_options: Any,
) -> Explanation | list[Explanation]:
    """Explain why ``model`` classifies each text as it does.

    ``texts``: one string (returns one :class:`Explanation`) or a sequence (returns a list).
    A pair classifier (natural-language inference, a cross-encoder) reads pairs of texts: one
    pair is a tuple of two strings, ``(premise, hypothesis)``, and a list of such tuples gives
    a list of explanations (a list of two strings is two texts, not a pair). Pairs are
    truncated (the longer text first) rather than split into windows.
    ``model``: a :class:`LoadedModel` from :func:`layersal.load` (load once, reuse), a model
    name or path, a ``*ForSequenceClassification`` model object or a text-classification
    pipeline (wrapped for this call, see :func:`layersal.models.from_objects`), or ``None``
    for the bundled default.
    ``method``: one of :func:`layersal.methods`; ``options`` is a dict of the method's own
    options (:func:`layersal.method_schema` lists them; for ``dls``: ``layer``, ``rule``,
    ``saliency``, ``relu``, ``decode``, ``tau``, ``weights``, ``rho``, ``top_k``,
    ``layer_report``, see :class:`layersal.DLSOptions`), e.g.
    ``explain(text, lm, method="occlusion", options={"span": 5})``. Method options may also be
    given as keywords (``explain(text, lm, layer=1)``); no method option is named like one of
    this function's parameters, so the two never mix. The default,
    ``layer="auto"``, uses the rule set, layer and decoding that measured most faithful for
    this model (shipped in the bundled models' cards; calibrated once on the first texts and
    cached for other models) at the cost of one forward and one backward pass.
    ``target``: class to explain (index or label name, one for all or one per text);
    ``None`` explains the predicted class. ``word_aggregation`` (``sum``/``mean``/``max``)
    merges sub-word scores into word scores. Texts are batched ``batch_size`` at a time,
    sorted by length to cut padding; results come back in input order.
    ``long_texts``: ``"windows"`` explains a text longer than the model's maximum as
    overlapping windows of ``window`` tokens every ``stride`` tokens, merged into one
    explanation (see :mod:`layersal.windows`); ``"truncate"`` keeps its first window and warns.
    ``progress``: ``True`` draws a bar on the terminal; a function is called as
    ``progress(done, total)`` in model rows (a text, or one window of a long one) as they are
    explained, so a single long document reports its progress too.
    """
    single = isinstance(texts, str) or _is_one_pair(texts)
    items = check_texts([texts] if single else list(texts))
    options = _merge_options(options, method_options)
    check_method(method, options)
    _warn_on_old_names(method, {"window": window, "stride": stride})
    if word_aggregation not in WORD_AGGREGATIONS:
        raise InputError(
            f"word aggregation must be one of {', '.join(WORD_AGGREGATIONS)}, "
            f"not {word_aggregation!r}"
        )
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    if long_texts not in ("windows", "truncate"):
        raise InputError(f"long_texts must be 'windows' or 'truncate', not {long_texts!r}")
    lm = (
        model
        if isinstance(model, LoadedModel)
        else load(DEFAULT_MODEL if model is None else model, lm_head)
    )
    lm.check_items(items)
    with lm.borrowed():  # eval mode for the passes; a model object is left as it was
        prepared = prepare_options(method, lambda: lm, lambda: items, options, batch_size)
        options = prepared.options
        targets = target_indices(target, len(items), lm.labels)
        size, step, overlap = lm.max_length, lm.max_length, None
        if long_texts == "windows" and not is_pair(items[0]):
            size, step, overlap = window_overlap(lm.tokenizer, lm.max_length, window, stride)
        order = sorted(range(len(items)), key=lambda i: item_length(items[i]))
        batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        rows = (
            sum(window_count(lm.tokenizer, t, size, step) for t in items)
            if progress is not False and overlap is not None
            else len(items)
        )
        results: list[Explanation | None] = [None] * len(items)
        with _progress(progress, rows, len(items)) as advance:
            run = _Run(
                lm,
                method,
                options,
                batch_size,
                word_aggregation,
                size,
                step,
                overlap,
                advance,
                model_input_names(lm.model),
            )
            for batch in batches:
                batch_targets = None if targets is None else [targets[i] for i in batch]
                explained = run.batch([items[i] for i in batch], batch_targets)
                for row, index in enumerate(batch):
                    if explained[row].truncated:
                        message = (
                            f"text {index} is longer than {lm.max_length} tokens: explained "
                            f"its first {lm.max_length} tokens only"
                            if explained[row].text_pair is None
                            else f"pair {index} is longer than {lm.max_length} tokens: the "
                            "longer of its texts was cut at the end until it fitted"
                        )
                        warnings.warn(TruncationWarning(message, index), stacklevel=2)
                    results[index] = explained[row]
        explanations = [r for r in results if r is not None]
        for explanation in explanations:  # each its own copy: the record is small (no table)
            explanation.options.update(copy.deepcopy(prepared.recorded))
    return explanations[0] if single else explanations


def _is_one_pair(texts: Any) -> bool:
    """A tuple of two strings is one pair of texts (a list of two strings is two texts)."""
    return isinstance(texts, tuple) and len(texts) == 2 and all(isinstance(t, str) for t in texts)


def _warn_on_old_names(method: str, given: dict[str, Any]) -> None:
    """A parameter of ``explain`` that was once also the name of one of ``method``'s options
    (occlusion's ``window``) was probably meant for the method: say where it went."""
    for old, new in renamed_options(method).items():
        if given.get(old) is not None:
            warnings.warn(
                f"{old}={given[old]!r} sets explain()'s long-text {old}, not an option of "
                f"{method!r}; its option once called {old!r} is now {new!r}: write "
                f"options={{{new!r}: {given[old]!r}}}",
                UserWarning,
                stacklevel=3,
            )


def _merge_options(options: Mapping[str, Any] | None, keywords: dict[str, Any]) -> dict[str, Any]:
    """The method options of an ``explain`` call: the ``options`` dict and keywords, not both
    naming the same option."""
    if options is not None and not isinstance(options, Mapping):
        raise InputError(f"options must be a dict of method options, not {type(options).__name__}")
    merged = dict(options or {})
    twice = sorted(set(merged) & set(keywords))
    if twice:
        raise InputError(f"method option {twice[0]!r} is given twice: in options and as a keyword")
    merged.update(keywords)
    return merged


@dataclass(frozen=True)
class _Run:
    """What every batch of one ``explain`` call shares: the model, the method and its options,
    the row size (``size`` tokens, windows every ``step`` content tokens sharing ``overlap``;
    ``None``: long texts are truncated), and ``advance(rows)`` for progress."""

    lm: LoadedModel
    method: str
    options: dict[str, Any]
    batch_size: int
    word_aggregation: str
    size: int
    step: int
    overlap: int | None
    advance: Callable[[int], None]
    inputs: set[str]  # the tensors the model takes (model_input_names), looked up once

    def batch(self, texts: list[TextItem], targets: list[int] | None) -> list[Explanation]:
        """Explanations of ``texts`` (one batch), in order."""
        encoded = encode(self.lm.tokenizer, texts, self.size, self.inputs, overlap=self.overlap)
        if len(encoded) > len(texts):
            return self._windows(encoded, targets)
        tensor_targets = None if targets is None else torch.tensor(targets)
        attribution = run_method(self.method, self.lm, encoded, tensor_targets, self.options)
        self.advance(len(texts))
        return [self._build(encoded, attribution, row) for row in range(len(texts))]

    def _build(self, encoded: Encoded, attribution: Attribution, row: int) -> Explanation:
        return build_explanation(
            self.lm, encoded, attribution, row, self.method, self.word_aggregation, self.options
        )

    def _windows(self, encoded: Encoded, targets: list[int] | None) -> list[Explanation]:
        """A batch in which some texts span several windows, ``batch_size`` rows at a time.

        Every window of a text is explained for the text's target: the given one, or the
        class with the highest mean window probability.
        """
        lm = self.lm
        chunks = [
            list(range(s, min(s + self.batch_size, len(encoded))))
            for s in range(0, len(encoded), self.batch_size)
        ]
        probs = torch.cat(
            [torch.softmax(forward(lm.model, select_rows(encoded, c)), -1).cpu() for c in chunks]
        )
        n_texts = max(encoded.text_of) + 1
        rows_of = [[r for r, t in enumerate(encoded.text_of) if t == b] for b in range(n_texts)]
        doc_probs = [document_probabilities(probs[rows]) for rows in rows_of]
        doc_target = targets or [int(p.argmax()) for p in doc_probs]
        row_targets = torch.tensor([doc_target[t] for t in encoded.text_of])
        # each window is folded into its text's merge as soon as its chunk is explained, so
        # a long document holds sums over its tokens, not every window's explanation
        merges = {
            b: WindowMerge(encoded.texts[rows[0]], lm.tokenizer)
            for b, rows in enumerate(rows_of)
            if len(rows) > 1
        }
        single: dict[int, Explanation] = {}
        for chunk in chunks:
            sub = select_rows(encoded, chunk)
            attribution = run_method(self.method, lm, sub, row_targets[chunk], self.options)
            for row, r in enumerate(chunk):
                part = self._build(sub, attribution, row)
                text = encoded.text_of[r]
                if text in merges:
                    merges[text].add(part)
                else:
                    single[text] = part
            self.advance(len(chunk))
        merged = []
        for b in range(n_texts):
            if b in single:
                merged.append(single[b])
                continue
            probabilities = dict(zip(lm.labels, doc_probs[b].tolist()))
            prediction = lm.labels[int(doc_probs[b].argmax())]
            merged.append(merges[b].result(probabilities, prediction, self.size, self.step))
        return merged


ProgressFn = Callable[[int, int], None]


@contextmanager
def _progress(
    progress: bool | ProgressFn, total: int, n_texts: int
) -> Iterator[Callable[[int], None]]:
    """``advance(rows)`` for ``explain``'s ``progress``: nothing, the command line's terminal
    bar (``True``, when there is more than one row), or the caller's ``progress(done, total)``.
    """
    if progress is True and total > 1:
        from rich.console import Console

        from .report.progress import text_progress

        with (
            text_progress(Console(stderr=True), n_texts) as part,
            _progress(part(0, n_texts), total, n_texts) as advance,
        ):
            yield advance
        return
    if not callable(progress):
        yield lambda rows: None
        return
    done = 0

    def report(rows: int) -> None:
        nonlocal done
        done += rows
        progress(done, total)

    yield report


def build_explanation(
    lm: LoadedModel,
    encoded: Encoded,
    attribution: Attribution,
    row: int,
    method: str,
    word_aggregation: str = "sum",
    options: dict[str, Any] | None = None,
) -> Explanation:
    """One text's (or pair's) :class:`Explanation` from a batch attribution (content tokens
    only)."""
    item = encoded.texts[row]
    texts = list(item) if is_pair(item) else [item]
    content = encoded.content[row].nonzero().flatten().tolist()
    ids = encoded.input_ids[row, content].tolist()
    pieces = token_pieces(lm.tokenizer, ids)
    row_offsets = encoded.offsets[row].tolist()
    offsets = [(int(row_offsets[i][0]), int(row_offsets[i][1])) for i in content]
    scores = attribution.scores[row, content].tolist()
    word_ids = [encoded.word_ids[row][i] for i in content]
    segments = [0] * len(content)
    if encoded.segments is not None:
        segments = [int(encoded.segments[row][i] or 0) for i in content]
    tokens, words = segmented_tokens_and_words(
        texts, segments, pieces, offsets, word_ids, scores, word_aggregation
    )
    probs = torch.softmax(attribution.logits[row], -1).tolist()
    applied = attribution.detail.applied_options()
    recorded = dict(options or {}) if applied is None else applied
    reports = attribution.detail.layer_reports(row, content, lm.tokenizer)
    return Explanation(
        text=texts[0],
        text_pair=texts[1] if len(texts) > 1 else None,
        model=lm.name,
        method=method,
        prediction=lm.labels[int(torch.tensor(probs).argmax())],
        target=lm.labels[int(attribution.targets[row])],
        probabilities=dict(zip(lm.labels, probs)),
        tokens=tokens,
        words=words,
        layer=attribution.layers[row],
        decoder=lm.decoder,
        word_aggregation=word_aggregation,
        truncated=encoded.truncated[row],
        options=recorded,
        layers=reports,
        forward_passes=attribution.forward_passes,
        backward_passes=attribution.backward_passes,
    )


__all__ = ["TruncationWarning", "build_explanation", "explain", "methods"]
