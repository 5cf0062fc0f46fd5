"""Agreement, two kinds: between the benchmark's metrics, and of a sampling method with itself.

- :func:`metric_agreement`: metrics disagree (Chan et al., ACL 2022, "A comparative study of
  faithfulness metrics for model interpretability methods"). For every pair of the headline
  metrics (:data:`layersal.metrics.METRICS_SHOWN`), Kendall's tau-b between the rankings of
  the benchmark's methods each gives: by their mean over the texts, and per text (with a
  bootstrap CI over texts). Read from one benchmark run; no model work.
- :func:`run_seed_agreement`: every method that has a ``seed`` option (its schema says so:
  LIME, KernelSHAP, Shapley sampling, GradientSHAP, ...) is run with several seeds, and each
  text's maps are compared pairwise (mean Spearman, signed and absolute). 1 means the seed
  does not change the explanation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .benchmark import Benchmark, MethodSpec, bench_rows, content_scores, row_batches, settled_job
from .datasets import LabelledTexts
from .errors import InputError
from .job import Explainer
from .metrics import METRICS_SHOWN, bootstrap_ci
from .models import LoadedModel
from .saliency import method_schema
from .similarity import mean_pairwise, ranking_agreement

SEED_OPTION = "seed"
"""The option that makes a method a sampling one, for :func:`run_seed_agreement`."""


@dataclass
class MetricAgreement:
    """Kendall tau-b between the metrics' rankings of ``methods``: ``overall[a][b]`` by mean
    over the texts, ``per_text[a][b]`` the mean over texts of each text's tau, with its 95%
    bootstrap CI ``(mean, low, high)``. ``metrics`` are field names, ``titles`` theirs in
    the tables."""

    metrics: list[str]
    titles: list[str]
    methods: list[str]
    overall: dict[str, dict[str, float]]
    per_text: dict[str, dict[str, tuple[float, float, float]]]


def metric_agreement(
    bench: Benchmark, *, resamples: int = 1000, seed: int = 0
) -> MetricAgreement | None:
    """The agreement of the headline metrics over the benchmark's methods (those with
    results; ``None`` with fewer than 3, whose rankings say little). A metric some method has
    no finite value of (leave-one-out when it was off, log-odds of a score) is left out."""
    runs = [run for run in bench.runs if run.results]
    if len(runs) < 3:
        return None
    shown = [
        (key, title, better == "higher")
        for key, title, better in METRICS_SHOWN
        if all(math.isfinite(_mean(run.results, key)) for run in runs)
    ]
    if not shown:
        return None
    higher = {key: up for key, _, up in shown}
    overall = ranking_agreement(
        {key: [_mean(run.results, key) for run in runs] for key in higher}, higher
    )
    n_texts = min(len(run.results) for run in runs)
    taus: dict[str, dict[str, list[float]]] = {a: {b: [] for b in higher} for a in higher}
    for text in range(n_texts):
        columns = {key: [_value(run.results[text], key) for run in runs] for key in higher}
        matrix = ranking_agreement(columns, higher)
        for a in higher:
            for b in higher:
                taus[a][b].append(matrix[a][b])
    per_text = {
        a: {b: bootstrap_ci(taus[a][b], resamples=resamples, seed=seed) for b in higher}
        for a in higher
    }
    return MetricAgreement(
        metrics=list(higher),
        titles=[title for _, title, _ in shown],
        methods=[run.spec.label for run in runs],
        overall=overall,
        per_text=per_text,
    )


def _value(result: Any, key: str) -> float:
    value = getattr(result, key, None)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _mean(results: Sequence[Any], key: str) -> float:
    values = [v for v in (_value(r, key) for r in results) if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


@dataclass
class SeedAgreement:
    """One sampling method run with each of ``seeds``: per text, the mean Spearman over the
    pairs of its maps (signed scores, and absolute)."""

    label: str
    method: str
    seeds: list[int]
    signed: list[float] = field(default_factory=list)
    absolute: list[float] = field(default_factory=list)
    note: str = ""

    def summary(
        self, resamples: int = 1000, seed: int = 0
    ) -> dict[str, tuple[float, float, float]]:
        """``{"signed": (mean, low, high), "absolute": (...)}`` (95% bootstrap CI)."""
        return {
            "signed": bootstrap_ci(self.signed, resamples=resamples, seed=seed),
            "absolute": bootstrap_ci(self.absolute, resamples=resamples, seed=seed),
        }


def seeded_specs(specs: Sequence[MethodSpec]) -> list[MethodSpec]:
    """The specs whose method has a ``seed`` option (read from its schema)."""
    return [
        spec
        for spec in specs
        if any(option.name == SEED_OPTION for option in method_schema(spec.method))
    ]


def run_seed_agreement(
    lm: LoadedModel,
    data: LabelledTexts,
    specs: Sequence[MethodSpec],
    *,
    n_seeds: int = 3,
    batch_size: int = 32,
    calibration: Sequence[str] | None = None,
    on_progress: Callable[[str, int], None] | None = None,
) -> list[SeedAgreement]:
    """Each sampling spec (:func:`seeded_specs`) run with ``n_seeds`` seeds: its own seed (the
    spec's, else the method's default) and the next ``n_seeds - 1`` integers, on ``data``'s
    rows as the benchmark explains them (the model's prediction as target).
    ``on_progress(label, rows)`` after each seed's run."""
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 2:
        raise InputError(f"seed agreement needs at least 2 seeds, not {n_seeds}")
    chosen = seeded_specs(specs)
    if not chosen:
        return []
    rows = bench_rows(Explainer(lm, "gradient", batch_size=batch_size), data.texts)
    if not rows:
        raise InputError(f"nothing to run: {lm.name} finds no entity in the {len(data)} texts")
    planned = row_batches(lm, rows, batch_size)
    results = []
    for spec in chosen:
        default = next(o.default for o in method_schema(spec.method) if o.name == SEED_OPTION)
        base = spec.options.get(SEED_OPTION, default)
        if isinstance(base, bool) or not isinstance(base, int):
            raise InputError(f"{spec.label}: its seed must be an integer to count on from")
        seeds = [base + k for k in range(n_seeds)]
        result = SeedAgreement(spec.label, spec.method, seeds)
        maps = []
        try:
            for seed in seeds:
                options = {**spec.options, SEED_OPTION: seed}
                job, _ = settled_job(
                    lm, MethodSpec(spec.label, spec.method, options), rows, batch_size,
                    calibration,
                )  # fmt: skip
                maps.append(content_scores(job, planned)[0])
                if on_progress is not None:
                    on_progress(spec.label, len(rows))
        except InputError as exc:
            result.note = f"not run: {exc}"
            results.append(result)
            continue
        for text in range(len(rows)):
            own = [run[text] for run in maps]
            result.signed.append(mean_pairwise(own))
            result.absolute.append(mean_pairwise(own, absolute=True))
        results.append(result)
    return results
