"""Matplotlib figures of one text's explanation (PNG through the Agg canvas, no pyplot state).

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` (or ``None`` when the
explanation has nothing to draw); :func:`save` writes it; :func:`write_plots` does all three for
one text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..explanation import Explanation
from ..metrics import Faithfulness
from .html import METHOD_COLOURS, word_scores

_TINY = 1e-12


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def quoted(explanation: Explanation) -> str:
    """The explained text (a pair's two texts joined by ‖), shortened, in quotes."""
    return f"“{snippet(' ‖ '.join(explanation.texts))}”"


def snippet(text: str, limit: int = 60) -> str:
    """The text on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _method_name(explanation: Explanation) -> str:
    """The method, with the kind of saliency it aggregated where it has that option."""
    kind = explanation.options.get("saliency")
    return f"{explanation.method} ({kind})" if kind else explanation.method


def layer_heatmap_figure(explanation: Explanation) -> Any | None:
    """Saliency per layer (rows) and word (columns), each layer scaled to its largest |score|.

    ``None`` when the explanation has no per-layer report (input-level methods).
    """
    if not explanation.layers:
        return None
    from matplotlib.colors import Normalize, TwoSlopeNorm

    words = [w.text for w in explanation.words]
    raw = np.array([word_scores(explanation, r.scores) for r in explanation.layers], dtype=float)
    peaks = np.abs(raw).max(axis=1) if raw.size else np.zeros(len(raw))
    gradient = np.array([r.has_position_gradient for r in explanation.layers])
    scaled = np.divide(raw, peaks[:, None], out=np.zeros_like(raw), where=peaks[:, None] > _TINY)
    scaled[~gradient] = np.nan
    signed = bool((raw[gradient] < -_TINY).any())
    norm: Normalize
    if signed:
        cmap, norm, label = (
            "RdBu_r",
            TwoSlopeNorm(0.0, -1.0, 1.0),
            "score / the layer's largest |score|\n(red: towards the class)",
        )
    else:
        cmap, norm, label = "YlOrRd", Normalize(0.0, 1.0), "score / the layer's\nlargest score"
    fig = _figure(max(6.0, min(18.0, 1.5 + 0.55 * len(words))), 1.9 + 0.5 * len(raw))
    ax = fig.add_subplot()
    from matplotlib import colormaps

    colours = colormaps[cmap].with_extremes(bad="#eaeef2")
    image = ax.imshow(
        np.ma.masked_invalid(scaled),
        cmap=colours,
        norm=norm,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
    )
    every = max(1, math.ceil(len(words) / (4 * fig.get_figwidth())))  # room for ~4 per inch
    shown = list(range(0, len(words), every))
    ax.set_xticks(
        shown,
        [_short(words[i]) for i in shown],
        rotation=45 if len(shown) > 6 else 0,
        ha="right" if len(shown) > 6 else "center",
        rotation_mode="anchor",
    )
    ticks = []
    for report in explanation.layers:
        tick = f"layer {report.layer}"  # no gradient at the positions: greyed, noted in the row
        if report.layer == explanation.layer:
            tick += " (used)"
        ticks.append(tick)
    ax.set_yticks(range(len(ticks)), ticks)
    for index, report in enumerate(explanation.layers):
        if report.layer == explanation.layer:
            ax.get_yticklabels()[index].set_fontweight("bold")
            ax.add_patch(_outline(index, len(words)))
        if not report.has_position_gradient:
            ax.get_yticklabels()[index].set_color("#8c959f")
            ax.text(
                (len(words) - 1) / 2,
                index,
                "no gradient reaches the positions here ([CLS] only)",
                ha="center",
                va="center",
                fontsize=8,
                color="#57606a",
                style="italic",
            )
    right = ax.secondary_yaxis("right")
    right.set_yticks(
        range(len(peaks)), [f"max {p:.2g}" if g else "" for p, g in zip(peaks, gradient)]
    )
    right.tick_params(length=0, labelsize=8, labelcolor="#57606a")
    ax.set_xlabel("word" if every == 1 else f"word (every {every}th labelled)")
    ax.set_ylabel("layer (0 = embeddings)")
    ax.set_title(
        f"{_method_name(explanation)} saliency per layer, model "
        f"{explanation.model}\n{quoted(explanation)}",
        fontsize=10,
    )
    fig.colorbar(image, ax=ax, label=label, shrink=0.9, pad=0.02)
    return fig


def _short(word: str, limit: int = 14) -> str:
    """A word as a tick label: at most ``limit`` characters."""
    return word if len(word) <= limit else word[: limit - 1] + "…"


def _outline(row: int, width: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((-0.5, row - 0.5), width, 1, fill=False, edgecolor="#1f2328", linewidth=2)


def coherence_figure(explanation: Explanation) -> Any | None:
    """Coherence per layer, marking the layer used and the layers without position gradient."""
    reports = [r for r in explanation.layers if r.coherence is not None]
    if not reports:
        return None
    fig = _figure(6.4, 3.8)
    ax = fig.add_subplot()
    layers = [r.layer for r in reports]
    values = [r.coherence for r in reports]
    ax.plot(layers, values, color="#0969da", marker="o", label="coherence")
    dead = [(r.layer, r.coherence) for r in reports if not r.has_position_gradient]
    if dead:
        ax.scatter(
            *zip(*dead),
            s=110,
            facecolors="none",
            edgecolors="#cf222e",
            linewidths=1.5,
            zorder=3,
            label="no position gradient ([CLS] only)",
        )
    used = next((r for r in reports if r.layer == explanation.layer), None)
    if used is not None:
        ax.scatter(
            [used.layer],
            [used.coherence],
            marker="*",
            s=260,
            color="#d4a72c",
            edgecolors="#1f2328",
            zorder=4,
            label=f"layer used ({used.layer})",
        )
    rho = explanation.options.get("rho")
    base = reports[0].coherence
    if isinstance(rho, (int, float)) and reports[0].layer == 0 and base is not None:
        ax.axhline(
            rho * base,
            color="#8c959f",
            linestyle="--",
            linewidth=1,
            label=f"rho x coherence(layer 0), rho={rho:g}",
        )
    ax.set_xticks(layers)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("coherence (share of decoded\nprobability on input tokens)")
    ax.set_title(
        f"Semantic coherence per layer, model {explanation.model}\n{quoted(explanation)}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def curves_figure(
    results: Sequence[Faithfulness],
    labels: Sequence[str],
    explanation: Explanation,
    level: str = "token",
) -> Any | None:
    """Deletion and insertion curves (probability of the explained class, or a regression
    head's score) per method."""
    if not results:
        return None
    if len(results) != len(labels):
        raise InputError(f"got {len(results)} faithfulness results for {len(labels)} labels")
    fig = _figure(10.0, 4.0)
    deletion, insertion = fig.subplots(1, 2, sharey=True)
    for index, (result, label) in enumerate(zip(results, labels)):
        colour = METHOD_COLOURS[index % len(METHOD_COLOURS)]
        for axis, curve, area in (
            (deletion, result.deletion_curve, result.deletion_area),
            (insertion, result.insertion_curve, result.insertion_area),
        ):
            x = np.linspace(0, 1, len(curve))
            axis.plot(x, curve, color=colour, marker=".", label=f"{label} (area {area:.3f})")
    units = "words" if level == "word" else "tokens"
    deletion.set_title("deletion: hide most salient first (lower area is better)", fontsize=9)
    insertion.set_title("insertion: reveal most salient first (higher area is better)", fontsize=9)
    deletion.set_xlabel(f"share of {units} hidden")
    insertion.set_xlabel(f"share of {units} revealed")
    deletion.set_ylabel("score" if explanation.score is not None else f"p({explanation.target})")
    for ax in (deletion, insertion):
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(
        f"Deletion and insertion curves, model {explanation.model}\n{quoted(explanation)}",
        fontsize=10,
    )
    return fig


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG (parent folders made)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, format="png")
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def write_plots(
    out: str | Path,
    index: int,
    explanation: Explanation,
    results: Sequence[Faithfulness] | None = None,
    labels: Sequence[str] | None = None,
    level: str = "token",
) -> list[Path]:
    """Write ``text-{index:03d}-layers.png``, ``-coherence.png`` and ``-curves.png`` (those that
    apply) into ``out``; return their paths."""
    folder = Path(out)
    stem = f"text-{index:03d}"
    figures = {
        "layers": layer_heatmap_figure(explanation),
        "coherence": coherence_figure(explanation),
        "curves": None
        if not results
        else curves_figure(results, labels or [explanation.method], explanation, level),
    }
    return [
        save(fig, folder / f"{stem}-{name}.png") for name, fig in figures.items() if fig is not None
    ]


__all__ = [
    "coherence_figure",
    "curves_figure",
    "layer_heatmap_figure",
    "save",
    "snippet",
    "write_plots",
]
