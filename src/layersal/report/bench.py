"""Benchmark outputs: results.json, a markdown table, and PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..agreement import MetricAgreement, SeedAgreement, metric_agreement
from ..benchmark import (
    Benchmark,
    FrontierPoint,
    ceiling_bounds,
    ceiling_table,
    frontier,
    layer_analysis,
)
from ..metrics import METRICS_SHOWN
from ..outputs import writable_folder
from ..sanity import Sanity
from ..tasks import TASKS


def _cell(stat: tuple[float, float, float] | None) -> str:
    if stat is None or math.isnan(stat[0]):  # not defined here (log-odds of a score)
        return "-"
    mean, low, high = stat
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _counted(bench: Benchmark) -> str:
    """What the rows were: ``60 texts``, or ``191 entities of 60 texts`` where a text gave
    several rows (or none)."""
    sources = bench.n_sources
    if sources is None or (sources == bench.n_texts and not TASKS[bench.task].focused):
        return f"{bench.n_texts} texts"
    rows = "entities" if TASKS[bench.task].focused else "rows"
    return f"{bench.n_texts} {rows} of {sources} text{'s' if sources != 1 else ''}"


def markdown(bench: Benchmark, resamples: int = 1000) -> str:
    """Method x metric table (mean [95% bootstrap CI]), the DLS layer table and, with
    ceilings, the bounds and every method's normalised AOPC and fraction of the ceiling. A
    metric no method has a value for (soft metrics not asked for, log-odds of a score) gets
    no column."""
    summaries = {id(run): run.summary(resamples=resamples) for run in bench.runs if run.results}
    shown = [
        (key, title, better)
        for key, title, better in METRICS_SHOWN
        if any(key in summary for summary in summaries.values())
    ]
    head = ["method"] + [f"{title} ({better} better)" for _, title, better in shown]
    scale = bench.score_scale
    if scale:
        head += ["comp. AOPC / sigma (higher better)", "suff. AOPC / sigma (lower better)"]
    head += ["fwd/expl", "bwd/expl", "s/expl"]
    target = TASKS[bench.task].explained + (
        f" (sigma = {scale:.3f} over these texts; AOPCs in its units)" if scale else ""
    )
    judge = bench.eval_model
    lines = [
        f"Model `{bench.model}`, data `{bench.data}`, {_counted(bench)}"
        + (
            f", {'evaluation ' if judge else ''}model accuracy {bench.accuracy:.3f}"
            if bench.accuracy is not None
            else ""
        )
        + f". Target: {target}. Mean [95% bootstrap CI]."
        + (
            f" Metrics scored with the predictions of `{judge}` (an in-distribution copy; "
            f"targets and explanations are `{bench.model}`'s)."
            if judge
            else ""
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    skipped = [run for run in bench.runs if not run.results]
    for run in bench.runs:
        if not run.results:
            continue
        summary = summaries[id(run)]
        cells = [run.spec.label] + [_cell(summary.get(key)) for key, _, _ in shown]
        if scale:
            for key in ("aopc_comprehensiveness", "aopc_sufficiency"):
                stat = summary.get(key)
                mean, low, high = stat if stat is not None else (0.0, 0.0, 0.0)
                normalised = (mean / scale, low / scale, high / scale)
                cells.append("-" if stat is None else _cell(normalised))
        cells += [
            f"{run.forward_passes:.1f}",
            f"{run.backward_passes:.1f}",
            f"{run.seconds_per_text:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for run in skipped:
        lines.append(f"\n{run.spec.label}: {run.note}")
    layers = layer_analysis(bench)
    if layers:
        lines += ["", "DLS layer choice (comprehensiveness AOPC; coherence of the layer used):", ""]
        lines += [
            "| DLS variant | layer(s) used | coherence | comp. AOPC | suff. AOPC | deletion area "
            "| gap to best fixed layer |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in layers:
            coherence = "-" if row["coherence"] is None else f"{row['coherence']:.3f}"
            lines.append(
                f"| {row['label']} | {', '.join(map(str, row['layers_used']))} | {coherence} | "
                f"{row['aopc_comprehensiveness']:.3f} | {row['aopc_sufficiency']:.3f} | "
                f"{row['deletion_area']:.3f} | {row.get('gap_to_best', 0.0):+.3f} |"
            )
        notes = [row["note"] for row in layers if row["note"]]
        lines += [f"\nauto: {note}" for note in notes]
    agreement = metric_agreement(bench, resamples=resamples)
    if agreement is not None:
        lines += ["", agreement_markdown(agreement).rstrip("\n")]
    lines += _ceiling_lines(bench, resamples)
    return "\n".join(lines) + "\n"


def agreement_markdown(agreement: MetricAgreement) -> str:
    """The metric x metric Kendall tau tables: by mean over texts, and per text."""
    titles = agreement.titles
    head = "| metric | " + " | ".join(titles) + " |"
    rule = "|---|" + "---|" * len(titles)
    lines = [
        f"Metric agreement (Chan et al. 2022): Kendall tau-b between the rankings of the "
        f"{len(agreement.methods)} methods ({', '.join(agreement.methods)}) that each metric "
        "gives, each metric turned so that better comes first (+1: the same order, -1: the "
        "reverse). By each method's mean over the texts:",
        "",
        head,
        rule,
    ]
    for key, title in zip(agreement.metrics, titles):
        row = agreement.overall[key]
        lines.append(f"| {title} | " + " | ".join(_tau(row[b]) for b in agreement.metrics) + " |")
    lines += [
        "",
        "Per text (each text's ranking of the methods; mean [95% bootstrap CI] over texts):",
        "",
        head,
        rule,
    ]
    for key, title in zip(agreement.metrics, titles):
        spread = agreement.per_text[key]
        cells = [_cell(spread[b]) for b in agreement.metrics]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tau(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.2f}"


def sanity_markdown(sanity: Sanity, resamples: int = 1000) -> str:
    """The randomisation check: per method and stage, the similarity to the trained model's
    explanation (signed and absolute Spearman), the share of predictions unchanged, and the
    methods that ignore the weights."""
    names = [stage.name for stage in sanity.stages]
    head = "| method | " + " | ".join(names) + " |"
    rule = "|---|" + "---|" * len(names)
    lines = [
        f"Randomisation sanity check: model `{sanity.model}`, data `{sanity.data}`, "
        f"{sanity.n_texts} texts. Each stage re-initialises more of a copy of the model, from "
        f"the top ({sanity.init}; seeded with {sanity.seed}): "
        + "; ".join(f"`{stage.name}`: {stage.description}" for stage in sanity.stages)
        + ". Spearman of each text's explanation with the same method's explanation of the "
        "trained model, for the same target (the trained model's) with the same options; mean "
        "[95% bootstrap CI]. Lower: the explanation depends on what the model learned.",
        "",
    ]
    kinds = (("signed", "Signed scores"), ("absolute", "Absolute scores"))
    for kind, title in kinds:
        lines += [f"{title}:", "", head, rule]
        for method in sanity.methods:
            if not method.stages:
                continue
            cells = [_cell(stage.summary(resamples)[kind]) for stage in method.stages]
            flag = " (unchanged: ignores the weights)" if method.ignores_weights else ""
            lines.append(f"| {method.label}{flag} | " + " | ".join(cells) + " |")
        lines.append("")
    same = [sanity.same_prediction.get(name) for name in names]
    lines += [
        "Share of texts whose prediction on the randomised model is the trained model's:",
        "",
        head,
        rule,
        "| predictions unchanged | "
        + " | ".join("-" if v is None else f"{v:.2f}" for v in same)
        + " |",
        "",
        "Options as settled on the trained model, kept at every stage: "
        + "; ".join(
            f"{m.label}: " + (", ".join(f"{k}={v}" for k, v in m.options.items()) or "defaults")
            for m in sanity.methods
            if m.stages
        )
        + ".",
    ]
    ignoring = [m.label for m in sanity.methods if m.ignores_weights]
    if ignoring:
        lines.append(
            "Unchanged on the fully randomised model for every text (they ignore the weights): "
            + ", ".join(ignoring)
            + "."
        )
    lines += [f"\n{m.label}: {m.note}" for m in sanity.methods if not m.stages and m.note]
    return "\n".join(lines) + "\n"


def seeds_markdown(seeds: list[SeedAgreement], resamples: int = 1000) -> str:
    """Each sampling method's agreement with itself across seeds."""
    lines = [
        "Seed agreement: each method that takes a seed, run with each seed; per text the mean "
        "Spearman over pairs of seeds; mean [95% bootstrap CI] over texts (1: the seed changes "
        "nothing).",
        "",
        "| method | seeds | signed | absolute |",
        "|---|---|---|---|",
    ]
    for result in seeds:
        if result.note:
            lines.append(f"| {result.label} | - | {result.note} | - |")
            continue
        summary = result.summary(resamples)
        lines.append(
            f"| {result.label} | {', '.join(map(str, result.seeds))} | "
            f"{_cell(summary['signed'])} | "
            f"{_cell(summary['absolute'])} |"
        )
    if not seeds:
        lines.append("| (no benchmarked method takes a seed) | - | - | - |")
    return "\n".join(lines) + "\n"


