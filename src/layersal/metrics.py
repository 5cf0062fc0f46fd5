"""Faithfulness of token saliency: hide what an explanation ranks highest and watch the model.

Model-agnostic and pure: the model is reached only through a ``predict`` function that maps
``(input_ids, attention_mask)`` to class probabilities. Definitions are in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .soft_erasure import (
    EmbeddingPredict,
    SoftVariants,
    keep_probabilities,
    predict_soft_variants,
    soft_importance,
)

PredictFn = Callable[..., torch.Tensor]
"""``predict(input_ids, attention_mask) -> (rows, classes)`` probabilities; called with a third
argument, ``token_type_ids``, when the batch has segment ids (pairs of texts), and with the
batch's ``row_inputs`` as keywords (a task's focus, :data:`layersal.tasks.FOCUS`)."""

PERTURBATIONS = ("mask", "delete", "pad")
RANKINGS = ("signed", "abs")
LEVELS = ("token", "word")
ERASER_BUDGETS = (0.01, 0.05, 0.10, 0.20, 0.50)
LOG_ODDS_BUDGET = 0.20
PROBABILITY_FLOOR = 1e-12
METRICS_SHOWN = (
    ("aopc_comprehensiveness", "comp. AOPC", "higher"),
    ("aopc_sufficiency", "suff. AOPC", "lower"),
    ("deletion_area", "deletion area", "lower"),
    ("insertion_area", "insertion area", "higher"),
    ("log_odds_20", "log-odds@20%", "lower"),
    ("kendall_loo", "Kendall tau LOO", "higher"),
    ("soft_comprehensiveness", "soft comp.", "higher"),
    ("soft_sufficiency", "soft suff.", "lower"),
)
"""The headline metrics of the benchmark tables and the reports: field, title, which way is
better (one table for every renderer)."""


@dataclass
class Faithfulness:
    """Faithfulness of one text's saliency for class ``target``.

    ``probability`` is p(target | x). ``n_units`` counts what was ranked and hidden: content
    tokens (token level) or words (word level). Dict keys are budgets (fractions of
    ``n_units``); curves have ``steps + 1`` points at fractions 0, 1/steps, ..., 1.
    ``forward_passes`` counts the distinct perturbed inputs of this text sent to ``predict``
    (and, for the ``soft`` part, to the embedding-level predict). The soft metrics are ``nan``
    unless the ``soft`` part was asked for.
    """

    target: int
    probability: float
    n_units: int
    comprehensiveness: dict[float, float]
    sufficiency: dict[float, float]
    aopc_comprehensiveness: float
    aopc_sufficiency: float
    deletion_curve: list[float]
    insertion_curve: list[float]
    deletion_accuracy: list[float] | None
    insertion_accuracy: list[float] | None
    deletion_area: float
    insertion_area: float
    log_odds_20: float
    kendall_loo: float | None
    loo_importance: list[float] | None
    forward_passes: int
    soft_comprehensiveness: float = math.nan
    soft_sufficiency: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of Python floats, ints and lists."""
        return asdict(self)


PARTS = ("comprehensiveness", "sufficiency", "curves", "log_odds", "loo", "soft")
"""What :func:`faithfulness_many` can compute; each part adds its own perturbed inputs."""
DEFAULT_PARTS = tuple(p for p in PARTS if p != "soft")
"""The parts computed unless asked otherwise: every part that needs only ``predict`` (``soft``
perturbs word embeddings, through an :class:`~layersal.soft_erasure.EmbeddingPredict`)."""


@dataclass
class _Plan:
    """Which of the batch's distinct perturbed inputs (slots of a :class:`Variants`) each
    metric of one text and one saliency map reads; a part not asked for reads none."""

    slots: set[int]
    original: int
    comprehensiveness: dict[float, int]
    sufficiency: dict[float, int]
    deletion: list[int]
    insertion: list[int]
    log_odds: int | None
    loo: list[int] | None
    soft_comprehensiveness: list[int | None] | None = None
    soft_sufficiency: list[int | None] | None = None
    """Slots of :class:`~layersal.soft_erasure.SoftVariants`, one per sample; ``None`` in the
    list where the variant is the unchanged input (its output is the original's)."""


