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

from .ceilings import BOUNDS, Ceiling, Normalised, ceiling_fraction, normalised, widened
from .datasets import LabelledTexts, label_indices
from .encoding import Encoded, encode, model_input_names, select_rows
from .errors import InputError
from .evaluate import bounds_batch, eval_predictor, score_batch
from .inputs import check_texts
from .job import Explainer
from .metrics import ERASER_BUDGETS, Faithfulness, bootstrap_ci, summarise
from .models import LoadedModel
from .rows import PlannedRow, row_plan
from .saliency import checked, method_options, methods
from .sharing import row_batches as shared_batches


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
class CeilingRun:
    """Beam-search ceilings of comprehensiveness and sufficiency AOPC on a subsample.

    ``rows`` index the benchmark's rows (and every :attr:`MethodRun.results`); ``found`` are
    the beam's bounds per text, ``bounds`` the same moved out to any method's own AOPC beyond
    them (:func:`layersal.ceilings.widened`), which is what methods are normalised by.
    """

    rows: list[int]
    beam: int
    found: list[Ceiling]
    bounds: list[Ceiling]
    seconds: float

    @property
    def forward_passes(self) -> float:
        """Distinct inputs through the model per text, the four searches together."""
        return float(np.mean([c.forward_passes for c in self.found])) if self.found else 0.0

    @property
    def beaten(self) -> dict[str, int]:
        """Per bound, on how many texts a method's own ordering went past the beam's."""
        return {
            name: sum(getattr(f, name) != getattr(b, name) for f, b in zip(self.found, self.bounds))
            for name in BOUNDS
        }

    def normalised(self, run: MethodRun) -> list[Normalised]:
        """``run``'s AOPCs on the subsample read against the bounds (texts whose target is
        not the one the bounds were searched for are left out)."""
        if not run.results:
            return []
        return [
            normalised(run.results[row], bound)
            for row, bound in zip(self.rows, self.bounds)
            if run.results[row].target == bound.target
        ]


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
    ceilings: CeilingRun | None = None
    """Beam-search bounds of the AOPCs on a subsample (``run_benchmark(ceilings=N)``)."""
    n_sources: int | None = None
    """How many texts (or pairs) of the data the ``n_texts`` rows came from (a token
    classifier's entities come from fewer texts; ``None``: not recorded)."""
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
    ceilings: int = 0,
    beam: int = 4,
    seed: int = 0,
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

    ``ceilings``: on a seeded random subsample of that many rows (``seed``), search the
    bounds of comprehensiveness and sufficiency AOPC with a beam of width ``beam``
    (:mod:`layersal.ceilings`), under the same budgets, units and hiding as the metrics, and
    read every method's AOPCs against them (:func:`ceiling_table`).
    ``eval_model``: a model that shares ``lm``'s tokenizer and labels (an in-distribution copy,
    ``scripts/masked_finetune.py``) whose predictions score ``lm``'s explanations instead of
    ``lm``'s own (:func:`layersal.evaluate.eval_predictor`); the targets stay ``lm``'s.
    """
    if batch_size < 1:
        raise InputError(f"`batch_size` must be at least 1, not {batch_size}")
    if ceilings < 0:
        raise InputError(f"`ceilings` is a number of texts, at least 0, not {ceilings}")
    if beam < 1:
        raise InputError(f"the beam width must be at least 1, not {beam}")
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
    predict = eval_predictor(lm, eval_model)
    planned = row_batches(lm, rows, batch_size)
    batches, encoded_batches, row_targets = planned.batches, planned.encoded, planned.targets
    runs = []
    for spec in specs:
        job, note = settled_job(lm, spec, rows, batch_size, calibration)
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
    ceiling_run = None
    if ceilings:
        picked = np.random.default_rng(seed).permutation(len(rows))[:ceilings]
        ceiling_run = _ceilings(
            lm, [rows[i] for i in sorted(picked)], sorted(int(i) for i in picked), runs, beam,
            batch_size, metric_options, predict, on_progress,
        )  # fmt: skip
    settings = {"batch_size": batch_size, **metric_options}
    if ceilings:
        settings |= {"ceilings": ceilings, "beam": beam, "seed": seed}
    return Benchmark(
        model=lm.name,
        data=data.source,
        n_texts=len(rows),
        n_sources=len(data),
        accuracy=_accuracy(runs, gold),
        runs=runs,
        settings=settings,
        machine=machine_info(),
        task=lm.task.name,
        score_scale=None if lm.task.probabilistic else _score_scale(runs),
        ceilings=ceiling_run,
        eval_model=None if eval_model is None else eval_model.name,
    )


@dataclass
class RowBatches:
    """A benchmark's rows in encoded batches, shortest first: ``batches[k]`` holds the indices
    (into ``rows``) of batch ``k``, ``encoded[k]`` its encoding and ``targets[k]`` its rows'
    own targets (``None``: explain the model's prediction)."""

    rows: list[PlannedRow]
    batches: list[list[int]]
    encoded: list[Encoded]
    targets: list[torch.Tensor | None]


def row_batches(lm: LoadedModel, rows: list[PlannedRow], batch_size: int) -> RowBatches:
    """Encode ``rows`` in batches of ``batch_size``, sorted by length to cut padding; a
    text's rows (its entities) in one batch, where they share its forward
    (:func:`layersal.sharing.row_batches`)."""
    inputs = model_input_names(lm.model)
    batches = shared_batches([row.item for row in rows], batch_size)
    encoded = [
        encode(lm.tokenizer, [rows[i].item for i in b], lm.max_length, inputs) for b in batches
    ]
    targets = [
        None
        if any(rows[i].target is None for i in b)
        else torch.tensor([rows[i].target for i in b])
        for b in batches
    ]
    return RowBatches(rows, batches, encoded, targets)


def settled_job(
    lm: LoadedModel,
    spec: MethodSpec,
    rows: list[PlannedRow],
    batch_size: int,
    calibration: Sequence[str] | None = None,
) -> tuple[Explainer, str]:
    """An :class:`Explainer` of ``spec`` settled as the benchmark settles it (``layer=auto``
    on ``calibration``'s rows, else as ``explain`` would on the first 64 rows), and the
    reasons it recorded for what it chose."""
    job = Explainer(lm, spec.method, spec.options, batch_size=batch_size)
    planner = Explainer(lm, "gradient", batch_size=batch_size)
    prepared = job.settle(
        (lambda: [r.item for r in bench_rows(planner, list(calibration))])
        if calibration is not None
        else (lambda: [r.item for r in rows[:64]]),
        fresh=calibration is not None,
    )
    note = " ".join(
        str(v.get("reason", "")) for v in prepared.recorded.values() if isinstance(v, dict)
    )
    return job, note


def content_scores(
    job: Explainer, planned: RowBatches, targets: Sequence[torch.Tensor | None] | None = None
) -> tuple[list[np.ndarray], list[torch.Tensor], list[torch.Tensor]]:
    """Every row's scores at its content tokens, in row order, from ``job``; with the targets
    each batch was explained for and the model's logits per batch. ``targets``: per batch
    (default: the rows' own, else the model's prediction)."""
    scores: list[np.ndarray | None] = [None] * len(planned.rows)
    explained, logits = [], []
    wanted = planned.targets if targets is None else targets
    for batch, encoded, target in zip(planned.batches, planned.encoded, wanted):
        attribution = job.attribute(encoded, target)
        values = attribution.scores.detach().float().cpu().numpy()
        for row, index in enumerate(batch):
            scores[index] = values[row, encoded.content[row].cpu().numpy().astype(bool)]
        explained.append(attribution.targets.detach().cpu())
        logits.append(attribution.logits.detach().float().cpu())
    return [s for s in scores if s is not None], explained, logits


def _ceilings(
    lm: LoadedModel,
    rows: list[PlannedRow],
    indices: list[int],
    runs: list[MethodRun],
    beam: int,
    batch_size: int,
    metric_options: dict[str, Any],
    predict: Any,
    on_progress: Callable[[str, int], None] | None,
) -> CeilingRun | None:
    """The bounds of the rows ``indices`` (their targets: those the methods explained)."""
    scored = [run for run in runs if run.results]
    if not scored:
        return None
    inputs = model_input_names(lm.model)
    found: list[Ceiling] = []
    start = time.perf_counter()
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        encoded = encode(lm.tokenizer, [r.item for r in chunk], lm.max_length, inputs)
        targets = torch.tensor([scored[0].results[i].target for i in indices[s : s + batch_size]])
        found += bounds_batch(
            lm,
            encoded,
            targets,
            beam=beam,
            predict=predict,
            level=metric_options.get("level", "token"),
            perturbation=metric_options.get("perturbation", "mask"),
            budgets=tuple(metric_options.get("budgets", ERASER_BUDGETS)),
        )
        if on_progress is not None:
            on_progress(f"ceilings (beam {beam})", len(chunk))
    seconds = time.perf_counter() - start
    bounds = [
        widened(
            ceiling,
            [run.results[i] for run in scored if run.results[i].target == ceiling.target],
        )
        for i, ceiling in zip(indices, found)
    ]
    return CeilingRun(indices, beam, found, bounds, seconds)


def ceiling_table(bench: Benchmark, resamples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Per method with results, on the ceiling subsample: its comprehensiveness and
    sufficiency AOPC, normalised AOPC (``(AOPC - lower) / (upper - lower)`` per text) and
    fraction of the comprehensiveness ceiling (``sum AOPC / sum upper``), each as
    ``(mean, ci_low, ci_high)``. Empty without ceilings."""
    ceilings = bench.ceilings
    if ceilings is None:
        return []
    rows = []
    for run in bench.runs:
        values = ceilings.normalised(run)
        if not values:
            continue
        stats = summarise(values, resamples=resamples, seed=seed)
        rows.append(
            {
                "label": run.spec.label,
                "n_texts": len(values),
                "aopc_comprehensiveness": stats["comprehensiveness_aopc"],
                "aopc_sufficiency": bootstrap_ci(
                    [run.results[i].aopc_sufficiency for i in ceilings.rows],
                    resamples=resamples,
                    seed=seed,
                ),
                "naopc_comprehensiveness": stats["naopc_comprehensiveness"],
                "naopc_sufficiency": stats["naopc_sufficiency"],
                "ceiling_fraction": ceiling_fraction(values, resamples=resamples, seed=seed),
            }
        )
    return rows


def ceiling_bounds(
    bench: Benchmark, resamples: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Mean [CI] over the subsample of each bound, as searched (``beam_*``) and as widened by
    the methods (``*``), and of the passes per text. Empty without ceilings."""
    ceilings = bench.ceilings
    if ceilings is None:
        return {}
    out = {}
    for name in BOUNDS:
        for prefix, listed in (("beam_", ceilings.found), ("", ceilings.bounds)):
            values = [getattr(c, name) for c in listed]
            out[prefix + name] = bootstrap_ci(values, resamples=resamples, seed=seed)
    out["forward_passes"] = bootstrap_ci(
        [c.forward_passes for c in ceilings.found], resamples=resamples, seed=seed
    )
    return out


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


@dataclass(frozen=True)
class FrontierPoint:
    """One benchmarked method on the cost-faithfulness plane: its passes per text (forward
    plus backward), its comprehensiveness and sufficiency AOPC (mean, CI low, CI high), and
    whether it is on the frontier (no other run is at least as faithful on comp. - suff. for
    no more passes)."""

    label: str
    method: str
    passes: float
    comprehensiveness: tuple[float, float, float]
    sufficiency: tuple[float, float, float]
    on_frontier: bool
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def curve(self) -> tuple[str, str]:
        """Points of one curve: the same method and the same options but numbers (a budget,
        a number of steps or samples varies along it)."""
        fixed = {
            k: v
            for k, v in self.options.items()
            if isinstance(v, bool) or not isinstance(v, (int, float))
        }
        return self.method, repr(sorted(fixed.items()))


def frontier(bench: Benchmark, resamples: int = 1000) -> list[FrontierPoint]:
    """Every run that has results as a :class:`FrontierPoint`, cheapest first. Runs of the
    same method (a budget sweep) are a curve in :func:`layersal.report.bench.plot_frontier`."""
    found = []
    for run in bench.runs:
        summary = run.summary(resamples=resamples)
        if "aopc_comprehensiveness" not in summary or "aopc_sufficiency" not in summary:
            continue
        found.append(
            (
                run,
                run.forward_passes + run.backward_passes,
                summary["aopc_comprehensiveness"],
                summary["aopc_sufficiency"],
            )
        )
    points = []
    for run, passes, comp, suff in sorted(found, key=lambda f: f[1]):
        value = comp[0] - suff[0]
        beaten = any(
            (p <= passes and c[0] - s[0] > value) or (p < passes and c[0] - s[0] >= value)
            for other, p, c, s in found
            if other is not run
        )
        points.append(
            FrontierPoint(
                run.spec.label,
                run.spec.method,
                passes,
                comp,
                suff,
                not beaten,
                dict(run.spec.options),
            )
        )
    return points
