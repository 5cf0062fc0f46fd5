"""The faithfulness benchmark: every method on a labelled dataset, with timings and CIs.

``run_benchmark`` explains the same texts with each method, scores every explanation with
:func:`layersal.metrics.faithfulness` (the model's own predicted class is the target), and
records passes and seconds per explanation. ``layer_analysis`` reads DLS at every layer,
``coherent`` and ``auto`` out of a run. Writing tables and plots is in :mod:`layersal.report.bench`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .datasets import LabelledTexts, label_indices
from .encoding import encode, model_input_names, select_rows
from .errors import InputError
from .evaluate import eval_predictor, score_batch
from .inputs import check_texts, item_length
from .job import Explainer
from .metrics import Faithfulness, summarise
from .models import LoadedModel
from .rows import PlannedRow, row_plan
from .saliency import checked, method_options, methods


@dataclass
class MethodSpec:
    """One benchmark row: a method with options, under a label."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodRun:
    """One method's results over the dataset."""

    spec: MethodSpec
    results: list[Faithfulness]
    layers: list[int | None]
    seconds: float
    forward_passes: float
    backward_passes: float
    coherence: dict[int, float] = field(default_factory=dict)
    note: str = ""

    def summary(
        self, resamples: int = 1000, seed: int = 0
    ) -> dict[str, tuple[float, float, float]]:
        return summarise(self.results, resamples=resamples, seed=seed) if self.results else {}

    @property
    def seconds_per_text(self) -> float:
        return self.seconds / max(1, len(self.results))


@dataclass
class Benchmark:
    """A whole benchmark run."""

    model: str
    data: str
    n_texts: int
    accuracy: float | None
    runs: list[MethodRun]
    settings: dict[str, Any]
    machine: dict[str, Any]
    task: str = "single_label"
    """What was explained; ``n_texts`` counts explained rows (a token classifier's entities,
    each text's top zero-shot label)."""
    score_scale: float | None = None
    """For a task that predicts a number: the standard deviation of the model's scores over the
    texts (sigma), which normalises its AOPCs (``docs/metrics.md``); ``None`` otherwise."""
    eval_model: str | None = None
    """The model whose predictions scored the explanations (``--eval-model``: an
    in-distribution copy; ``docs/metrics.md``), or ``None``: the explained model's own. Its
    accuracy is then the one in ``accuracy``."""


def parse_spec(text: str) -> MethodSpec:
    """``name`` or ``name:key=value,key=value`` (ints, floats, true/false, none parsed)."""
    name, _, rest = text.strip().partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"method option {item!r} in {text!r} needs key=value")
        options[key.strip()] = _parse_value(value.strip())
    checked(name, options)  # a bad spec fails here, before any model work
    return MethodSpec(text.strip(), name, options)