def round_half_up(value: float) -> int:
    """Nearest integer, halves rounded up (Python's ``round`` rounds halves to even)."""
    return math.floor(value + 0.5 + 1e-9)


def budget_size(budget: float, n: int) -> int:
    """How many of ``n`` units a budget hides or keeps: ``max(1, round(budget * n))``, at most
    ``n``."""
    return min(n, max(1, round_half_up(budget * n)))


def step_size(step: int, steps: int, n: int) -> int:
    """Units hidden (deletion) or revealed (insertion) at curve point ``step`` of ``steps``:
    ``round(step / steps * n)``, computed exactly in integers."""
    return (2 * step * n + steps) // (2 * steps)


def units_of(content: np.ndarray, word_ids: Sequence[int | None] | None) -> list[np.ndarray]:
    """Positions hidden together: one per content token, or one per word when ``word_ids`` is
    given (content tokens without a word id form a unit each). Ordered by first position."""
    positions = np.flatnonzero(content)
    if word_ids is None:
        return [np.array([p]) for p in positions]
    groups: dict[tuple[str, int], list[int]] = {}
    for p in positions:
        word = word_ids[int(p)]
        groups.setdefault(("token", int(p)) if word is None else ("word", word), []).append(int(p))
    return [np.array(g) for g in groups.values()]


def rank_units(scores: np.ndarray, rank_by: str) -> np.ndarray:
    """Unit indices, most salient first; ties keep position order (stable sort)."""
    key = np.abs(scores) if rank_by == "abs" else scores
    return np.argsort(-key, kind="stable")