def sanity_json(sanity: Sanity, resamples: int = 1000) -> dict[str, Any]:
    """The sanity check with every text's similarities."""
    return {
        "model": sanity.model,
        "data": sanity.data,
        "n_texts": sanity.n_texts,
        "seed": sanity.seed,
        "init": sanity.init,
        "stages": [
            {"name": s.name, "description": s.description, "parameters": len(s.parameters)}
            for s in sanity.stages
        ],
        "same_prediction": sanity.same_prediction,
        "methods": [
            {
                "label": m.label,
                "method": m.method,
                "options": m.options,
                "ignores_weights": m.ignores_weights,
                "note": m.note,
                "stages": [
                    {
                        "stage": r.stage,
                        "summary": r.summary(resamples),
                        "signed": r.signed,
                        "absolute": r.absolute,
                    }
                    for r in m.stages
                ],
            }
            for m in sanity.methods
        ],
    }


def seeds_json(seeds: list[SeedAgreement], resamples: int = 1000) -> list[dict[str, Any]]:
    """Seed agreement with every text's value."""
    return [
        {
            "label": r.label,
            "method": r.method,
            "seeds": r.seeds,
            "note": r.note,
            "summary": r.summary(resamples) if not r.note else {},
            "signed": r.signed,
            "absolute": r.absolute,
        }
        for r in seeds
    ]


