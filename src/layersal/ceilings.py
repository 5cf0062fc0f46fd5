"""Ceilings of erasure AOPC: how high (and how low) comprehensiveness and sufficiency can go.

A beam search over the units to hide (Zhou & Shah's "solvability"; Edin et al.'s normalised
AOPC) finds, per text, an ordering with a comprehensiveness AOPC as high as it can and one as
low as it can, and likewise for sufficiency, under exactly the budgets, units and hiding of
:mod:`layersal.metrics`. A method's AOPC then reads against them: normalised,
``(AOPC - lower) / (upper - lower)``, and as a fraction of the ceiling, ``AOPC / upper``.
Model-agnostic and pure: the model is reached through ``predict``. Definitions and cost are
in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .metrics import (
    ERASER_BUDGETS,
    Faithfulness,
    PredictFn,
    Variants,
    budget_size,
    check_batch,
    check_options,
    predict_variants,
    units_of,
)

SEARCHES: tuple[tuple[str, str], ...] = (
    ("comprehensiveness", "upper"),
    ("comprehensiveness", "lower"),
    ("sufficiency", "upper"),
    ("sufficiency", "lower"),
)
"""The four searches per text: each metric's AOPC pushed up and pushed down."""
BOUNDS = tuple(f"{kind}_{direction}" for kind, direction in SEARCHES)
"""The :class:`Ceiling` fields the searches fill."""


Search = tuple[str, str]
Chosen = tuple[int, ...]
"""A set of units (sorted unit indices)."""
Chain = tuple[int, ...]
"""The units of a set in the order a search added them."""
Beam = dict[Chosen, tuple[float, Chain]]
"""A search's sets at one size, each with its best AOPC terms collected so far and chain."""