def perturb(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    hide: torch.Tensor,
    perturbation: str,
    mask_id: int | None = None,
    pad_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide the ``hide`` positions of each row.

    ``mask``: ids become ``mask_id``. ``pad``: ids become ``pad_id`` and attention 0.
    ``delete``: hidden ids are dropped and the attended rest packed to the left (order kept),
    the tail filled with ``pad_id`` at attention 0; the length stays ``n``.
    """
    hide = hide.bool()
    if perturbation not in PERTURBATIONS:
        raise InputError(
            f"perturbation must be one of {', '.join(PERTURBATIONS)}, not {perturbation!r}"
        )
    needed = mask_id if perturbation == "mask" else pad_id
    if needed is None:
        raise InputError(f"perturbation {perturbation!r} needs the id of its replacement token")
    if perturbation == "mask":
        return input_ids.masked_fill(hide, needed), attention_mask.clone()
    if perturbation == "pad":
        return input_ids.masked_fill(hide, needed), attention_mask.masked_fill(hide, 0)
    order, kept = _packed(attention_mask, hide)
    ids = input_ids.gather(1, order).masked_fill(~kept, needed)
    return ids, kept.to(attention_mask.dtype)


def _packed(attention_mask: torch.Tensor, hide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``delete``: the column order that packs the kept positions to the left, and which
    columns hold a kept position after it."""
    keep = attention_mask.bool() & ~hide.bool()
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    return order, keep.gather(1, order)


def perturb_token_types(
    token_type_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    hide: torch.Tensor,
    perturbation: str,
) -> torch.Tensor:
    """The segment ids (``token_type_ids``) that go with :func:`perturb`'s ids: unchanged where
    positions stay, moved with their tokens by ``delete`` (0 in the freed tail)."""
    if perturbation != "delete":
        return token_type_ids
    order, kept = _packed(attention_mask, hide)
    return token_type_ids.gather(1, order).masked_fill(~kept, 0)


def trapezoid_area(curve: Sequence[float]) -> float:
    """Trapezoidal area under ``curve`` sampled at evenly spaced x in [0, 1]."""
    y = np.asarray(curve, dtype=float)
    if len(y) < 2:
        return float("nan")
    return float((y.sum() - (y[0] + y[-1]) / 2) / (len(y) - 1))


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-b (tie-corrected); NaN for fewer than 2 values or a constant side."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"kendall_tau_b needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return float("nan")
    upper = np.triu_indices(len(a), k=1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    pairs = len(da)
    denominator = math.sqrt((pairs - np.sum(da == 0)) * (pairs - np.sum(db == 0)))
    if denominator == 0:
        return float("nan")
    return float(np.sum(da * db) / denominator)


def bootstrap_ci(
    values: Iterable[float], *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval of the finite ``values``.

    Resamples with replacement ``resamples`` times from a generator seeded by ``seed``, so the
    interval is reproducible. All NaN when no value is finite.
    """
    data = np.asarray(list(values), dtype=float)
    data = data[np.isfinite(data)]
    if len(data) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(data.mean()), float(low), float(high)


def summarise(
    results: Sequence[Any], *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float, float]]:
    """``{metric: (mean, ci_low, ci_high)}`` over texts, for every float field of the result
    dataclasses (:class:`Faithfulness`, or plausibility results).

    Per-budget dicts become ``name@budget`` keys (``comprehensiveness@0.2``); ints, lists and
    ``None`` fields are left out; NaN values (an undefined Kendall tau) are dropped per metric,
    and a metric with no finite value at all (a part that was not computed) is left out.
    """
    columns: dict[str, list[float]] = {}
    for result in results:
        for f in fields(result):
            value = getattr(result, f.name)
            if isinstance(value, float):
                columns.setdefault(f.name, []).append(value)
            elif isinstance(value, dict):
                for key, item in value.items():
                    columns.setdefault(f"{f.name}@{key:g}", []).append(float(item))
    return {
        name: bootstrap_ci(column, resamples=resamples, seed=seed, level=level)
        for name, column in columns.items()
        if np.isfinite(column).any()
    }


def faithfulness(
    predict: PredictFn,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    content: torch.Tensor,
    scores: torch.Tensor,
    targets: torch.Tensor,
    **options: Any,
) -> list[Faithfulness]:
    """Faithfulness metrics of saliency ``scores`` for a padded batch of B texts: every part
    of :func:`faithfulness_many` for one saliency map (its options: ``labels``, ``word_ids``,
    ``level``, ``perturbation``, ``mask_id``, ``pad_id``, ``rank_by``, ``budgets``, ``steps``,
    ``loo``, ``batch_size``, ``token_type_ids``)."""
    return faithfulness_many(
        predict, input_ids, attention_mask, content, [scores], targets, **options
    )[0]


def faithfulness_many(
    predict: PredictFn,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    content: torch.Tensor,
    score_sets: Sequence[torch.Tensor],
    targets: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    word_ids: Sequence[Sequence[int | None]] | None = None,
    level: str = "token",
    perturbation: str = "mask",
    mask_id: int | None = None,
    pad_id: int | None = None,
    rank_by: str = "signed",
    budgets: Sequence[float] = ERASER_BUDGETS,
    steps: int = 10,
    loo: bool = True,
    parts: Sequence[str] = DEFAULT_PARTS,
    batch_size: int = 64,
    token_type_ids: torch.Tensor | None = None,
    row_inputs: Mapping[str, torch.Tensor] | None = None,
    soft_predict: EmbeddingPredict | None = None,
    soft_samples: int = 1,
    seed: int = 0,
) -> list[list[Faithfulness]]:
    """Faithfulness metrics of several saliency maps of the same padded batch of B texts:
    ``result[s][b]`` for map ``s`` and text ``b``. The one implementation of the metrics.

    ``content`` marks the tokens that may be hidden (never padding or special tokens); each
    map in ``score_sets`` is read at content positions only; ``targets`` is the class explained
    per text (usually the predicted one); ``labels`` (gold classes) adds accuracy curves.
    ``level="word"`` ranks and hides whole words (``word_ids`` as from a fast tokenizer; a
    word's score is the sum of its tokens'). ``perturbation`` is ``mask`` (needs ``mask_id``),
    ``delete`` or ``pad`` (need ``pad_id``). ``parts`` chooses what is computed (of
    :data:`PARTS`; ``loo`` too must be true for leave-one-out importance and its Kendall tau,
    one extra input per unit); fields of parts left out are ``nan`` or empty. Every distinct
    perturbed input of the batch goes through ``predict`` once, however many maps, budgets or
    metrics share it, in chunks of ``batch_size`` rows mixing texts. ``token_type_ids`` (pairs
    of texts) go to ``predict`` with each perturbed input; a pair's separator is never content,
    so it is never hidden. ``row_inputs`` (``(B, n)`` each, per position) go to ``predict`` as
    keywords, cut and moved with their rows as the segment ids are.

    The ``soft`` part (not among the defaults, :data:`DEFAULT_PARTS`) needs ``soft_predict``,
    the model at its word embeddings; it averages ``soft_samples`` Bernoulli draws per text,
    seeded by ``seed`` and the text's ids (:mod:`layersal.soft_erasure`).
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise InputError(f"unknown metric part {unknown[0]!r}; parts are {', '.join(PARTS)}")
    if "soft" in parts and soft_predict is None:
        raise InputError(
            "the soft metrics need the model at its word embeddings (soft_predict); "
            "evaluate.score_batch gives it"
        )
    if soft_samples < 1:
        raise InputError(f"soft_samples must be at least 1, not {soft_samples}")
    if not score_sets:
        raise InputError("no saliency maps to score")
    checked = [
        check_batch(input_ids, attention_mask, content, scores, targets, labels)
        for scores in score_sets
    ]
    ids, attention, content_np, _, targets_np, labels_np = checked[0]
    n = ids.shape[1]
    check_options(
        level,
        word_ids,
        len(ids),
        n,
        perturbation,
        mask_id,
        pad_id,
        rank_by,
        budgets,
        steps,
        batch_size,
    )
    units = [
        units_of(content_np[b], word_ids[b] if level == "word" and word_ids is not None else None)
        for b in range(len(ids))
    ]
    variants = Variants(n)
    soft = SoftVariants()
    planned = []
    for _, _, _, scores_np, _, _ in checked:
        unit_scores = [np.array([scores_np[b, u].sum() for u in us]) for b, us in enumerate(units)]
        plans = [
            _plan(variants, b, units[b], rank_units(unit_scores[b], rank_by), budgets, steps,
                  parts, loo)
            for b in range(len(ids))
        ]  # fmt: skip
        if "soft" in parts:
            for b, plan in enumerate(plans):
                _plan_soft(plan, soft, b, n, units[b], unit_scores[b], rank_by, soft_samples)
        planned.append((plans, unit_scores))
    probs = predict_variants(
        predict, ids, attention, np.array(variants.rows), np.stack(variants.hide), perturbation,
        mask_id, pad_id, batch_size, token_type_ids, row_inputs,
    )  # fmt: skip
    if int(targets_np.max()) >= probs.shape[1] or int(targets_np.min()) < 0:
        raise InputError(f"targets must be class indices below {probs.shape[1]}")
    soft_probs = (
        predict_soft_variants(
            soft_predict, ids, attention, soft, seed, batch_size, token_type_ids, row_inputs
        )
        if soft_predict is not None and soft.rows
        else np.zeros((0, probs.shape[1]))
    )
    return [
        [
            _result(
                plans[b],
                probs,
                int(targets_np[b]),
                None if labels_np is None else int(labels_np[b]),
                unit_scores[b],
                rank_by,
                soft_probs,
            )
            for b in range(len(ids))
        ]
        for plans, unit_scores in planned
    ]


class Variants:
    """Distinct perturbed inputs of a batch: each (row, hidden positions) is kept once, so a
    variant that several rankings or budgets share goes through the model once."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.hide: list[np.ndarray] = []
        self.rows: list[int] = []
        self._seen: dict[tuple[int, bytes], int] = {}

    def slot(self, row: int, positions: Iterable[np.ndarray]) -> int:
        """Index of the variant of ``row`` that hides ``positions`` (arrays of positions)."""
        mask = np.zeros(self.n, dtype=bool)
        for p in positions:
            mask[p] = True
        key = (row, mask.tobytes())
        if key not in self._seen:
            self._seen[key] = len(self.hide)
            self.hide.append(mask)
            self.rows.append(row)
        return self._seen[key]


def _plan(
    variants: Variants,
    row: int,
    units: list[np.ndarray],
    order: np.ndarray,
    budgets: Sequence[float],
    steps: int,
    parts: Sequence[str],
    loo: bool,
) -> _Plan:
    """The slots one text's metrics read, for one ranking of its units (``order``)."""
    used: set[int] = set()

    def slot(hidden_units: Iterable[int]) -> int:
        index = variants.slot(row, (units[u] for u in hidden_units))
        used.add(index)
        return index

    m = len(units)
    ranked = [int(u) for u in order]
    curves = "curves" in parts
    return _Plan(
        slots=used,
        original=slot([]),
        comprehensiveness={b: slot(ranked[: budget_size(b, m)]) for b in budgets}
        if "comprehensiveness" in parts
        else {},
        sufficiency={b: slot(ranked[budget_size(b, m) :]) for b in budgets}
        if "sufficiency" in parts
        else {},
        deletion=[slot(ranked[: step_size(i, steps, m)]) for i in range(steps + 1)]
        if curves
        else [],
        insertion=[slot(ranked[step_size(i, steps, m) :]) for i in range(steps + 1)]
        if curves
        else [],
        log_odds=slot(ranked[: budget_size(LOG_ODDS_BUDGET, m)]) if "log_odds" in parts else None,
        loo=[slot([u]) for u in range(m)] if loo and "loo" in parts else None,
    )


def _plan_soft(
    plan: _Plan,
    soft: SoftVariants,
    row: int,
    n: int,
    units: list[np.ndarray],
    unit_scores: np.ndarray,
    rank_by: str,
    samples: int,
) -> None:
    """Add the soft variants one text's soft metrics read, for one saliency map, to ``plan``;
    a variant that keeps every element (nothing to hide) is the original input, no pass."""
    importance = soft_importance(unit_scores, rank_by)
    for kind in ("comprehensiveness", "sufficiency"):
        keep = keep_probabilities(n, units, importance, kind)
        unchanged = bool((keep == 1.0).all())
        slots = [None if unchanged else soft.slot(row, s, keep) for s in range(samples)]
        setattr(plan, f"soft_{kind}", slots)


def erasure_aopc_many(
    predict: PredictFn,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    content: torch.Tensor,
    score_sets: Sequence[torch.Tensor],
    targets: torch.Tensor,
    *,
    mask_id: int,
    budgets: Sequence[float] = ERASER_BUDGETS,
    sufficiency: bool = True,
    batch_size: int = 64,
    token_type_ids: torch.Tensor | None = None,
    row_inputs: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, np.ndarray]:
    """Comprehensiveness (and sufficiency) AOPC of several saliency maps of the same batch,
    as arrays ``(S, B)``: :func:`faithfulness_many` with only those parts (token level,
    ``[MASK]``, signed ranking). Used to compare many configurations cheaply
    (``layer="auto"``)."""
    kinds = ("comprehensiveness", "sufficiency") if sufficiency else ("comprehensiveness",)
    results = faithfulness_many(
        predict,
        input_ids,
        attention_mask,
        content,
        score_sets,
        targets,
        mask_id=mask_id,
        budgets=budgets,
        parts=kinds,
        loo=False,
        batch_size=batch_size,
        token_type_ids=token_type_ids,
        row_inputs=row_inputs,
    )
    return {
        kind: np.array([[getattr(r, f"aopc_{kind}") for r in per_map] for per_map in results])
        for kind in kinds
    }


def predict_variants(
    predict: PredictFn,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: np.ndarray,
    hide: np.ndarray,
    perturbation: str,
    mask_id: int | None,
    pad_id: int | None,
    batch_size: int,
    token_type_ids: torch.Tensor | None = None,
    row_inputs: Mapping[str, torch.Tensor] | None = None,
) -> np.ndarray:
    """Probabilities ``(V, C)`` of every perturbed variant, ``batch_size`` rows per call.

    Variants go through ``predict`` shortest text first, and each call drops the padding
    columns after its longest row's last attended position: a batch of texts of mixed
    lengths is padded to the longest, and the perturbed passes dominate the metrics' cost.
    """
    attended = attention_mask.cpu().bool()
    positions = torch.arange(attended.shape[1])
    ends = torch.where(attended, positions + 1, 0).max(dim=1).values.numpy()
    order = np.argsort(ends[rows], kind="stable")
    out = np.zeros((len(rows), 0))
    for start in range(0, len(rows), batch_size):
        picked = order[start : start + batch_size]
        chunk = torch.from_numpy(rows[picked])
        ids, mask = perturb(
            input_ids[chunk],
            attention_mask[chunk],
            torch.from_numpy(hide[picked]),
            perturbation,
            mask_id,
            pad_id,
        )
        end = max(int(ends[rows[picked]].max()), 1)
        extra = []
        if token_type_ids is not None:
            hidden = torch.from_numpy(hide[picked])
            types = perturb_token_types(
                token_type_ids[chunk], attention_mask[chunk], hidden, perturbation
            )
            extra = [types[:, :end]]
        hidden = torch.from_numpy(hide[picked])
        keywords = {
            name: perturb_token_types(value[chunk], attention_mask[chunk], hidden, perturbation)[
                :, :end
            ]
            for name, value in (row_inputs or {}).items()
        }
        with torch.no_grad():
            probs = predict(ids[:, :end], mask[:, :end], *extra, **keywords)
        if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or len(probs) != len(chunk):
            raise InputError(
                f"predict must return a (rows, classes) tensor; for {len(chunk)} rows it returned "
                f"{getattr(probs, 'shape', type(probs).__name__)}"
            )
        if out.shape[1] == 0:
            out = np.zeros((len(rows), probs.shape[1]))
        out[picked] = probs.detach().to("cpu", torch.float64).numpy()
    return out


def _result(
    plan: _Plan,
    probs: np.ndarray,
    target: int,
    label: int | None,
    unit_scores: np.ndarray,
    rank_by: str,
    soft_probs: np.ndarray | None = None,
) -> Faithfulness:
    p = probs[:, target]
    p0 = float(p[plan.original])
    soft = {}
    for kind in ("comprehensiveness", "sufficiency"):
        slots = getattr(plan, f"soft_{kind}")
        if slots is not None and soft_probs is not None:
            kept = [p0 if i is None else float(soft_probs[i, target]) for i in slots]
            soft[kind] = p0 - float(np.mean(kept))
    soft_passes = sum(
        len({i for i in getattr(plan, f"soft_{kind}") or [] if i is not None})
        for kind in ("comprehensiveness", "sufficiency")
    )
    comprehensiveness = {b: p0 - float(p[i]) for b, i in plan.comprehensiveness.items()}
    sufficiency = {b: p0 - float(p[i]) for b, i in plan.sufficiency.items()}
    deletion = [float(p[i]) for i in plan.deletion]
    insertion = [float(p[i]) for i in plan.insertion]
    correct = None if label is None or not plan.deletion else probs.argmax(axis=1) == label
    loo_importance = None if plan.loo is None else [p0 - float(p[i]) for i in plan.loo]
    kendall = None
    if loo_importance is not None:
        if rank_by == "abs":
            kendall = kendall_tau_b(np.abs(unit_scores), np.abs(loo_importance))
        else:
            kendall = kendall_tau_b(unit_scores, loo_importance)
    return Faithfulness(
        target=target,
        probability=p0,
        n_units=len(unit_scores),
        comprehensiveness=comprehensiveness,
        sufficiency=sufficiency,
        aopc_comprehensiveness=_mean(comprehensiveness.values()),
        aopc_sufficiency=_mean(sufficiency.values()),
        deletion_curve=deletion,
        insertion_curve=insertion,
        deletion_accuracy=None if correct is None else [float(correct[i]) for i in plan.deletion],
        insertion_accuracy=None if correct is None else [float(correct[i]) for i in plan.insertion],
        deletion_area=trapezoid_area(deletion) if deletion else math.nan,
        insertion_area=trapezoid_area(insertion) if insertion else math.nan,
        log_odds_20=math.nan
        if plan.log_odds is None
        else math.log(max(float(p[plan.log_odds]), PROBABILITY_FLOOR))
        - math.log(max(p0, PROBABILITY_FLOOR)),
        kendall_loo=kendall,
        loo_importance=loo_importance,
        forward_passes=len(plan.slots) + soft_passes,
        soft_comprehensiveness=soft.get("comprehensiveness", math.nan),
        soft_sufficiency=soft.get("sufficiency", math.nan),
    )


def _mean(values: Iterable[float]) -> float:
    listed = list(values)
    return float(np.mean(listed)) if listed else math.nan


def check_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    content: torch.Tensor,
    scores: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Shapes and consistency of the batch; CPU copies for perturbing, numpy for ranking."""
    ids = torch.as_tensor(input_ids).long().cpu()
    if ids.ndim != 2:
        raise InputError(f"input_ids must be (B, n), got shape {tuple(ids.shape)}")
    shape = tuple(ids.shape)
    attention = torch.as_tensor(attention_mask).long().cpu()
    content_np = torch.as_tensor(content).bool().cpu().numpy()
    scores_np = torch.as_tensor(scores).detach().double().cpu().numpy()
    others = (("attention_mask", attention), ("content", content_np), ("scores", scores_np))
    for name, array in others:
        if tuple(array.shape) != shape:
            raise InputError(
                f"{name} must have the shape of input_ids {shape}, got {tuple(array.shape)}"
            )
    if (content_np & (attention.numpy() == 0)).any():
        raise InputError("content marks a position whose attention_mask is 0")
    empty = np.flatnonzero(~content_np.any(axis=1))
    if len(empty):
        raise InputError(f"text {int(empty[0])} has no content tokens to perturb")
    if not np.isfinite(scores_np[content_np]).all():
        raise InputError("scores must be finite at content positions")
    targets_np = torch.as_tensor(targets).long().cpu().numpy().reshape(-1)
    if len(targets_np) != shape[0]:
        raise InputError(f"got {len(targets_np)} targets for {shape[0]} texts")
    labels_np = None
    if labels is not None:
        labels_np = torch.as_tensor(labels).long().cpu().numpy().reshape(-1)
        if len(labels_np) != shape[0]:
            raise InputError(f"got {len(labels_np)} labels for {shape[0]} texts")
    return ids, attention, content_np, scores_np, targets_np, labels_np


def check_options(
    level: str,
    word_ids: Sequence[Sequence[int | None]] | None,
    batch: int,
    n: int,
    perturbation: str,
    mask_id: int | None,
    pad_id: int | None,
    rank_by: str,
    budgets: Sequence[float],
    steps: int,
    batch_size: int,
) -> None:
    """The metric options, checked once: a clear error for each user mistake."""
    if level not in LEVELS:
        raise InputError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    if level == "word":
        if word_ids is None:
            raise InputError('level="word" needs word_ids')
        if len(word_ids) != batch or any(len(w) != n for w in word_ids):
            raise InputError(f"word_ids must hold {batch} lists of {n} entries")
    if perturbation not in PERTURBATIONS:
        raise InputError(
            f"perturbation must be one of {', '.join(PERTURBATIONS)}, not {perturbation!r}"
        )
    if perturbation == "mask" and mask_id is None:
        raise InputError('perturbation="mask" needs mask_id (the [MASK] id, or [UNK] without one)')
    if perturbation in ("delete", "pad") and pad_id is None:
        raise InputError(f'perturbation="{perturbation}" needs pad_id')
    if rank_by not in RANKINGS:
        raise InputError(f"rank_by must be one of {', '.join(RANKINGS)}, not {rank_by!r}")
    if not budgets or any(not 0 < b <= 1 for b in budgets):
        raise InputError(f"budgets must be fractions in (0, 1], got {list(budgets)}")
    if steps < 1:
        raise InputError(f"steps must be at least 1, not {steps}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
