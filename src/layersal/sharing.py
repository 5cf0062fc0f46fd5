"""Rows of a batch that read the same model input share its forward pass.

Several explained rows can be one input to the model: the entities of one text (rows that
differ only in their :data:`~layersal.tasks.FOCUS`), the labels a multi-label model predicts
for one text. The forward runs once per *distinct* input; each row's logits are the distinct
input's, seen through the task's view with the row's own focus; and since each row needs its
own gradient, the rows are split into *slots*, at most one row per distinct input in each,
and each slot is one backward pass of the retained graph (inputs are independent, so one
backward of a slot's summed objectives gives each of its rows its own gradient). A batch of
distinct inputs is one slot: one forward, one backward, as before.

Cost: one forward per distinct input, and per slot one backward over the distinct inputs of
the batch (an input with no row in a slot would still go through that backward, with a zero
gradient: :func:`row_batches` therefore puts a text's rows in one batch, with texts of as
many rows each).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .encoding import Encoded
from .inputs import item_length, unfocused
from .tasks import FOCUS, Task


@dataclass(frozen=True)
class SharedRows:
    """How the rows of one batch map onto its distinct model inputs.

    ``distinct``: one batch row per distinct input (its first). ``index`` ``(B,)``: the
    distinct input (position in ``distinct``) each row reads. ``slots``: the rows of each
    backward pass, at most one per distinct input; every row is in exactly one slot.
    """

    distinct: list[int]
    index: torch.Tensor
    slots: list[list[int]]

    @property
    def trivial(self) -> bool:
        """Whether every row is its own input (one slot; nothing to share)."""
        return len(self.distinct) == len(self.index)

    def expand(self, values: torch.Tensor) -> torch.Tensor:
        """``(distinct, ...)`` values -> ``(B, ...)``: each row's input's."""
        return values if self.trivial else values[self.index.to(values.device)]


def shared_rows(encoded: Encoded) -> SharedRows:
    """The distinct model inputs of ``encoded`` (every input but the focus compared) and the
    slots of its rows."""
    names = sorted(k for k in encoded.inputs if k != FOCUS)
    first: dict[tuple, int] = {}
    index: list[int] = []
    slot_of: list[int] = []
    taken: dict[int, int] = {}
    for row in range(len(encoded)):
        key = tuple(tuple(encoded.inputs[name][row].tolist()) for name in names)
        at = first.setdefault(key, len(first))
        index.append(at)
        slot_of.append(taken.get(at, 0))
        taken[at] = slot_of[-1] + 1
    distinct = [index.index(at) for at in range(len(first))]
    slots = [
        [r for r, s in enumerate(slot_of) if s == k] for k in range(max(taken.values(), default=0))
    ]
    return SharedRows(distinct, torch.tensor(index, dtype=torch.long), slots)


def distinct_batch(encoded: Encoded, shared: SharedRows) -> tuple[Encoded, torch.Tensor | None]:
    """The batch the model runs: one row per distinct input, at the batch's own length, without
    the focus; and the focus of every row (``None``: the batch has none)."""
    focus = encoded.inputs.get(FOCUS)
    inputs = {k: v for k, v in encoded.inputs.items() if k != FOCUS}
    if shared.trivial:
        return dataclasses.replace(encoded, inputs=inputs), focus
    rows = shared.distinct
    index = torch.tensor(rows, dtype=torch.long)
    return (
        Encoded(
            texts=[encoded.texts[r] for r in rows],
            inputs={k: v[index] for k, v in inputs.items()},
            offsets=encoded.offsets[index],
            content=encoded.content[index],
            word_ids=[encoded.word_ids[r] for r in rows],
            truncated=[encoded.truncated[r] for r in rows],
            text_of=[encoded.text_of[r] for r in rows] if encoded.text_of else [],
            segments=None if encoded.segments is None else [encoded.segments[r] for r in rows],
        ),
        focus,
    )


def row_logits(
    task: Task, logits: torch.Tensor, shared: SharedRows, focus: torch.Tensor | None
) -> torch.Tensor:
    """Each row's ``(B, C)`` logits from the distinct inputs' model logits: the task's view
    with the row's focus, where the batch has one."""
    logits = shared.expand(logits)
    return logits if focus is None else task.view(logits, focus.to(logits.device))


def row_gradients(
    objectives: torch.Tensor, shared: SharedRows, wrt: Sequence[torch.Tensor]
) -> list[torch.Tensor | None]:
    """``d objectives[r] / d wrt[k]`` for every row ``r``, ``(B, ...)`` per tensor of ``wrt``
    (each ``(distinct, ...)``; ``None`` where no objective reaches it): one backward pass
    per slot, the graph kept until the last."""
    if shared.trivial:
        return list(torch.autograd.grad(objectives.sum(), list(wrt), allow_unused=True))
    index = shared.index.to(objectives.device)
    out: list[torch.Tensor | None] = [None] * len(wrt)
    for k, rows in enumerate(shared.slots):
        last = k == len(shared.slots) - 1
        picked = torch.tensor(rows, dtype=torch.long, device=objectives.device)
        grads = torch.autograd.grad(
            objectives[picked].sum(), list(wrt), retain_graph=not last, allow_unused=True
        )
        for i, grad in enumerate(grads):
            if grad is None:
                continue
            if out[i] is None:
                out[i] = grad.new_zeros((len(index), *grad.shape[1:]))
            held = out[i]
            assert held is not None
            held[picked] = grad[index[picked]]
    return out


def row_batches(items: Sequence[Any], batch_size: int) -> list[list[int]]:
    """Batches of at most ``batch_size`` row indices into ``items`` (texts, pairs or focused
    rows) for one ``explain`` call. The rows of one text or pair stay in one batch (a text
    with more rows than ``batch_size`` fills batches of its own), so they share its forward;
    and a batch holds only texts with as many rows each, so that each of its backward passes
    has a row of every text in it (none runs over a text it does not explain). Within that,
    texts are sorted by length to cut padding: without shared texts this is the rows sorted
    by length, ``batch_size`` at a time."""
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(unfocused(item), []).append(i)
    ordered = sorted(groups.values(), key=lambda rows: (len(rows), item_length(items[rows[0]])))
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0  # rows per text in the current batch
    for rows in ordered:
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            if current and (len(current) + len(part) > batch_size or len(part) != size):
                batches.append(current)
                current = []
            current += part
            size = len(part)
    return [*batches, current] if current else batches


__all__ = [
    "SharedRows",
    "distinct_batch",
    "row_batches",
    "row_gradients",
    "row_logits",
    "shared_rows",
]