def _parse_value(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def expand_specs(names: Sequence[str], num_layers: int) -> list[MethodSpec]:
    """Method specs from the command line; ``all`` is every baseline plus DLS at every layer,
    ``coherent`` (the default) and ``auto``; ``layers`` is only the DLS layer sweep."""
    out: list[MethodSpec] = []
    for name in names:
        if name == "all":
            out += [parse_spec(m) for m in methods() if m != "dls"]
            out += _layer_sweep(num_layers)
        elif name == "layers":
            out += _layer_sweep(num_layers)
        else:
            out.append(parse_spec(name))
    unique: dict[str, MethodSpec] = {}
    for spec in out:
        unique.setdefault(spec.label, spec)  # the first of each label, in order
    return list(unique.values())


def _layer_sweep(num_layers: int) -> list[MethodSpec]:
    fixed = [parse_spec(f"dls:layer={layer}") for layer in range(num_layers + 1)]
    return fixed + [parse_spec("dls:layer=coherent"), parse_spec("dls:layer=auto")]


def run_benchmark(
    lm: LoadedModel,
    data: LabelledTexts,
    specs: Sequence[MethodSpec],
    *,
    batch_size: int = 32,
    metric_options: dict[str, Any] | None = None,
    calibration: Sequence[str] | None = None,
    on_progress: Callable[[str, int], None] | None = None,
    eval_model: LoadedModel | None = None,
) -> Benchmark:
    """Explain ``data`` with every spec and score each explanation.

    DLS runs decode only the layer they use (no per-layer report) unless their layer is
    ``coherent``, which needs every layer's coherence; that run gives the coherence table.

    ``calibration``: unlabelled texts on which ``layer=auto`` calibrates. Without them, auto
    is resolved as ``explain`` resolves it (the model card, the cache, else the first 64
    texts of ``data``; no labels either way). Each method is run once on one short text
    before it is timed, so one-time costs (lazy imports, first-call allocations) stay out of
    its seconds per text. ``on_progress(label, n_done)`` is called per batch.

    ``eval_model``: a model that shares ``lm``'s tokenizer and labels (an in-distribution copy,
    ``scripts/masked_finetune.py``) whose predictions score ``lm``'s explanations instead of
    ``lm``'s own (:func:`layersal.evaluate.eval_predictor`); the targets stay ``lm``'s.
    """
    if batch_size < 1:
        raise InputError(f"`batch_size` must be at least 1, not {batch_size}")
    metric_options = dict(metric_options or {})
    planner = Explainer(lm, "gradient", batch_size=batch_size)  # finds a task's rows
    rows = bench_rows(planner, data.texts)
    if not rows:
        raise InputError(
            f"nothing to benchmark: {lm.name} finds no entity in the {len(data)} texts"
        )
    # gold classes: only for a task whose rows' outputs are exclusive classes' probabilities
    exclusive = lm.task.probabilistic and not lm.task.several and not lm.task.hypotheses
    gold = label_indices(data.labels, lm.labels) if exclusive else None
    inputs = model_input_names(lm.model)
    predict = eval_predictor(lm, eval_model)
    order = sorted(range(len(rows)), key=lambda i: item_length(rows[i].item))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    encoded_batches = [
        encode(lm.tokenizer, [rows[i].item for i in b], lm.max_length, inputs) for b in batches
    ]
    row_targets = [
        None
        if any(rows[i].target is None for i in b)
        else torch.tensor([rows[i].target for i in b])
        for b in batches
    ]
    runs = []
    for spec in specs:
        job = Explainer(lm, spec.method, spec.options, batch_size=batch_size)
        prepared = job.settle(
            (lambda: [r.item for r in bench_rows(planner, list(calibration))])
            if calibration is not None
            else (lambda: [r.item for r in rows[:64]]),
            fresh=calibration is not None,
        )
        note = " ".join(
            str(v.get("reason", "")) for v in prepared.recorded.values() if isinstance(v, dict)
        )
        try:
            job.attribute(select_rows(encoded_batches[0], [0]))
        except InputError:
            pass
        results: list[Faithfulness | None] = [None] * len(rows)
        layers: list[int | None] = [None] * len(rows)
        coherence: dict[int, list[float]] = {}
        seconds = forward = backward = 0.0
        skipped = None
        for batch, encoded, targets in zip(batches, encoded_batches, row_targets):
            start = time.perf_counter()
            try:
                attribution = job.attribute(encoded, targets)
            except InputError as exc:
                skipped = f"not run: {exc}"
                break
            seconds += time.perf_counter() - start
            forward += attribution.forward_passes * len(batch)
            backward += attribution.backward_passes * len(batch)
            for layer, values in attribution.detail.coherence().items():
                coherence.setdefault(layer, []).extend(values)
            scored = score_batch(
                lm,
                encoded,
                attribution.scores,
                attribution.targets,
                labels=None if gold is None else [gold[i] for i in batch],
                predict=predict,
                **metric_options,
            )
            for row, index in enumerate(batch):
                results[index] = scored[row]
                layers[index] = attribution.layers[row]
            if on_progress is not None:
                on_progress(spec.label, len(batch))
        if skipped is not None:
            if on_progress is not None:
                on_progress(spec.label, len(rows) - sum(r is not None for r in results))
            runs.append(MethodRun(spec, [], [], 0.0, 0.0, 0.0, note=skipped))
            continue
        runs.append(
            MethodRun(
                spec=spec,
                results=[r for r in results if r is not None],
                layers=layers,
                seconds=seconds,
                forward_passes=forward / max(1, len(rows)),
                backward_passes=backward / max(1, len(rows)),
                coherence={layer: float(np.mean(v)) for layer, v in sorted(coherence.items())},
                note=note,
            )
        )
    return Benchmark(
        model=lm.name,
        data=data.source,
        n_texts=len(rows),
        accuracy=_accuracy(runs, gold),
        runs=runs,
        settings={"batch_size": batch_size, **metric_options},
        machine=machine_info(),
        task=lm.task.name,
        score_scale=None if lm.task.probabilistic else _score_scale(runs),
        eval_model=None if eval_model is None else eval_model.name,
    )


def bench_rows(job: Explainer, texts: Sequence[str]) -> list[PlannedRow]:
    """The rows a benchmark explains and scores: one per text, for the model's prediction;
    for a task whose rows look at a span or a label's hypothesis, the rows :func:`row_plan`
    gives (every predicted entity; each text's top zero-shot label)."""
    task = job.lm.task
    if not (task.focused or task.hypotheses):
        return [PlannedRow(text, None) for text in texts]
    items = check_texts(list(texts))
    return [row for own in row_plan(job, items, None) for row in own]


def _score_scale(runs: list[MethodRun]) -> float | None:
    """Standard deviation of the model's own score over the texts (every run sees the same)."""
    scored = next((run for run in runs if run.results), None)
    if scored is None or len(scored.results) < 2:
        return None
    return float(np.std([r.probability for r in scored.results], ddof=1))


def _accuracy(runs: list[MethodRun], gold: list[int] | None) -> float | None:
    scored = [run for run in runs if run.results]
    if gold is None or not scored:
        return None
    first = [r.deletion_accuracy for r in scored[0].results]
    if any(a is None for a in first):
        return None
    return float(np.mean([a[0] for a in first if a is not None]))


def machine_info() -> dict[str, Any]:
    """What ran the benchmark (for the tables)."""
    import os

    return {
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def layer_analysis(bench: Benchmark) -> list[dict[str, Any]]:
    """Every run of a method that takes a ``layer`` (DLS per fixed layer, ``coherent`` and
    ``auto``): layer(s) used, coherence and AOPC."""
    rows = []
    coherence = max((run.coherence for run in bench.runs), key=len, default={})
    fixed = {}
    for run in bench.runs:
        if "layer" not in method_options(run.spec.method) or not run.results:
            continue
        layer = run.spec.options.get("layer", "auto")
        used = sorted({l for l in run.layers if l is not None})
        aopc = float(np.mean([r.aopc_comprehensiveness for r in run.results]))
        if isinstance(layer, int):
            fixed[layer] = aopc
        rows.append(
            {
                "label": run.spec.label,
                "layer": layer,
                "layers_used": used,
                "coherence": coherence.get(used[0]) if len(used) == 1 else None,
                "aopc_comprehensiveness": aopc,
                "aopc_sufficiency": float(np.mean([r.aopc_sufficiency for r in run.results])),
                "deletion_area": float(np.mean([r.deletion_area for r in run.results])),
                "note": run.note,
            }
        )
    if fixed:
        best = max(fixed, key=lambda layer: fixed[layer])
        for row in rows:
            row["best_fixed_layer"] = best
            row["gap_to_best"] = row["aopc_comprehensiveness"] - fixed[best]
    return rows