def agreement_json(agreement: MetricAgreement | None) -> dict[str, Any] | None:
    """The metric agreement matrices (``None`` when there are too few methods)."""
    if agreement is None:
        return None
    return {
        "metrics": agreement.metrics,
        "methods": agreement.methods,
        "overall": agreement.overall,
        "per_text": {
            a: {b: list(v) for b, v in row.items()} for a, row in agreement.per_text.items()
        },
    }


def _ceiling_lines(bench: Benchmark, resamples: int) -> list[str]:
    """The ceilings' section of the markdown: the bounds, then each method against them."""
    ceilings = bench.ceilings
    if ceilings is None:
        return []
    bounds = ceiling_bounds(bench, resamples)
    beaten = ceilings.beaten
    lines = [
        "",
        f"Ceilings: beam search of width {ceilings.beam} on {len(ceilings.rows)} texts (seeded "
        f"sample), {bounds['forward_passes'][0]:.0f} forward passes and "
        f"{ceilings.seconds / max(1, len(ceilings.rows)):.3f} s per text. Bounds (mean [95% "
        "CI]); a method's own ranking that went past the beam's moves the bound out (texts "
        "where that happened in brackets):",
        "",
        "| bound | comp. AOPC | suff. AOPC |",
        "|---|---|---|",
    ]
    for direction in ("upper", "lower"):
        comp, suff = f"comprehensiveness_{direction}", f"sufficiency_{direction}"
        lines.append(
            f"| {direction} | {_cell(bounds[comp])} ({beaten[comp]}) | "
            f"{_cell(bounds[suff])} ({beaten[suff]}) |"
        )
    lines += [
        "",
        "Against the ceilings (same texts): normalised AOPC = (AOPC - lower) / (upper - lower) "
        "per text; fraction of the ceiling = sum of comp. AOPC / sum of its upper bound.",
        "",
        "| method | comp. AOPC | comp. normalised (higher better) | fraction of the ceiling "
        "(higher better) | suff. AOPC | suff. normalised (lower better) |",
        "|---|---|---|---|---|---|",
    ]
    for row in ceiling_table(bench, resamples):
        lines.append(
            f"| {row['label']} | {_cell(row['aopc_comprehensiveness'])} | "
            f"{_cell(row['naopc_comprehensiveness'])} | {_cell(row['ceiling_fraction'])} | "
            f"{_cell(row['aopc_sufficiency'])} | {_cell(row['naopc_sufficiency'])} |"
        )
    return lines


