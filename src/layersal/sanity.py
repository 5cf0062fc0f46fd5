"""The randomisation sanity check (Adebayo et al. 2018; for transformer text classifiers, Zafar
et al. 2021): does an explanation change when the model's learned weights are replaced by
random ones?

``run_sanity`` explains the same rows with each method on the trained model, then on copies
whose weights are re-initialised in a cascade from the top (:func:`layersal.randomise.cascade`:
the head, the head and the top block, ... all blocks, then everything), and reports each
method's similarity to its own explanation of the trained model: Spearman of signed and of
absolute scores per row (:func:`layersal.similarity.map_similarity`), summarised by the mean
and a bootstrap CI. Lower means the method depends on what the model learned; a method whose
explanation is unchanged on a fully random model ignores the weights.

Held fixed across stages, so that only the weights differ: the rows, the **target** (the
trained model's explained class: its prediction, or the row's own target), the method's
settled options (DLS's ``layer="auto"`` keeps the trained model's configuration, not one
recalibrated on random weights) and its seeds. The user's model is never changed: every stage
is a copy (:func:`layersal.randomise.randomised`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .benchmark import MethodSpec, bench_rows, content_scores, row_batches, settled_job
from .datasets import LabelledTexts
from .errors import InputError
from .job import Explainer
from .metrics import bootstrap_ci
from .models import LoadedModel
from .randomise import Stage, cascade, init_description, randomised
from .similarity import map_similarity

UNCHANGED = 1 - 1e-9
"""A row's similarity at or above this counts as an unchanged explanation."""


@dataclass
class StageResult:
    """One method at one stage: the similarity of each row's explanation to its explanation
    of the trained model (NaN where undefined: a map with all scores equal)."""

    stage: str
    signed: list[float]
    absolute: list[float]

    def summary(
        self, resamples: int = 1000, seed: int = 0
    ) -> dict[str, tuple[float, float, float]]:
        """``{"signed": (mean, low, high), "absolute": (...)}`` (95% bootstrap CI)."""
        return {
            "signed": bootstrap_ci(self.signed, resamples=resamples, seed=seed),
            "absolute": bootstrap_ci(self.absolute, resamples=resamples, seed=seed),
        }


@dataclass
class MethodSanity:
    """One method's similarities, stage by stage, and the options it ran with everywhere
    (settled on the trained model)."""

    label: str
    method: str
    options: dict[str, Any]
    stages: list[StageResult] = field(default_factory=list)
    note: str = ""

    @property
    def ignores_weights(self) -> bool:
        """Whether every row's explanation (signed scores' ranking) is the same on the fully
        randomised model as on the trained one: the method fails the check outright."""
        if not self.stages:
            return False
        last = [v for v in self.stages[-1].signed if math.isfinite(v)]
        return bool(last) and min(last) >= UNCHANGED


@dataclass
class Sanity:
    """A whole sanity check: ``stages`` in order (name, what they re-initialise), the share of
    rows whose prediction on each stage's model is the trained model's, and each method."""

    model: str
    data: str
    n_texts: int
    seed: int
    init: str
    stages: list[Stage]
    same_prediction: dict[str, float]
    methods: list[MethodSanity]


def run_sanity(
    lm: LoadedModel,
    data: LabelledTexts,
    specs: Sequence[MethodSpec],
    *,
    batch_size: int = 32,
    seed: int = 0,
    stages: Sequence[Stage] | None = None,
    calibration: Sequence[str] | None = None,
    on_progress: Callable[[str, int], None] | None = None,
) -> Sanity:
    """The randomisation check of every spec on ``data``'s rows (as :func:`run_benchmark`
    explains them). ``stages``: default the whole cascade of ``lm``'s model; ``seed``: of the
    re-initialisation (the same for every stage, so each stage re-draws the same head and
    blocks as the one before and adds the next). ``on_progress(label, rows)`` per batch."""
    if batch_size < 1:
        raise InputError(f"`batch_size` must be at least 1, not {batch_size}")
    planner = Explainer(lm, "gradient", batch_size=batch_size)
    rows = bench_rows(planner, data.texts)
    if not rows:
        raise InputError(f"nothing to check: {lm.name} finds no entity in the {len(data)} texts")
    stages = list(cascade(lm.model) if stages is None else stages)
    planned = row_batches(lm, rows, batch_size)
    jobs: list[Explainer | None] = []
    trained: list[list[np.ndarray]] = []
    targets: list[list[torch.Tensor]] = []
    notes: list[str] = []
    reference_logits = None
    for spec in specs:
        settled, note = settled_job(lm, spec, rows, batch_size, calibration)
        try:
            scores, explained, logits = content_scores(settled, planned)
        except InputError as exc:
            jobs.append(None)
            trained.append([])
            targets.append([])
            notes.append(f"not run: {exc}")
            continue
        _advance(on_progress, spec.label, len(rows))
        reference_logits = logits if reference_logits is None else reference_logits
        jobs.append(settled)
        trained.append(scores)
        targets.append(explained)
        notes.append(note)
    results = [
        MethodSanity(spec.label, spec.method, {} if job is None else job.applied_options, note=note)
        for spec, job, note in zip(specs, jobs, notes)
    ]
    same: dict[str, float] = {}
    for stage in stages:
        random_lm = randomised(lm, stage, seed)
        stage_logits = None
        for spec, job, reference, target, result in zip(specs, jobs, trained, targets, results):
            if job is None:
                continue
            scores, _, logits = content_scores(job.with_model(random_lm), planned, target)
            stage_logits = logits if stage_logits is None else stage_logits
            pairs = [map_similarity(a, b) for a, b in zip(reference, scores)]
            result.stages.append(
                StageResult(stage.name, [p[0] for p in pairs], [p[1] for p in pairs])
            )
            _advance(on_progress, spec.label, len(rows))
        if reference_logits is not None and stage_logits is not None:
            same[stage.name] = _same_prediction(lm, reference_logits, stage_logits)
        del random_lm  # one copy at a time
    return Sanity(
        model=lm.name,
        data=data.source,
        n_texts=len(rows),
        seed=seed,
        init=init_description(lm.model),
        stages=stages,
        same_prediction=same,
        methods=results,
    )


def _same_prediction(lm: LoadedModel, trained: list[Any], other: list[Any]) -> float:
    """Share of rows for which both models predict the same labels (the task's own reading of
    its outputs)."""
    task = lm.task
    agree = [
        task.predicted(task.outputs(a[row : row + 1])[0])
        == task.predicted(task.outputs(b[row : row + 1])[0])
        for a, b in zip(trained, other)
        for row in range(len(a))
    ]
    return float(np.mean(agree)) if agree else math.nan


def _advance(on_progress: Callable[[str, int], None] | None, label: str, rows: int) -> None:
    if on_progress is not None:
        on_progress(label, rows)
