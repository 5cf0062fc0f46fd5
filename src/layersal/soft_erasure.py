"""Soft erasure (Zhao & Aletras, ACL 2023): hide each token in proportion to its importance.

Instead of replacing the top tokens by [MASK], every element of a token's word embedding is
kept with a probability that follows the token's importance: ``s`` for soft sufficiency (the
important tokens stay), ``1 - s`` for soft comprehensiveness (the important tokens go). The
model is reached through an :class:`EmbeddingPredict`, which multiplies the word embeddings by
the 0/1 ``keep`` tensor drawn here. Pure and seeded: the noise of a text depends only on the
seed, the sample index and the text's own ids, so a text draws the same noise whatever batch
it is in and whichever saliency map is scored (common random numbers across methods).
Definitions and what differs from the paper: ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError


@dataclass(frozen=True)
class EmbeddingPredict:
    """The model seen at its word embeddings.

    ``predict(input_ids, attention_mask, keep[, token_type_ids], **row_inputs)`` returns
    ``(rows, classes)`` outputs, as a metrics ``predict`` does, for the inputs whose word
    embeddings (the word-embedding module's output, before positions, segments and any
    normalisation are added) are multiplied elementwise by ``keep``, ``(rows, n, width)``
    of 0.0 and 1.0. ``width`` is the embedding size.
    """

    width: int
    predict: Callable[..., torch.Tensor]


def soft_importance(unit_scores: np.ndarray, rank_by: str) -> np.ndarray:
    """Each unit's importance in [0, 1]: its score over the text's largest score, with
    negative scores (evidence against the target) at 0 for ``rank_by="signed"``, or
    ``|score| / max |score|`` for ``"abs"``. All zero when no unit has a positive key."""
    key = np.abs(unit_scores) if rank_by == "abs" else np.maximum(unit_scores, 0.0)
    top = float(key.max()) if len(key) else 0.0
    return key / top if top > 0 else np.zeros_like(key, dtype=float)


def keep_probabilities(
    n: int, units: Sequence[np.ndarray], importance: np.ndarray, kind: str
) -> np.ndarray:
    """Per position, the probability that an element of its word embedding is kept:
    ``1 - s`` of its unit for ``kind="comprehensiveness"``, ``s`` for ``"sufficiency"``;
    1 (never touched) at positions outside every unit (special tokens, padding)."""
    keep = np.ones(n)
    for unit, s in zip(units, importance):
        keep[unit] = 1.0 - s if kind == "comprehensiveness" else s
    return keep


class SoftVariants:
    """Distinct softly perturbed inputs of a batch: (row, sample, keep probabilities), each
    kept once, so maps that give a text the same importance share its passes."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.samples: list[int] = []
        self.keep: list[np.ndarray] = []
        self._seen: dict[tuple[int, int, bytes], int] = {}

    def slot(self, row: int, sample: int, keep: np.ndarray) -> int:
        key = (row, sample, keep.tobytes())
        if key not in self._seen:
            self._seen[key] = len(self.rows)
            self.rows.append(row)
            self.samples.append(sample)
            self.keep.append(keep)
        return self._seen[key]


def noise(ids: np.ndarray, seed: int, sample: int, width: int) -> np.ndarray:
    """Uniform noise ``(len(ids), width)`` in [0, 1) for one text (its attended ``ids``) and
    sample: an element is kept where its noise is below its keep probability, so a keep
    probability of 1 always keeps and 0 never does."""
    rng = np.random.default_rng([seed, sample, *(int(i) for i in ids)])
    return rng.random((len(ids), width), dtype=np.float32)


def predict_soft_variants(
    soft: EmbeddingPredict,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    variants: SoftVariants,
    seed: int,
    batch_size: int,
    token_type_ids: torch.Tensor | None = None,
    row_inputs: Mapping[str, torch.Tensor] | None = None,
) -> np.ndarray:
    """Outputs ``(V, C)`` of every soft variant, ``batch_size`` rows per call, each call cut
    after its longest row's last attended position (as the hard variants are)."""
    if not variants.rows:
        return np.zeros((0, 0))
    attended = attention_mask.cpu().bool()
    positions = torch.arange(attended.shape[1])
    ends = torch.where(attended, positions + 1, 0).max(dim=1).values.numpy()
    rows = np.array(variants.rows)
    order = np.argsort(ends[rows], kind="stable")
    out = np.zeros((len(rows), 0))
    for start in range(0, len(rows), batch_size):
        picked = order[start : start + batch_size]
        chunk = torch.from_numpy(rows[picked])
        end = max(int(ends[rows[picked]].max()), 1)
        keep = torch.ones(len(picked), end, soft.width)
        for i, v in enumerate(picked):
            row_end = int(ends[rows[v]])
            own = input_ids[rows[v], :row_end].numpy()
            drawn = noise(own, seed, variants.samples[v], soft.width)
            probability = variants.keep[v][:row_end, None]
            keep[i, :row_end] = torch.from_numpy(drawn < probability).float()
        extra = [] if token_type_ids is None else [token_type_ids[chunk][:, :end]]
        keywords = {name: value[chunk][:, :end] for name, value in (row_inputs or {}).items()}
        with torch.no_grad():
            probs = soft.predict(
                input_ids[chunk][:, :end], attention_mask[chunk][:, :end], keep, *extra, **keywords
            )
        if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or len(probs) != len(chunk):
            raise InputError(
                f"the embedding-level predict must return a (rows, classes) tensor; for "
                f"{len(chunk)} rows it returned {getattr(probs, 'shape', type(probs).__name__)}"
            )
        if out.shape[1] == 0:
            out = np.zeros((len(rows), probs.shape[1]))
        out[picked] = probs.detach().to("cpu", torch.float64).numpy()
    return out