def to_json(bench: Benchmark, resamples: int = 1000) -> dict[str, Any]:
    """Everything in the run, per-text results included."""
    return {
        "model": bench.model,
        "data": bench.data,
        "n_texts": bench.n_texts,
        "n_sources": bench.n_sources,
        "accuracy": bench.accuracy,
        "task": bench.task,
        "score_scale": bench.score_scale,
        "eval_model": bench.eval_model,
        "settings": bench.settings,
        "machine": bench.machine,
        "methods": [
            {
                "label": run.spec.label,
                "method": run.spec.method,
                "options": run.spec.options,
                "seconds": run.seconds,
                "seconds_per_text": run.seconds_per_text,
                "forward_passes_per_text": run.forward_passes,
                "backward_passes_per_text": run.backward_passes,
                "coherence_per_layer": run.coherence,
                "note": run.note,
                "summary": {k: list(v) for k, v in run.summary(resamples=resamples).items()},
                "per_text": [r.to_dict() for r in run.results],
            }
            for run in bench.runs
        ],
        "layer_analysis": layer_analysis(bench),
        "metric_agreement": agreement_json(metric_agreement(bench, resamples=resamples)),
        "ceilings": _ceilings_json(bench, resamples),
    }


def _ceilings_json(bench: Benchmark, resamples: int) -> dict[str, Any] | None:
    ceilings = bench.ceilings
    if ceilings is None:
        return None
    return {
        "beam": ceilings.beam,
        "rows": ceilings.rows,
        "seconds": ceilings.seconds,
        "forward_passes_per_text": ceilings.forward_passes,
        "beaten": ceilings.beaten,
        "bounds": {k: list(v) for k, v in ceiling_bounds(bench, resamples).items()},
        "methods": [
            {k: list(v) if isinstance(v, tuple) else v for k, v in row.items()}
            for row in ceiling_table(bench, resamples)
        ],
        "per_text": [
            {"found": f.to_dict(), "bounds": b.to_dict()}
            for f, b in zip(ceilings.found, ceilings.bounds)
        ],
    }


def write(
    bench: Benchmark,
    out: Path,
    resamples: int = 1000,
    *,
    sanity: Sanity | None = None,
    seeds: list[SeedAgreement] | None = None,
) -> list[Path]:
    """Write results.json, results.md and the plots into ``out`` (with ``sanity``:
    sanity.json; with ``seeds``: seed_agreement.json; both also in results.md); return the
    paths."""
    writable_folder(out)
    paths = [out / "results.json", out / "results.md"]
    paths[0].write_text(
        json.dumps(to_json(bench, resamples), indent=1, default=str), encoding="utf-8"
    )
    paths[1].write_text(full_markdown(bench, resamples, sanity, seeds), encoding="utf-8")
    if sanity is not None:
        paths.append(out / "sanity.json")
        paths[-1].write_text(
            json.dumps(sanity_json(sanity, resamples), indent=1, default=str), encoding="utf-8"
        )
    if seeds is not None:
        paths.append(out / "seed_agreement.json")
        paths[-1].write_text(
            json.dumps(seeds_json(seeds, resamples), indent=1, default=str), encoding="utf-8"
        )
    paths += plot_deletion_curves(bench, out / "deletion_curves.png")
    paths += plot_layers(bench, out / "layers.png")
    paths += plot_frontier(bench, out / "frontier.png")
    return paths


def full_markdown(
    bench: Benchmark,
    resamples: int = 1000,
    sanity: Sanity | None = None,
    seeds: list[SeedAgreement] | None = None,
) -> str:
    """:func:`markdown`, then the sanity check and the seed agreement where they were run."""
    parts = [markdown(bench, resamples), frontier_markdown(bench, resamples)]
    if sanity is not None:
        parts.append(sanity_markdown(sanity, resamples))
    if seeds is not None:
        parts.append(seeds_markdown(seeds, resamples))
    return "\n".join(parts)


