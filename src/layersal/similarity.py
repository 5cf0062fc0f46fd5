"""How alike two saliency maps are, and how alike two rankings of methods are: the maths of
the randomisation sanity check, of seed variance and of metric agreement (definitions in
``docs/metrics.md``). Pure functions of arrays; no model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from .metrics import kendall_tau_b


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``, tied values sharing the mean of their ranks."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=float)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return np.asarray(sums[inverse] / counts[inverse], dtype=float)


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's of the average ranks, so ties are handled);
    NaN for fewer than 2 values or a side whose values are all equal."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two 1-d arrays of one length, got {a.shape}, {b.shape}")
    if len(a) < 2:
        return math.nan
    ra, rb = average_ranks(a), average_ranks(b)
    if np.array_equal(ra, rb) and len(np.unique(ra)) > 1:
        return 1.0  # the same ranking: exactly 1, whatever the rounding below
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(np.sum(ra * ra) * np.sum(rb * rb)))
    if denominator == 0:
        return math.nan
    return float(np.clip(np.sum(ra * rb) / denominator, -1.0, 1.0))


def map_similarity(
    reference: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """``(signed, absolute)``: Spearman of two saliency maps of one text, and of their
    absolute values (a map that flips its signs but keeps what matters scores 1 there)."""
    a, b = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    return spearman(a, b), spearman(np.abs(a), np.abs(b))


def mean_pairwise(maps: Sequence[Sequence[float] | np.ndarray], absolute: bool = False) -> float:
    """Mean Spearman over every pair of ``maps`` (one text's maps from several runs, e.g.
    several seeds); pairs whose correlation is undefined are left out, NaN when none is
    defined. ``absolute``: of their absolute values."""
    if len(maps) < 2:
        raise ValueError("mean_pairwise needs at least two maps")
    arrays = [np.asarray(m, dtype=float) for m in maps]
    if absolute:
        arrays = [np.abs(a) for a in arrays]
    values = [spearman(a, b) for a, b in combinations(arrays, 2)]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def ranking_agreement(
    columns: Mapping[str, Sequence[float]], higher_better: Mapping[str, bool]
) -> dict[str, dict[str, float]]:
    """Kendall's tau-b between the rankings of the same items (methods) by each column
    (metric): ``matrix[a][b]``. A column is turned so that larger is better first
    (``higher_better[name]``), so +1 means two metrics order the methods alike. Symmetric,
    with 1 on the diagonal for a column that ranks (NaN for one whose values are all equal)."""
    names = list(columns)
    lengths = {len(columns[name]) for name in names}
    if len(lengths) > 1:
        raise ValueError(f"ranking_agreement needs columns of one length, got {sorted(lengths)}")
    oriented = {
        name: np.asarray(columns[name], dtype=float) * (1.0 if higher_better[name] else -1.0)
        for name in names
    }
    return {a: {b: kendall_tau_b(oriented[a], oriented[b]) for b in names} for a in names}
