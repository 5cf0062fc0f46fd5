"""One settled job: this model, this method, its options checked once and ``auto`` settled
once. :func:`layersal.explain` is a thin call of it; the command line, the web app, the dataset
engines and the benchmark each hold one for their job.

``Explainer.explain(items, target=...)`` gives :class:`~layersal.explanation.Explanation`s
(long texts as windows, words, progress); ``Explainer.attribute(encoded, targets)`` gives the
method's :class:`~layersal.saliency.base.Attribution` of one encoded batch (what metrics and
benchmarks need).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .encoding import Encoded, encode, model_input_names, select_rows, token_pieces
from .errors import InputError, TruncationWarning
from .explanation import Explanation
from .inputs import Focused, TextItem, is_pair, unfocused
from .models import LoadedModel
from .passes import forward
from .rows import PlannedRow, Shown, row_plan, settling_rows
from .saliency import Attribution, Checked, Settled, checked, renamed_options, settle
from .saliency.base import Prepared
from .sharing import row_batches
from .targets import Target
from .tasks import FOCUS
from .windows import WindowMerge, window_count, window_overlap
from .words import WORD_AGGREGATIONS, segmented_tokens_and_words

LONG_TEXTS = ("windows", "truncate")


class Explainer:
    """One model, one method and its options, settled once for a whole job.

    Built from a :class:`LoadedModel`, a method name and that method's options: the options
    are checked (and the method's options dataclass built) here, once. What the method settles
    per job (DLS's ``layer="auto"``: from the model card, a cache, or a calibration on the
    job's first texts) is settled on first use, or by :meth:`settle` with texts of your
    choosing, and then kept: :attr:`prepared` records what was chosen and why.

    ``word_aggregation``, ``batch_size``, ``long_texts``, ``window`` and ``stride`` are as in
    :func:`layersal.explain`.
    """

    def __init__(
        self,
        lm: LoadedModel,
        method: str | Checked = "dls",
        options: Mapping[str, Any] | None = None,
        *,
        word_aggregation: str = "sum",
        batch_size: int = 16,
        long_texts: str = "windows",
        window: int | None = None,
        stride: int | None = None,
        recorded: Mapping[str, Any] | None = None,
    ) -> None:
        if options is not None and not isinstance(options, Mapping):
            raise InputError(
                f"options must be a dict of method options, not {type(options).__name__}"
            )
        if word_aggregation not in WORD_AGGREGATIONS:
            raise InputError(
                f"word aggregation must be one of {', '.join(WORD_AGGREGATIONS)}, "
                f"not {word_aggregation!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {batch_size}")
        if long_texts not in LONG_TEXTS:
            raise InputError(f"long_texts must be 'windows' or 'truncate', not {long_texts!r}")
        if isinstance(method, Checked) and options:
            raise InputError("a checked method carries its options: pass no `options` with it")
        self.lm = lm
        self.checked = method if isinstance(method, Checked) else checked(method, options or {})
        self.method = self.checked.name
        self.options = self.checked.options
        self.word_aggregation = word_aggregation
        self.batch_size = batch_size
        self.long_texts = long_texts
        self.window, self.stride = window, stride
        self._settled: Settled | None = None
        self._inputs = model_input_names(lm.model)
        self.recorded = dict(recorded or {})
        """How the method was chosen (``budget``), merged into every explanation's options."""

    # -- settling ---------------------------------------------------------------------------

    def settle(self, texts: Callable[[], list[Any]], *, fresh: bool = False) -> Prepared:
        """Settle the method's options for this job (once: later calls return the same).

        ``texts()`` gives a calibration sample where the method needs one (DLS's ``auto`` on
        a model without a card or cache); ``fresh`` asks for a choice made on those texts
        rather than one stored earlier.
        """
        if self._settled is None:
            with self.lm.borrowed():
                self._settled = settle(
                    self.checked,
                    lambda: self.lm,
                    lambda: settling_rows(self, list(texts())),
                    self.batch_size,
                    fresh=fresh,
                )
        return self._settled.prepared

    @property
    def prepared(self) -> Prepared:
        """What settling chose and why (an error before :meth:`settle` or a first use)."""
        if self._settled is None:
            raise InputError("this explainer is not settled yet: call settle(texts) first")
        return self._settled.prepared

    @property
    def applied_options(self) -> dict[str, Any]:
        """The options every batch runs with (``auto`` settled)."""
        return dict(self.prepared.options)

    def with_model(self, lm: LoadedModel) -> Explainer:
        """This job, settled as it is, on another model with the same tokenizer and labels (a
        copy with other weights: the randomisation sanity check). Nothing is settled again:
        DLS's ``auto`` keeps the configuration chosen for this job's model."""
        if self._settled is None:
            raise InputError("settle this explainer before moving it to another model")
        if lm.tokenizer is not self.lm.tokenizer or lm.labels != self.lm.labels:
            raise InputError(
                f"{lm.name} does not share {self.lm.name}'s tokenizer and labels: settle a new "
                "explainer for it"
            )
        moved = copy.copy(self)
        moved.lm = lm
        moved._inputs = model_input_names(lm.model)
        return moved

    # -- running ----------------------------------------------------------------------------

    def attribute(self, encoded: Encoded, targets: torch.Tensor | None = None) -> Attribution:
        """The method's attribution of one encoded batch (``targets``: one class index per
        row; ``None``: the predicted classes). Settles on the batch's texts if needed."""
        if self._settled is None:
            self.settle(lambda: list(encoded.texts))
        assert self._settled is not None
        with self.lm.borrowed():  # a task's view, eval mode
            return self._settled.run(self.lm, encoded, targets)

    def explain(
        self,
        items: Sequence[TextItem],
        target: Target | Sequence[Target] = None,
        progress: bool | ProgressFn = False,
        batch_size: int | None = None,
    ) -> list[Explanation]:
        """Explanations of ``items`` (checked texts or pairs), in their order: one per item,
        or, for a task that explains several labels of a text by default (multi-label), one
        per predicted label of each item (:meth:`explain_grouped` keeps them apart).

        ``target`` and ``progress`` are as in :func:`layersal.explain`. Texts are batched
        ``batch_size`` at a time (default: the explainer's), sorted by length to cut padding,
        the rows of one text (its entities) in one batch, where they share its forward pass.
        """
        grouped = self.explain_grouped(items, target, progress, batch_size)
        return [e for group in grouped for e in group]

    def explain_grouped(
        self,
        items: Sequence[TextItem],
        target: Target | Sequence[Target] = None,
        progress: bool | ProgressFn = False,
        batch_size: int | None = None,
        *,
        check: Callable[[list[list[PlannedRow]]], None] | None = None,
    ) -> list[list[Explanation]]:
        """The explanations of each item: one; or, with no ``target``, on a multi-label model
        one per label it predicts (every label at or above its threshold, else the top one),
        on a token classifier one per entity it predicts (none for a text without one), on a
        zero-shot classifier one for its top label (``target``: a label, or a list of labels
        each text is explained for). ``check(plan)`` sees each item's planned rows before any
        is explained, and may refuse them by raising (a server bounding a request's cost)."""
        items = list[Any](items)
        self.lm.check_items(items)  # before any forward pass
        rows = row_plan(self, items, target)
        if check is not None:
            check(rows)
        flat = self._explain([r for own in rows for r in own], progress, batch_size)
        groups, start = [], 0
        for own in rows:
            groups.append(flat[start : start + len(own)])
            start += len(own)
        return groups

    def document_outputs(self, items: Sequence[Any]) -> list[torch.Tensor]:
        """What the task shows for each item (probabilities, sigmoids, the score), over the
        whole text: a long text's windows merged as its explanation merges them."""
        lm = self.lm
        size, _, overlap = self._rows(items)
        found: list[torch.Tensor] = []
        with lm.borrowed(), lm.autocast():
            for start in range(0, len(items), self.batch_size):
                chunk = list(items[start : start + self.batch_size])
                encoded = encode(lm.tokenizer, chunk, size, self._inputs, overlap=overlap)
                outputs = lm.task.outputs(forward(lm.model, encoded)).cpu()
                rows = torch.tensor(encoded.text_of)
                found += [lm.task.merge_windows(outputs[rows == b]) for b in range(len(chunk))]
        return found

    def raw_outputs(self, items: Sequence[Any]) -> Iterator[tuple[Encoded, torch.Tensor]]:
        """The items' model rows (each text's windows, or one row) in encoded chunks of at most
        ``batch_size`` rows, each with the model's own logits, no view (a token classifier's
        ``(rows, n, tags)``); a chunk's ``text_of`` indexes ``items``."""
        lm = self.lm
        size, _, overlap = self._rows(items)
        with lm.borrowed(), lm.autocast():
            encoded = encode(lm.tokenizer, list(items), size, self._inputs, overlap=overlap)
            for start in range(0, len(encoded), self.batch_size):
                end = min(start + self.batch_size, len(encoded))
                chunk = select_rows(encoded, range(start, end))
                yield chunk, forward(lm.model, chunk).cpu()

    def _rows(self, items: Sequence[Any]) -> tuple[int, int, int | None]:
        """How ``items`` become model rows: ``(size, step, overlap)``, windows of ``size``
        tokens every ``step`` sharing ``overlap`` (``None``: truncated to one row; pairs are)."""
        lm = self.lm
        if self.long_texts == "windows" and items and not is_pair(items[0]):
            return window_overlap(lm.tokenizer, lm.max_length, self.window, self.stride)
        return lm.max_length, lm.max_length, None

    def _explain(
        self, planned: list[PlannedRow], progress: bool | ProgressFn, batch_size: int | None
    ) -> list[Explanation]:
        lm = self.lm
        if not planned:
            return []
        items = [row.item for row in planned]
        with lm.borrowed():  # eval mode for the passes; a model object is left as it was
            self.settle(lambda: items)
            assert self._settled is not None
            size, step, overlap = self._rows(items)
            batch_size = batch_size or self.batch_size
            batches = row_batches(items, batch_size)  # a text's rows together: one forward
            texts = [unfocused(item) for item in items]
            rows = (
                sum(window_count(lm.tokenizer, t, size, step) for t in texts)
                if progress is not False and overlap is not None
                else len(items)
            )
            results: list[Explanation | None] = [None] * len(items)
            with _progress(progress, rows, len(items)) as advance:
                run = _Run(
                    lm,
                    self.method,
                    self._settled,
                    batch_size,
                    self.word_aggregation,
                    size,
                    step,
                    overlap,
                    advance,
                    self._inputs,
                )
                for batch in batches:
                    explained = run.batch([planned[i] for i in batch])
                    for row, index in enumerate(batch):
                        if explained[row].truncated:
                            warnings.warn(
                                TruncationWarning(_truncated(explained[row], index, lm), index),
                                stacklevel=3,
                            )
                        results[index] = explained[row]
            explanations = [r for r in results if r is not None]
            recorded = {**self._settled.prepared.recorded, **self.recorded}
            for explanation in explanations:  # each its own copy: the record is small
                explanation.options.update(copy.deepcopy(recorded))
        return explanations


def explainer(
    model: Any = None,
    method: str | None = None,
    *,
    budget: int | None = None,
    options: Mapping[str, Any] | None = None,
    lm_head: str | None = None,
    word_aggregation: str = "sum",
    batch_size: int = 16,
    long_texts: str = "windows",
    window: int | None = None,
    stride: int | None = None,
    labels: Sequence[str] | None = None,
    template: str | None = None,
    multi_label: bool = False,
    **method_options: Any,
) -> Explainer:
    """An :class:`Explainer` for ``model`` (a :class:`LoadedModel`, a name or path, a model
    object or a pipeline; ``None``: the bundled default) and ``method`` with its options (the
    ``options`` dict and/or keywords, as in :func:`layersal.explain`). ``labels``,
    ``template`` and ``multi_label`` make a zero-shot classifier of a natural-language-
    inference model (see :func:`layersal.load`). ``budget`` (passes per text) picks the
    method instead of ``method`` (:mod:`layersal.budget_choice`): give one or the other."""
    from .budget_choice import budget_alone, choose_for
    from .checkpoints import DEFAULT_MODEL
    from .models import DEFAULT_TEMPLATE, load

    given = merge_options(options, method_options)
    if budget is not None:
        budget_alone(budget, method is not None or bool(given))
    job = None
    if budget is None:
        job = checked(method or "dls", given)  # before the model loads
        _warn_on_old_names(job.name, {"window": window, "stride": stride})
    zero_shot = labels is not None or template is not None or multi_label
    if isinstance(model, LoadedModel):
        if zero_shot:
            raise InputError(
                "labels, template and multi_label make a zero-shot classifier when a model is "
                "loaded: give them to layersal.load(model, task='zero-shot', labels=[...])"
            )
        lm = model
    else:
        chosen: dict[str, Any] = {}
        if zero_shot:
            chosen = {"task": "zero-shot", "labels": labels, "multi_label": multi_label}
            chosen["template"] = template or DEFAULT_TEMPLATE
        lm = load(DEFAULT_MODEL if model is None else model, lm_head, **chosen)
    recorded: dict[str, Any] = {}
    if job is None:
        assert budget is not None
        choice = choose_for(lm, budget)
        job = checked(choice.method, choice.options)
        recorded = {"budget": choice.record(budget)}
    return Explainer(
        lm,
        job,
        None,
        recorded=recorded,
        word_aggregation=word_aggregation,
        batch_size=batch_size,
        long_texts=long_texts,
        window=window,
        stride=stride,
    )


def merge_options(options: Mapping[str, Any] | None, keywords: dict[str, Any]) -> dict[str, Any]:
    """The method options of an ``explain`` call: the ``options`` dict and keywords, not both
    naming the same option."""
    if options is not None and not isinstance(options, Mapping):
        raise InputError(f"options must be a dict of method options, not {type(options).__name__}")
    merged = dict(options or {})
    twice = sorted(set(merged) & set(keywords))
    if twice:
        raise InputError(
            f"method option {twice[0]!r} is given twice: in options and on its own; give it once"
        )
    merged.update(keywords)
    return merged


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
                stacklevel=4,
            )


def _truncated(explanation: Explanation, index: int, lm: LoadedModel) -> str:
    if explanation.text_pair is None:
        return (
            f"text {index} is longer than {lm.max_length} tokens: explained its first "
            f"{lm.max_length} tokens only"
        )
    return (
        f"pair {index} is longer than {lm.max_length} tokens: the longer of its texts was cut "
        "at the end until it fitted"
    )


@dataclass(frozen=True)
class _Run:
    """What every batch of one ``explain`` call shares: the model, the settled method,
    the row size (``size`` tokens, windows every ``step`` content tokens sharing ``overlap``;
    ``None``: long texts are truncated), and ``advance(rows)`` for progress."""

    lm: LoadedModel
    method: str
    settled: Settled
    batch_size: int
    word_aggregation: str
    size: int
    step: int
    overlap: int | None
    advance: Callable[[int], None]
    inputs: set[str]  # the tensors the model takes (model_input_names), looked up once

    def batch(self, planned: list[PlannedRow]) -> list[Explanation]:
        """Explanations of ``planned`` rows (one batch), in order."""
        texts = [row.item for row in planned]
        encoded = encode(self.lm.tokenizer, texts, self.size, self.inputs, overlap=self.overlap)
        if len(encoded) > len(texts):
            return self._windows(encoded, planned)
        targets = [row.target for row in planned]
        tensor_targets = None if None in targets else torch.tensor(targets)
        attribution = self.settled.run(self.lm, encoded, tensor_targets)
        self.advance(len(texts))
        return [self._build(encoded, attribution, row, planned[row]) for row in range(len(texts))]

    def _build(
        self, encoded: Encoded, attribution: Attribution, row: int, planned: PlannedRow
    ) -> Explanation:
        return build_explanation(
            self.lm,
            encoded,
            attribution,
            row,
            self.method,
            self.word_aggregation,
            self.settled.options,
            shown=planned.shown,
        )

    def _windows(self, encoded: Encoded, planned: list[PlannedRow]) -> list[Explanation]:
        """A batch in which some texts span several windows, ``batch_size`` rows at a time.

        Every window of a text is explained for the text's target: the given one, or the
        class with the highest mean window probability. A row that looks at a span (an
        entity) is explained in one window only, the one in which its span sits most
        centrally (the most context on both sides): the model's prediction for the span
        comes from the windows that hold it, and words outside that window get 0.
        """
        lm = self.lm
        n_texts = max(encoded.text_of) + 1
        rows_of = [[r for r, t in enumerate(encoded.text_of) if t == b] for b in range(n_texts)]
        focused = [isinstance(row.item, Focused) and row.item.start is not None for row in planned]
        rows_of = [
            [central_window(encoded, rows)] if focused[b] and len(rows) > 1 else rows
            for b, rows in enumerate(rows_of)
        ]
        kept = [r for rows in rows_of for r in rows]
        chunks = [kept[s : s + self.batch_size] for s in range(0, len(kept), self.batch_size)]
        probs = torch.zeros(len(encoded), len(lm.labels))
        for c in chunks:
            probs[c] = lm.task.outputs(forward(lm.model, select_rows(encoded, c))).cpu()
        doc_probs = [lm.task.merge_windows(probs[rows]) for rows in rows_of]
        doc_target = [
            row.target if row.target is not None else lm.task.predicted(doc_probs[b])[0]
            for b, row in enumerate(planned)
        ]
        row_targets = torch.tensor([doc_target[t] for t in encoded.text_of])
        # each window is folded into its text's merge as soon as its chunk is explained, so
        # a long document holds sums over its tokens, not every window's explanation
        merges = {
            b: WindowMerge(unfocused(encoded.texts[rows[0]]), lm.tokenizer)
            for b, rows in enumerate(rows_of)
            if len(rows) > 1 or focused[b]
        }
        single: dict[int, Explanation] = {}
        for chunk in chunks:
            sub = select_rows(encoded, chunk)
            attribution = self.settled.run(lm, sub, row_targets[chunk])
            for row, r in enumerate(chunk):
                text = encoded.text_of[r]
                part = self._build(sub, attribution, row, planned[text])
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
            task, outputs = lm.task, doc_probs[b]
            first = merges[b].first
            assert first is not None
            whole = merges[b].result(
                task.probabilities(outputs, lm.labels),
                task.prediction(outputs, lm.labels),
                self.size,
                self.step,
                task=task.name,
                score=task.score(outputs),
                entity=first.entity,
            )
            merged.append(whole)
        return merged


def central_window(encoded: Encoded, rows: list[int]) -> int:
    """Of a text's window ``rows``, the one whose focus (span) has the most tokens on its
    shorter side: the span sits most centrally in it. A span no window holds whole keeps the
    window holding most of it."""

    def key(r: int) -> tuple[int, int]:
        focus = encoded.inputs[FOCUS][r] != 0
        content = encoded.content[r].nonzero().flatten()
        inside = focus.nonzero().flatten()
        if not len(inside) or not len(content):
            return (0, -1)
        before = int((content < inside[0]).sum())
        after = int((content > inside[-1]).sum())
        return (len(inside), min(before, after))

    return max(rows, key=key)


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
    *,
    shown: Shown | None = None,
) -> Explanation:
    """One text's (or pair's) :class:`Explanation` from a batch attribution (content tokens
    only). ``shown``: what the explanation shows of the item as a whole, where one row does
    not hold it (a zero-shot label's row: the scores of every label; an entity)."""
    focused = encoded.texts[row]
    item = unfocused(focused)
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
    outputs = lm.task.outputs(attribution.logits[row : row + 1])[0]
    shown = shown or Shown()
    probabilities = (
        shown.probabilities
        if shown.probabilities is not None
        else lm.task.probabilities(outputs, lm.labels)
    )
    prediction = (
        shown.prediction if shown.prediction is not None else lm.task.prediction(outputs, lm.labels)
    )
    applied = attribution.detail.applied_options()
    recorded = dict(options or {}) if applied is None else applied
    reports = attribution.detail.layer_reports(row, content, lm.tokenizer)
    return Explanation(
        text=texts[0],
        text_pair=texts[1] if len(texts) > 1 else None,
        model=lm.name,
        method=method,
        prediction=prediction,
        target=lm.labels[int(attribution.targets[row])],
        probabilities=probabilities,
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
        task=lm.task.name,
        score=lm.task.score(outputs),
        entity=None if shown.entity is None else shown.entity.to_dict(),
        focus=focus_of(focused),
    )


def focus_of(item: Any) -> dict[str, Any] | None:
    """What a focused row looked at, as an explanation records it (``None``: a plain row)."""
    if not isinstance(item, Focused):
        return None
    return {"start": item.start, "end": item.end, "weight": item.weight}


__all__ = ["Explainer", "build_explanation", "explainer", "merge_options"]
