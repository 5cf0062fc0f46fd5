"""How the items of one ``explain`` call become explained rows: the task's targets per item.

A row is what the model reads (a text, a pair, or either focused on a span: an entity, or a
zero-shot label's pair) and the label explained for it. Most tasks explain an item once (its
given target or its prediction); a multi-label model once per predicted label; a token
classifier once per entity (predicted, or the span a target names); a zero-shot classifier
once per label asked for (default: its top label), each label's row the pair of the text and
that label's hypothesis. :func:`row_plan` is the one place that decides; the task's
attributes (``several``, ``focused``, ``hypotheses``) say which way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .entities import Entity, decode_entities, entity_target, resolve_target, type_matrix
from .errors import InputError
from .inputs import Focused, TextItem, check_texts, is_pair
from .targets import Target, target_index, target_indices

if TYPE_CHECKING:
    from .job import Explainer
    from .tasks import TokenClassification, ZeroShot


@dataclass(frozen=True)
class Shown:
    """What an explanation shows of its item as a whole, where its row does not hold it:
    the scores of every label (a zero-shot row holds one label's pair), the prediction, the
    entity explained."""

    probabilities: dict[str, float] | None = None
    prediction: str | None = None
    entity: Entity | None = None


@dataclass(frozen=True)
class PlannedRow:
    """One explained row: what the model reads, the label index explained (``None``: the
    row's prediction) and what the explanation shows beyond the row."""

    item: TextItem | Focused
    target: int | None
    shown: Shown | None = None


def row_plan(
    job: Explainer, items: list[Any], target: Target | Sequence[Target] | Any
) -> list[list[PlannedRow]]:
    """The rows of each item, in order (an item may have none: a text without entities)."""
    task = job.lm.task
    if task.focused:
        return entity_rows(job, items, target)
    if task.hypotheses:
        return zero_shot_rows(job, items, target)
    if target is not None or not task.several:
        targets = target_indices(target, len(items), job.lm.labels)
        return [
            [PlannedRow(item, None if targets is None else targets[i])]
            for i, item in enumerate(items)
        ]
    predicted = [task.predicted(o) for o in job.document_outputs(items)]
    return [[PlannedRow(item, label) for label in own] for item, own in zip(items, predicted)]


def planning_rows(task: Any, target: Any, windows: int, labels: int) -> int:
    """Model rows (forward only) :func:`row_plan` runs on one item of ``windows`` windows, for
    a model of ``labels`` labels, before any row is explained: a token classifier's windows
    (to find the entities), a zero-shot classifier's pair per label (to score them), a
    multi-label model's windows with no target (to find the labels it predicts); none for the
    other tasks."""
    if task.focused:
        return windows
    if task.hypotheses:
        return labels
    return windows if target is None and task.several else 0


def known_rows(task: Any, target: Any) -> int:
    """The fewest rows :func:`row_plan` gives one item, known before the model runs: the
    rows themselves where ``target`` decides them (a named span, the labels asked of a
    zero-shot classifier: each its row), and at least one label a multi-label model
    predicts; 0 for a token classifier's predicted entities (a text may have none)."""
    if task.focused:
        return 0 if target is None else 1
    if task.hypotheses:
        return len(target) if isinstance(target, (list, tuple)) else 1
    return 1


def explained_windows(item: Any, windows: int) -> int:
    """The windows a planned row's ``item`` is explained in, of its text's ``windows``: one
    for a row that looks at a span (its most central window, ``job.central_window``), every
    window otherwise."""
    return 1 if isinstance(item, Focused) and item.start is not None else windows


def gives_several(task: Any, target: Any) -> bool:
    """Whether one item's explanations come as a list: entities (none or more), a
    multi-label model's predicted labels (no target), zero-shot labels named as a list."""
    if task.focused:
        return True
    if task.hypotheses:
        return isinstance(target, (list, tuple))
    return target is None and task.several


def settling_rows(job: Explainer, items: list[Any]) -> list[Any]:
    """What a method settles on (DLS's ``layer="auto"`` calibration) given ``items``: the
    items; or, for a task whose rows look at a span or a label's hypothesis, their rows (each
    text's predicted entities, its top zero-shot label's pair) unless they are rows already."""
    task = job.lm.task
    if not (task.focused or task.hypotheses) or all(isinstance(i, Focused) for i in items):
        return items
    texts = check_texts([i for i in items if not isinstance(i, Focused)])
    return [row.item for own in row_plan(job, texts, None) for row in own]


# ------------------------------------------------------------------------------- entities


@dataclass
class TokenOutputs:
    """A text's content tokens over the whole text (character offsets, in order) and the
    model's tag probabilities for each, averaged over the windows that hold it."""

    offsets: list[tuple[int, int]]
    probs: torch.Tensor  # (k, tags)
    words: list[tuple[int, int]]  # each word's character span, in word order


def token_outputs(job: Explainer, texts: list[str]) -> list[TokenOutputs]:
    """Each text's :class:`TokenOutputs`: one forward per window, ``batch_size`` rows at a
    time across the texts."""
    totals: list[dict[tuple[int, int], torch.Tensor]] = [{} for _ in texts]
    counts: list[dict[tuple[int, int], int]] = [{} for _ in texts]
    words: list[dict[int, list[int]]] = [{} for _ in texts]
    for encoded, logits in job.raw_outputs(texts):
        probs = torch.softmax(logits.float(), dim=-1)
        for r, b in enumerate(encoded.text_of):
            for i in encoded.content[r].nonzero().flatten().tolist():
                span = (int(encoded.offsets[r, i, 0]), int(encoded.offsets[r, i, 1]))
                totals[b][span] = totals[b].get(span, 0) + probs[r, i]
                counts[b][span] = counts[b].get(span, 0) + 1
                word = encoded.word_ids[r][i]
                if word is not None:
                    known = words[b].setdefault(word, [span[0], span[1]])
                    known[0], known[1] = min(known[0], span[0]), max(known[1], span[1])
    found = []
    for total, count, spans in zip(totals, counts, words):
        offsets = sorted(total)
        stacked = torch.stack([total[o] / count[o] for o in offsets])
        found.append(
            TokenOutputs(offsets, stacked, [(s[0], s[1]) for _, s in sorted(spans.items())])
        )
    return found


def entity_rows(job: Explainer, items: list[Any], target: Any) -> list[list[PlannedRow]]:
    """A token classifier's rows: one per entity of each text (predicted, or named)."""
    task: TokenClassification = job.lm.task  # type: ignore[assignment]
    labels = job.lm.labels
    if items and is_pair(items[0]):
        raise InputError("a token classifier reads single texts, not pairs")
    if target is None:
        targets: list[Any] = [None] * len(items)
    elif isinstance(target, list):
        if len(target) != len(items):
            raise InputError(f"got {len(target)} targets for {len(items)} texts")
        targets = [entity_target(t, labels) for t in target]
    else:
        targets = [entity_target(target, labels)] * len(items)
    plans = []
    for text, wanted, outputs in zip(items, targets, token_outputs(job, items)):
        predicted = decode_entities(text, list(task.tags), outputs.probs, outputs.offsets)
        if wanted is None:
            chosen = predicted
        else:
            chance = functools.partial(span_probability, task, outputs)
            chosen = [resolve_target(wanted, text, outputs.words, predicted, chance)]
        plans.append(
            [
                PlannedRow(Focused(text, e.start, e.end), labels.index(e.label), Shown(entity=e))
                for e in chosen
            ]
        )
    return plans


def span_probability(
    task: TokenClassification, outputs: TokenOutputs, start: int, end: int, label: str
) -> float:
    """The geometric mean, over the tokens of characters ``start:end``, of their probability
    of entity type ``label`` (the entity probability of a span the model did not predict)."""
    inside = [i for i, (s, e) in enumerate(outputs.offsets) if s < end and e > start]
    if not inside:
        raise InputError(f"span {start}:{end} holds no token of the text")
    column = task.labels_of(list(task.tags)).index(label)
    probs = (outputs.probs[inside] @ type_matrix(task.tags))[:, column].clamp(min=1e-12)
    return float(torch.log(probs).mean().exp())


# ------------------------------------------------------------------------------ zero-shot


def zero_shot_rows(job: Explainer, items: list[Any], target: Any) -> list[list[PlannedRow]]:
    """A zero-shot classifier's rows: for each text, the pair of the text and the hypothesis
    of each label asked for (default: the top label), every label's pair scored first (one
    batch per text) for the pipeline's scores."""
    task: ZeroShot = job.lm.task  # type: ignore[assignment]
    labels = job.lm.labels
    if items and is_pair(items[0]):
        raise InputError(
            "a zero-shot classifier reads single texts; it pairs each with its labels' hypotheses"
        )
    asked: list[int] | None = None
    if target is not None:
        values = list(target) if isinstance(target, (list, tuple)) else [target]
        if not values:
            raise InputError("no zero-shot label to explain: name one or more labels")
        asked = [target_index(v, labels, "zero-shot label") for v in values]
    hypotheses = [task.hypothesis(label) for label in labels]
    pairs = [(text, h) for text in items for h in hypotheses]
    logits = _pair_logits(job, pairs)
    plans = []
    for b, text in enumerate(items):
        own = logits[b * len(labels) : (b + 1) * len(labels)]
        scores = task.scores(own)
        shown_probs = dict(zip(labels, scores.tolist()))
        top = int(scores.argmax())
        predicted = (
            [i for i, s in enumerate(scores.tolist()) if s >= 0.5] or [top]
            if task.multi_label
            else [top]
        )
        shown = Shown(shown_probs, ", ".join(labels[i] for i in predicted))
        plans.append(
            [
                PlannedRow(Focused((text, hypotheses[j]), weight=task.offset(own, j)), j, shown)
                for j in (asked if asked is not None else [top])
            ]
        )
    return plans


def _pair_logits(job: Explainer, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """The NLI model's own logits ``(pairs, classes)`` for text-hypothesis pairs, batched."""
    from .encoding import encode, model_input_names
    from .passes import forward

    lm = job.lm
    rows = []
    with lm.borrowed(), lm.autocast():
        for start in range(0, len(pairs), job.batch_size):
            chunk = pairs[start : start + job.batch_size]
            encoded = encode(lm.tokenizer, chunk, lm.max_length, model_input_names(lm.model))
            rows.append(forward(lm.model, encoded).cpu())
    return torch.cat(rows)


__all__ = [
    "PlannedRow",
    "Shown",
    "TokenOutputs",
    "explained_windows",
    "gives_several",
    "known_rows",
    "planning_rows",
    "row_plan",
    "settling_rows",
    "token_outputs",
]