@dataclass
class Ceiling:
    """Bounds of one text's comprehensiveness and sufficiency AOPC (for class ``target``).

    ``chains`` holds, per bound (``"comprehensiveness_upper"``, ...), the units in the order
    the search added them (hidden for comprehensiveness, kept for sufficiency): ranking the
    units in that order gives that AOPC. ``forward_passes`` counts the distinct inputs of this
    text sent to ``predict``; ``beam`` is the beam width.
    """

    target: int
    n_units: int
    beam: int
    comprehensiveness_upper: float
    comprehensiveness_lower: float
    sufficiency_upper: float
    sufficiency_lower: float
    forward_passes: int
    chains: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of Python floats, ints and lists."""
        return asdict(self)


@dataclass
class Normalised:
    """One method's AOPCs on one text read against that text's bounds.

    ``naopc_*`` is ``(AOPC - lower) / (upper - lower)``, NaN where the bounds are equal (one
    unit, or a model that no hiding moves). For comprehensiveness 1 is the ceiling; for
    sufficiency (lower is better) 0 is. ``*_aopc`` and ``comprehensiveness_upper`` are kept
    for the fraction of the ceiling, a ratio of means over texts (:func:`ceiling_fraction`).
    """

    naopc_comprehensiveness: float
    naopc_sufficiency: float
    comprehensiveness_aopc: float
    comprehensiveness_upper: float


def beam_bounds(
    predict: PredictFn,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    content: torch.Tensor,
    targets: torch.Tensor,
    *,
    beam: int = 4,
    budgets: Sequence[float] = ERASER_BUDGETS,
    level: str = "token",
    word_ids: Sequence[Sequence[int | None]] | None = None,
    perturbation: str = "mask",
    mask_id: int | None = None,
    pad_id: int | None = None,
    batch_size: int = 64,
    token_type_ids: torch.Tensor | None = None,
    row_inputs: Mapping[str, torch.Tensor] | None = None,
) -> list[Ceiling]:
    """Beam-search bounds of every text's comprehensiveness and sufficiency AOPC.

    Same inputs and options as :func:`layersal.metrics.faithfulness_many` (without scores).
    A search grows a set of units one unit a step up to the largest budget's size; it keeps
    ``beam`` sets a step, ranked by the AOPC terms collected so far plus the current set's
    value counted for every budget still to come. Two orderings that reach the same set keep
    the better history, so a beam as wide as the number of sets of every size is exhaustive.
    Every step's candidates of every text and all four searches go through ``predict``
    together, each distinct perturbed input once.
    """
    if not isinstance(beam, int) or beam < 1:
        raise InputError(f"the beam width must be a whole number of at least 1, not {beam!r}")
    ids, attention, content_np, _, targets_np, _ = check_batch(
        input_ids, attention_mask, content, torch.zeros(input_ids.shape), targets, None
    )
    n = ids.shape[1]
    check_options(
        level, word_ids, len(ids), n, perturbation, mask_id, pad_id, "signed", budgets, 1,
        batch_size,
    )  # fmt: skip
    texts = [
        _Text(
            units_of(content_np[b], word_ids[b] if level == "word" and word_ids else None),
            budgets,
        )
        for b in range(len(ids))
    ]
    variants = Variants(n)
    original = [variants.slot(b, []) for b in range(len(ids))]
    probs = np.zeros((0, 0))

    def run_new() -> None:
        nonlocal probs
        start = len(probs)
        if start == len(variants.rows):
            return
        new = predict_variants(
            predict, ids, attention, np.array(variants.rows[start:]),
            np.stack(variants.hide[start:]), perturbation, mask_id, pad_id, batch_size,
            token_type_ids, row_inputs,
        )  # fmt: skip
        probs = new if start == 0 else np.concatenate([probs, new])

    run_new()
    if int(targets_np.max()) >= probs.shape[1] or int(targets_np.min()) < 0:
        raise InputError(f"targets must be class indices below {probs.shape[1]}")
    p0 = [float(probs[original[b], targets_np[b]]) for b in range(len(ids))]
    beams: list[dict[Search, Beam]] = [{s: {(): (0.0, ())} for s in SEARCHES} for _ in texts]
    for size in range(1, max(t.largest for t in texts) + 1):
        asked = [
            (b, search, grown, collected, chain, variants.slot(b, hidden))
            for b, text in enumerate(texts)
            if size <= text.largest
            for search in SEARCHES
            for grown, collected, chain, hidden in text.grown(beams[b][search], search[0])
        ]
        run_new()
        candidates: list[dict[Search, dict[Chosen, tuple[float, Chain, float]]]] = [
            {s: {} for s in SEARCHES} for _ in texts
        ]
        for b, search, grown, collected, chain, slot in asked:
            value = p0[b] - float(probs[slot, targets_np[b]])
            total = collected + texts[b].weight(size) * value
            kept = candidates[b][search]
            if grown not in kept or _better(search, total, kept[grown][0]):
                kept[grown] = (total, chain, total + value * texts[b].after(size))
        for b, text in enumerate(texts):
            if size <= text.largest:
                for search in SEARCHES:
                    beams[b][search] = _best(search, candidates[b][search], beam)
    passes = np.bincount(np.array(variants.rows), minlength=len(ids))
    results = []
    for b, text in enumerate(texts):
        bounds: dict[str, float] = {}
        chains: dict[str, list[int]] = {}
        for search in SEARCHES:
            best = _top(search, beams[b][search])
            name = f"{search[0]}_{search[1]}"
            bounds[name] = best[0] / len(budgets)
            chains[name] = [int(u) for u in best[1]]
        results.append(
            Ceiling(
                target=int(targets_np[b]),
                n_units=len(text.units),
                beam=beam,
                forward_passes=int(passes[b]),
                chains=chains,
                **bounds,
            )
        )
    return results


def _better(search: Search, value: float, than: float) -> bool:
    return value > than if search[1] == "upper" else value < than


def _top(search: Search, beam: Beam) -> tuple[float, Chain]:
    """The beam's set with the most extreme AOPC terms (after the last size, the AOPC's sum)."""
    sign = -1.0 if search[1] == "upper" else 1.0
    return min(beam.values(), key=lambda v: (sign * v[0], v[1]))


def _best(search: Search, candidates: dict[Chosen, tuple[float, Chain, float]], width: int) -> Beam:
    """The ``width`` candidates with the best ranking key (their last entry), ties to the
    smaller set of unit indices."""
    sign = -1.0 if search[1] == "upper" else 1.0
    ranked = sorted(candidates.items(), key=lambda item: (sign * item[1][2], item[0]))
    return {chosen: (total, chain) for chosen, (total, chain, _) in ranked[:width]}


class _Text:
    """One text's units and how much each set size weighs in the AOPC."""

    def __init__(self, units: list[np.ndarray], budgets: Sequence[float]) -> None:
        self.units = units
        sizes = [budget_size(b, len(units)) for b in budgets]
        self.counts = {k: sizes.count(k) for k in set(sizes)}
        self.largest = max(sizes)

    def weight(self, size: int) -> int:
        """How many budgets hide (or keep) exactly ``size`` units."""
        return self.counts.get(size, 0)

    def after(self, size: int) -> int:
        """How many budgets are still to come after ``size`` units."""
        return sum(c for k, c in self.counts.items() if k > size)

    def grown(
        self, beam: Beam, kind: str
    ) -> Iterator[tuple[Chosen, float, Chain, list[np.ndarray]]]:
        """Every set of ``beam`` grown by one unit, with its history and the positions its
        input hides: the set itself (comprehensiveness) or every other unit (sufficiency)."""
        for chosen, (collected, chain) in beam.items():
            for unit in range(len(self.units)):
                if unit in chosen:
                    continue
                grown = tuple(sorted((*chosen, unit)))
                hidden = grown if kind == "comprehensiveness" else self._rest(grown)
                yield grown, collected, (*chain, unit), [self.units[u] for u in hidden]

    def _rest(self, chosen: Chosen) -> Chosen:
        taken = set(chosen)
        return tuple(u for u in range(len(self.units)) if u not in taken)


