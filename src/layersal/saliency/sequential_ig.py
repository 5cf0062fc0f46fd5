"""Sequential Integrated Gradients (Enguehard, Findings of ACL 2023), at the word embeddings.

Integrated gradients with one path per word: along word w's path only w's embeddings move,
from the baseline token's ([MASK] by default, as the paper proposes) to their own, and every
other word keeps its own embeddings. The word's tokens get the integrated gradients of that
path, so they add up to y_c(x) - y_c(x with w at the baseline), up to the quadrature error.

Each (text, word) pair is one input row of Captum's ``IntegratedGradients``, whose baseline is
the text with that word's content tokens replaced: Captum multiplies the path's gradients by
(input - baseline), which is zero outside the word, so a token's score is the sum of its
row's attributions. All the rows of a batch run as one expanded batch, bounded by
``IG_TOKEN_BUDGET`` tokens per model pass. Definitions: ``docs/methods.md``.
"""

from __future__ import annotations

import torch

from ..encoding import Encoded
from ..metrics import units_of
from ..models import LoadedModel
from ._common import (
    EmbeddingForward,
    PassCounter,
    embedding_arguments,
    optional_positive_int,
    positive_int,
    prediction,
    replacement_id,
    word_embeddings,
)
from .base import Attribution, register
from .gradients import GAUSS_LEGENDRE_MAX_STEPS, IG_TOKEN_BUDGET


def word_rows(encoded: Encoded) -> tuple[list[int], list[list[int]]]:
    """One path per word: the batch row each path belongs to, and the positions of its content
    tokens (the metrics' words, :func:`layersal.metrics.units_of`; a content token without a
    word id is a word of its own). Rows are in batch order, words in text order."""
    owners: list[int] = []
    positions: list[list[int]] = []
    for row in range(len(encoded)):
        content = encoded.content[row].cpu().numpy()
        for unit in units_of(content, encoded.word_ids[row]):
            owners.append(row)
            positions.append([int(p) for p in unit])
    return owners, positions


def _cost(options: dict, n_tokens: int) -> int:
    """At most one path per content token (a word has one or more), ``n_steps`` rows each,
    and the prediction."""
    return n_tokens * int(options["n_steps"]) + 1


@register("sequential_integrated_gradients", cost=_cost)
def sequential_integrated_gradients(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    n_steps: int = 16,
    baseline: str = "mask",
    internal_batch_size: int | None = None,
) -> Attribution:
    """Sequential IG: for each word, Captum ``IntegratedGradients`` along the path on which
    only that word's embeddings move from the ``baseline`` token's ([MASK]/[PAD]/[UNK]) to
    their own, the rest of the text fixed; its tokens get that path's attributions, summed
    over hidden dims. A word's tokens add up to y_c(x) - y_c(x with the word replaced), up to
    the error of ``n_steps`` Gauss-Legendre steps (trapezoid rule above
    ``GAUSS_LEGENDRE_MAX_STEPS``). Costs ``n_steps`` rows per word.
    ``internal_batch_size`` (rows per model pass) defaults to what fits in
    ``IG_TOKEN_BUDGET`` tokens.
    """
    from captum.attr import IntegratedGradients

    n_steps = positive_int("n_steps", n_steps)
    internal_batch_size = optional_positive_int("internal_batch_size", internal_batch_size)
    token = replacement_id(lm.tokenizer, baseline)
    device = lm.device
    width = max(1, encoded.input_ids.shape[1])
    per_pass = internal_batch_size or max(1, IG_TOKEN_BUDGET // width)
    names, args = embedding_arguments(encoded, device)
    ids = encoded.input_ids.to(device)
    embeddings = word_embeddings(lm, ids)
    replaced = word_embeddings(lm, torch.full_like(ids[:, :1], token))[:, 0]  # (B, d)
    owners, positions = word_rows(encoded)
    scores = torch.zeros(ids.shape, dtype=torch.float32, device=device)
    method = "gausslegendre" if n_steps <= GAUSS_LEGENDRE_MAX_STEPS else "riemann_trapezoid"
    with PassCounter(lm.model) as counter:
        logits, chosen = prediction(lm, encoded, targets)
        forward = EmbeddingForward(lm, names)
        # paths per Captum call: as many as one pass holds at one step (at least one)
        for start in range(0, len(owners), per_pass):
            rows = torch.tensor(owners[start : start + per_pass], device=device)
            moving = torch.zeros((len(rows), width), dtype=torch.bool, device=device)
            for i, where in enumerate(positions[start : start + per_pass]):
                moving[i, where] = True
            inputs = embeddings[rows]
            base = torch.where(moving.unsqueeze(-1), replaced[rows].unsqueeze(1), inputs)
            attributions = IntegratedGradients(forward).attribute(
                inputs,
                baselines=base,
                target=chosen[rows],
                additional_forward_args=tuple(a[rows] for a in args),
                n_steps=n_steps,
                method=method,
                internal_batch_size=max(per_pass, len(rows)),
            )
            values = attributions.detach().sum(-1) * moving  # only the moving word's tokens
            scores.index_add_(0, rows, values.float())
    return counter.result(encoded, scores * encoded.content.to(device), logits, chosen)