def plot_deletion_curves(bench: Benchmark, path: Path) -> list[Path]:
    """Mean deletion curve (predicted-class probability vs share of tokens hidden) per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run in (r for r in bench.runs if r.results):
        curves = np.array([r.deletion_curve for r in run.results])
        x = np.linspace(0, 1, curves.shape[1])
        ax.plot(
            x,
            curves.mean(0),
            label=f"{run.spec.label} ({np.mean([r.deletion_area for r in run.results]):.3f})",
        )
    ax.set_xlabel("share of tokens hidden, most salient first")
    ax.set_ylabel("probability of the predicted class")
    ax.set_title(
        f"Deletion curves: {bench.model} on {Path(bench.data.split(' ')[0]).name} (area, lower "
        "is better)"
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def plot_layers(bench: Benchmark, path: Path) -> list[Path]:
    """DLS coherence and comprehensiveness AOPC per fixed layer."""
    rows = [r for r in layer_analysis(bench) if isinstance(r["layer"], int)]
    coherence = max((run.coherence for run in bench.runs), key=len, default={})
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r["layer"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        layers,
        [r["aopc_comprehensiveness"] for r in rows],
        "o-",
        color="tab:red",
        label="comp. AOPC",
    )
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("comprehensiveness AOPC", color="tab:red")
    ax.set_xticks(layers)
    twin = ax.twinx()
    twin.plot(list(coherence), list(coherence.values()), "s--", color="tab:blue", label="coherence")
    twin.set_ylabel("semantic coherence", color="tab:blue")
    twin.set_ylim(0, 1)
    ax.set_title(f"DLS per layer: {bench.model}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def frontier_markdown(bench: Benchmark, resamples: int = 1000) -> str:
    """Passes per text against faithfulness, cheapest first, the frontier marked."""
    points = frontier(bench, resamples)
    if len(points) < 2:
        return ""
    lines = [
        "",
        "Cost against faithfulness (passes per text: forward + backward; * on the frontier: "
        "nothing cheaper or as cheap is better on comp. - suff. AOPC):",
        "",
        "| method | passes per text | comp. AOPC | suff. AOPC | frontier |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p.label} | {p.passes:.1f} | {_cell(p.comprehensiveness)} | "
            f"{_cell(p.sufficiency)} | {'*' if p.on_frontier else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot_frontier(bench: Benchmark, path: Path, resamples: int = 1000) -> list[Path]:
    """:func:`frontier_figure` of a benchmark run; with ceilings, also passes per text
    against each method's fraction of the comprehensiveness ceiling on the ceilings'
    subsample (``frontier-ceiling.png`` beside ``path``)."""
    points = frontier(bench, resamples)
    if len(points) < 2:
        return []
    paths = frontier_figure(points, f"{bench.model}, {bench.n_texts} texts", path)
    fractions = {row["label"]: row for row in ceiling_table(bench, resamples)}
    against = [
        replace(p, comprehensiveness=fractions[p.label]["ceiling_fraction"])
        for p in points
        if p.label in fractions
    ]
    if len(against) >= 2:
        n = next(iter(fractions.values()))["n_texts"]
        paths += frontier_figure(
            against,
            f"{bench.model}, the {n} texts of the ceilings",
            path.with_name("frontier-ceiling.png"),
            ylabel="fraction of the comprehensiveness ceiling (higher is better)",
        )
    return paths


def frontier_points(saved: dict[str, Any]) -> list[FrontierPoint]:
    """The frontier points of a saved run (``results.json``, as :func:`to_json` writes it):
    to draw several runs on the same texts as one plot (``bench/frontier.py``)."""
    points = []
    for method in saved["methods"]:
        summary = method.get("summary") or {}
        if "aopc_comprehensiveness" not in summary or "aopc_sufficiency" not in summary:
            continue
        passes = method["forward_passes_per_text"] + method["backward_passes_per_text"]
        points.append(
            FrontierPoint(
                method["label"],
                method["method"],
                passes,
                tuple(summary["aopc_comprehensiveness"]),
                tuple(summary["aopc_sufficiency"]),
                False,
                dict(method.get("options") or {}),
            )
        )
    return sorted(points, key=lambda p: p.passes)


def frontier_figure(
    points: list[FrontierPoint],
    title: str,
    path: Path,
    ylabel: str = "comprehensiveness AOPC (higher is better)",
) -> list[Path]:
    """Passes per text (log scale) against comprehensiveness AOPC with its 95% CI: every
    method a point; runs of one method at several costs (a budget sweep) joined as a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5))
    curves: dict[tuple[str, str], list[Any]] = {}
    for p in points:
        curves.setdefault(p.curve, []).append(p)
    for (method, _), group in curves.items():
        keys = sorted({k for p in group for k in p.options})
        same = [k for k in keys if len({repr(p.options.get(k)) for p in group}) == 1]
        varying = [k for k in keys if k not in same]
        constant = ", ".join(f"{k}={group[0].options[k]}" for k in same if k in group[0].options)
        name = f"{method} ({constant})" if constant else method
        xs = [p.passes for p in group]
        ys = [p.comprehensiveness[0] for p in group]
        errors = [
            [p.comprehensiveness[0] - p.comprehensiveness[1] for p in group],
            [p.comprehensiveness[2] - p.comprehensiveness[0] for p in group],
        ]
        ax.errorbar(xs, ys, yerr=errors, fmt="o-" if len(group) > 1 else "o", capsize=3, label=name)
        for p in group:
            ax.annotate(
                ", ".join(f"{k}={p.options.get(k)}" for k in varying),
                (p.passes, p.comprehensiveness[0]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=6,
            )
    ax.set_xscale("log")
    ax.set_xlabel("model passes per text (forward + backward, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Cost against faithfulness: {title}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    # below the axes: inside, it hid points of the curves
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