def widened(ceiling: Ceiling, results: Iterable[Faithfulness]) -> Ceiling:
    """``ceiling`` with each bound moved out to any method's own AOPC beyond it (a method's
    ranking is an ordering too), so that every method's normalised AOPC lies in [0, 1]. The
    beam's chains stay with the beam's bounds (``chains`` is empty here)."""
    listed = [r for r in results if math.isfinite(r.aopc_comprehensiveness)]
    comp = [r.aopc_comprehensiveness for r in listed]
    suff = [r.aopc_sufficiency for r in listed if math.isfinite(r.aopc_sufficiency)]
    return Ceiling(
        target=ceiling.target,
        n_units=ceiling.n_units,
        beam=ceiling.beam,
        comprehensiveness_upper=max([ceiling.comprehensiveness_upper, *comp]),
        comprehensiveness_lower=min([ceiling.comprehensiveness_lower, *comp]),
        sufficiency_upper=max([ceiling.sufficiency_upper, *suff]),
        sufficiency_lower=min([ceiling.sufficiency_lower, *suff]),
        forward_passes=ceiling.forward_passes,
    )


def normalised(result: Faithfulness, bound: Ceiling) -> Normalised:
    """A method's AOPCs on one text against the text's bounds (see :class:`Normalised`)."""
    return Normalised(
        naopc_comprehensiveness=_between(
            result.aopc_comprehensiveness,
            bound.comprehensiveness_lower,
            bound.comprehensiveness_upper,
        ),
        naopc_sufficiency=_between(
            result.aopc_sufficiency, bound.sufficiency_lower, bound.sufficiency_upper
        ),
        comprehensiveness_aopc=result.aopc_comprehensiveness,
        comprehensiveness_upper=bound.comprehensiveness_upper,
    )


def _between(value: float, low: float, high: float) -> float:
    span = high - low
    return (value - low) / span if span > 1e-12 else math.nan


def ceiling_fraction(
    values: Sequence[Normalised], *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """The fraction of the ceiling over texts, ``sum(AOPC) / sum(upper)`` (a ratio of means,
    which a text with a tiny ceiling cannot blow up), with a percentile bootstrap interval
    over texts (resampled in pairs, ``numpy.random.default_rng(seed)``). All NaN without a
    positive total ceiling."""
    pairs = np.array(
        [
            (v.comprehensiveness_aopc, v.comprehensiveness_upper)
            for v in values
            if math.isfinite(v.comprehensiveness_aopc) and math.isfinite(v.comprehensiveness_upper)
        ],
        dtype=float,
    ).reshape(-1, 2)
    if len(pairs) == 0 or pairs[:, 1].sum() <= 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(pairs), size=(resamples, len(pairs)))
    tops = pairs[picks, 0].sum(axis=1)
    bottoms = pairs[picks, 1].sum(axis=1)
    ratios = np.divide(tops, bottoms, out=np.full(resamples, np.nan), where=bottoms > 0)
    tail = (1 - level) / 2
    low, high = np.nanquantile(ratios, [tail, 1 - tail])
    return float(pairs[:, 0].sum() / pairs[:, 1].sum()), float(low), float(high)
