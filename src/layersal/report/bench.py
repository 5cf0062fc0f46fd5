"""Benchmark outputs: results.json, a markdown table, and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..benchmark import Benchmark, layer_analysis
from ..metrics import METRICS_SHOWN
from ..outputs import writable_folder
from ..tasks import TASKS


def _cell(stat: tuple[float, float, float] | None) -> str:
    if stat is None or math.isnan(stat[0]):  # not defined here (log-odds of a score)
        return "-"
    mean, low, high = stat
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def markdown(bench: Benchmark, resamples: int = 1000) -> str:
    """Method x metric table (mean [95% bootstrap CI]) and the DLS layer table."""
    head = ["method"] + [f"{title} ({better} better)" for _, title, better in METRICS_SHOWN]
    scale = bench.score_scale
    if scale:
        head += ["comp. AOPC / sigma (higher better)", "suff. AOPC / sigma (lower better)"]
    head += ["fwd/expl", "bwd/expl", "s/expl"]
    target = TASKS[bench.task].explained + (
        f" (sigma = {scale:.3f} over these texts; AOPCs in its units)" if scale else ""
    )
    judge = bench.eval_model
    lines = [
        f"Model `{bench.model}`, data `{bench.data}`, {bench.n_texts} "
        + ("entities" if bench.task == "token_classification" else "texts")
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
        summary = run.summary(resamples=resamples)
        cells = [run.spec.label] + [_cell(summary.get(key)) for key, _, _ in METRICS_SHOWN]
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
    return "\n".join(lines) + "\n"


def to_json(bench: Benchmark, resamples: int = 1000) -> dict[str, Any]:
    """Everything in the run, per-text results included."""
    return {
        "model": bench.model,
        "data": bench.data,
        "n_texts": bench.n_texts,
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
    }


def write(bench: Benchmark, out: Path, resamples: int = 1000) -> list[Path]:
    """Write results.json, results.md and the plots into ``out``; return the paths."""
    writable_folder(out)
    paths = [out / "results.json", out / "results.md"]
    paths[0].write_text(
        json.dumps(to_json(bench, resamples), indent=1, default=str), encoding="utf-8"
    )
    paths[1].write_text(markdown(bench, resamples), encoding="utf-8")
    paths += plot_deletion_curves(bench, out / "deletion_curves.png")
    paths += plot_layers(bench, out / "layers.png")
    return paths


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
