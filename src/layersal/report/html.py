"""Static HTML: a self-contained report file and the Jupyter card of an explanation.

Everything is rendered by jinja2 with autoescaping on (texts, tokens, labels and model names are
user data); colours, widths and chart coordinates are computed here as numbers. The output has
no scripts and no external references: inline CSS and SVG only.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..metrics import METRICS_SHOWN, Faithfulness
from ..words import aggregate
from .provenance import option_details, plain_sentence

if TYPE_CHECKING:  # the types only: an Explanation renders itself through this module
    from ..explanation import Explanation, LayerReport

# ColorBrewer RdBu (blue: against the class, red: towards it), white at zero.
_DIVERGING = [
    "#2166ac",
    "#4393c3",
    "#92c5de",
    "#d1e5f0",
    "#ffffff",
    "#fddbc7",
    "#f4a582",
    "#d6604d",
    "#b2182b",
]
# ColorBrewer YlOrRd from white, for scores that are never negative.
_SEQUENTIAL = ["#ffffff", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#f03b20", "#bd0026"]
# Line colours of methods in charts (matplotlib's tab10).
METHOD_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
]
_TINY = 1e-12

# the report's cards leave out leave-one-out agreement: it costs a pass per word
METRIC_COLUMNS = tuple(m for m in METRICS_SHOWN if m[0] != "kendall_loo")


def word_scores(explanation: Explanation, token_scores: Sequence[float]) -> list[float]:
    """Token scores merged into the explanation's words by its ``word_aggregation`` rule."""
    return [
        aggregate([token_scores[t] for t in word.tokens], explanation.word_aggregation)
        for word in explanation.words
    ]


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _interpolate(stops: list[str], t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t)) * (len(stops) - 1)
    low = min(int(t), len(stops) - 2)
    frac = t - low
    a, b = _hex(stops[low]), _hex(stops[low + 1])
    return tuple(round(x + (y - x) * frac) for x, y in zip(a, b))  # type: ignore[return-value]


@dataclass
class Scale:
    """Colour scale of one row: ``diverging`` (signed, symmetric) or ``sequential`` (>= 0)."""

    kind: str
    vmax: float

    @classmethod
    def of(cls, scores: Sequence[float], signed: bool | None = None) -> Scale:
        finite = [s for s in scores if math.isfinite(s)]
        if signed is None:
            signed = any(s < -_TINY for s in finite)
        vmax = max((abs(s) for s in finite), default=0.0)
        return cls("diverging" if signed else "sequential", vmax if vmax > _TINY else 0.0)

    def colour(self, score: float) -> tuple[str, str]:
        """``(background, ink)`` CSS colours for a score."""
        if self.vmax <= 0 or not math.isfinite(score):
            return "#ffffff", "#1a1a1a"
        if self.kind == "diverging":
            rgb = _interpolate(_DIVERGING, 0.5 + 0.5 * score / self.vmax)
        else:
            rgb = _interpolate(_SEQUENTIAL, max(0.0, score) / self.vmax)
        luminance = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255
        return "#{:02x}{:02x}{:02x}".format(*rgb), "#ffffff" if luminance < 0.5 else "#1a1a1a"

    @property
    def gradient(self) -> str:
        stops = _DIVERGING if self.kind == "diverging" else _SEQUENTIAL
        return "linear-gradient(to right, " + ", ".join(stops) + ")"

    @property
    def ticks(self) -> list[str]:
        if self.vmax <= 0:
            return ["all scores 0"]
        if self.kind == "diverging":
            return [_num(-self.vmax), "0", _num(self.vmax, plus=True)]
        return ["0", _num(self.vmax)]


def _num(value: float | None, plus: bool = False, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:+.{digits}g}" if plus else f"{value:.{digits}g}"
    return _minus(text)


def _fixed(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return _minus(f"{value:.{digits}f}")


def _minus(text: str) -> str:
    """A typographic minus, and no sign on a number that rounds to zero."""
    if text.startswith("-") and not text.strip("-+0.e"):
        text = text[1:]
    return text.replace("-", "−")


@dataclass
class Segment:
    """A run of text: a scored word, the gap between words, or (``separator``) the mark
    between the two texts of a pair."""

    text: str
    word: bool = False
    background: str = ""
    ink: str = ""
    tip: str = ""
    separator: bool = False
    start: int = 0
    """Where the run starts in its text (characters)."""
    whole: str = ""
    """The whole word, where this is a part of it (cut at the explained entity's edge)."""


@dataclass(frozen=True)
class Mark:
    """The entity explained, as its heat-maps underline it: its type and probability in a
    tag beside it (``tag``), and in words on hover (``tip``)."""

    start: int
    end: int
    label: str
    word: str
    probability: float

    @property
    def tag(self) -> str:
        return f"{self.label} {self.probability:.3f}"

    @property
    def tip(self) -> str:
        return (
            f"entity {self.label}: characters {self.start}–{self.end}, "
            f"probability {self.probability:.3f}"
        )


@dataclass
class Run:
    """Consecutive segments of a heat-map, inside the explained entity (``mark``) or not."""

    segments: list[Segment]
    mark: Mark | None = None


@dataclass
class Row:
    """One line of coloured text: a method's heat-map, or the text at one layer."""

    label: str
    detail: str
    runs: list[Run]
    scale: Scale
    hypothesis: list[Segment] = field(default_factory=list)
    """A zero-shot row's hypothesis (the pair's second text), shown apart from the text."""
    used: bool = False
    muted: bool = False
    note: str = ""
    coherence: float | None = None
    coherence_text: str = ""


@dataclass(frozen=True)
class Axis:
    """The deletion plot's y axis: probabilities on [0, 1], or a regression head's score on
    the range its curves span (labelled in its units)."""

    low: float = 0.0
    high: float = 1.0
    title: str = "p(explained class)"

    @property
    def ticks(self) -> tuple[str, str, str]:
        middle = (self.low + self.high) / 2
        return f"{self.high:.3g}", f"{middle:.3g}", f"{self.low:.3g}"


@dataclass
class MetricLine:
    label: str
    colour: str
    values: list[str]
    points: str
    dashed: bool = False


@dataclass
class Card:
    index: int | None
    text: str
    model: str
    prediction: str
    scored: bool
    target: str
    probabilities: list[tuple[str, float, str, bool]]
    rows: list[Row]
    strip: list[Row]
    strip_method: str
    strip_note: str
    metrics: list[MetricLine]
    axis: Axis
    metric_setting: str
    truncated: bool
    footnote: str = ""
    entity: Mark | None = None
    zero_shot: bool = False
    hypothesis: str = ""


@dataclass
class Summary:
    n_texts: int
    lines: list[MetricLine] = field(default_factory=list)
    axis: Axis = field(default_factory=Axis)


def _mark(explanation: Explanation) -> Mark | None:
    """The entity an explanation explains (a token classifier's), else ``None``."""
    entity = explanation.entity
    if not entity:
        return None
    return Mark(
        int(entity["start"]),
        int(entity["end"]),
        str(entity.get("label", explanation.target)),
        str(entity.get("word", explanation.text[entity["start"] : entity["end"]])),
        float(entity.get("probability", math.nan)),
    )


def _segments(
    explanation: Explanation,
    scores: Sequence[float],
    scale: Scale,
    layer: LayerReport | None = None,
    segments: Sequence[int] | None = None,
) -> list[Segment]:
    """The text cut into words (coloured, with a hover tip) and the gaps between them; a
    pair's second text after a separator. ``segments``: which texts of a pair (default: all)."""
    out: list[Segment] = []
    shown = range(len(explanation.texts)) if segments is None else segments
    for segment, text in enumerate(explanation.texts):
        if segment not in shown:
            continue
        if out:
            out.append(Segment(" ‖ ", separator=True))
        cursor = 0
        for word, score in zip(explanation.words, scores):
            if word.segment != segment:
                continue
            if word.start > cursor:
                out.append(Segment(text[cursor : word.start], start=cursor))
            background, ink = scale.colour(score)
            out.append(
                Segment(
                    text[word.start : word.end],
                    True,
                    background,
                    ink,
                    _tip(explanation, word.tokens, score, layer),
                    start=word.start,
                )
            )
            cursor = max(cursor, word.end)
        if cursor < len(text):
            out.append(Segment(text[cursor:], start=cursor))
    return out


def _runs(segments: list[Segment], mark: Mark | None) -> list[Run]:
    """``segments`` in runs: before the entity, inside it (a word it cuts into is split in
    two, both halves coloured as the word), after it."""
    if mark is None:
        return [Run(segments)]
    runs = [Run([]), Run([], mark), Run([])]
    second = False
    for s in segments:
        second = second or s.separator
        if second:  # a pair's second text: never part of the entity (it reads single texts)
            runs[2].segments.append(s)
            continue
        start, end = s.start, s.start + len(s.text)
        cuts = sorted({start, end, *(c for c in (mark.start, mark.end) if start < c < end)})
        for a, b in itertools.pairwise(cuts):
            piece = (
                s
                if (a, b) == (start, end)
                else dataclasses.replace(
                    s, text=s.text[a - start : b - start], start=a, whole=s.text
                )
            )
            where = 0 if b <= mark.start else 1 if a < mark.end else 2
            runs[where].segments.append(piece)
    return [r for r in runs if r.segments or r.mark is not None]


def _heat(
    explanation: Explanation,
    scores: Sequence[float],
    scale: Scale,
    layer: LayerReport | None = None,
) -> tuple[list[Run], list[Segment]]:
    """A row's heat-map: the text in runs (the explained entity underlined), and a zero-shot
    row's hypothesis apart (other pairs: both texts in one line, after a separator)."""
    if explanation.task == "zero_shot" and explanation.text_pair is not None:
        text = _segments(explanation, scores, scale, layer, segments=(0,))
        return [Run(text)], _segments(explanation, scores, scale, layer, segments=(1,))
    return _runs(_segments(explanation, scores, scale, layer), _mark(explanation)), []


def _tip(
    explanation: Explanation, tokens: Sequence[int], score: float, layer: LayerReport | None
) -> str:
    if layer is not None:
        token_scores = layer.scores
    else:
        token_scores = [t.score for t in explanation.tokens]
    pieces = ", ".join(
        f"{explanation.tokens[t].text} ({_num(token_scores[t], plus=True)})" for t in tokens
    )
    lines = [f"score {_num(score, plus=True, digits=4)}", f"pieces: {pieces}"]
    if len(tokens) > 1:
        lines[0] += f" ({explanation.word_aggregation} of {len(tokens)} pieces)"
    if layer is not None and layer.top_tokens:
        for t in tokens:
            decoded = " ".join(layer.top_tokens[t][:5])
            lines.append(f"decoded at {explanation.tokens[t].text}: {decoded}")
    return "\n".join(lines)


def _method_label(explanation: Explanation, label: str | None) -> tuple[str, str]:
    name = label or explanation.method
    detail = []
    if explanation.layer is not None:
        detail.append(f"layer {explanation.layer}")
    report = _used_layer(explanation)
    if report is not None and report.coherence is not None:
        detail.append(f"coherence {report.coherence:.2f}")
    return name, ", ".join(detail)


def _used_layer(explanation: Explanation) -> LayerReport | None:
    return next((r for r in explanation.layers if r.layer == explanation.layer), None)


def _method_row(explanation: Explanation, label: str | None, signed: bool | None = None) -> Row:
    scores = [w.score for w in explanation.words]
    scale = Scale.of(scores, signed)
    name, detail = _method_label(explanation, label)
    runs, hypothesis = _heat(explanation, scores, scale)
    return Row(name, detail, runs, scale, hypothesis)


def _strip(explanation: Explanation) -> list[Row]:
    """The text at every layer of ``explanation.layers``, scaled row by row."""
    per_layer = [word_scores(explanation, report.scores) for report in explanation.layers]
    signed = any(s < -_TINY for scores in per_layer for s in scores)
    rows = []
    for report, scores in zip(explanation.layers, per_layer):
        muted = not report.has_position_gradient
        scale = Scale("sequential", 0.0) if muted else Scale.of(scores, signed)
        used = report.layer == explanation.layer
        detail = "used" if used else ""
        note = (
            "no position gradient: the classifier reads only [CLS] here" if muted else report.note
        )
        runs, hypothesis = _heat(explanation, scores, scale, report)
        rows.append(
            Row(
                f"layer {report.layer}",
                detail,
                runs,
                scale,
                hypothesis,
                used=used,
                muted=muted,
                note=note,
                coherence=report.coherence,
                coherence_text=_fixed(report.coherence),
            )
        )
    return rows


def _axis(curves: Sequence[Sequence[float]], scored: bool) -> Axis:
    if not scored:
        return Axis()
    values = [v for c in curves for v in c if math.isfinite(v)] or [0.0]
    low, high = min(values), max(values)
    return Axis(low, high if high > low else low + 1.0, "score")


def _curve_points(curve: Sequence[float], axis: Axis) -> str:
    """SVG polyline points of a curve on [0, 1] x the axis's range, in a 240 x 120 plot box at
    (44, 10)."""
    n = len(curve) - 1
    points = []
    for i, value in enumerate(curve):
        x = i / n if n else 0.0
        y = (value - axis.low) / (axis.high - axis.low) if math.isfinite(value) else 0.0
        y = min(1.0, max(0.0, y))
        points.append(f"{44 + 240 * x:.1f},{10 + 120 * (1 - y):.1f}")
    return " ".join(points)


def _metric_line(label: str, index: int, result: Faithfulness, axis: Axis) -> MetricLine:
    values = [_fixed(getattr(result, key)) for key, _, _ in METRIC_COLUMNS]
    return MetricLine(
        label,
        METHOD_COLOURS[index % len(METHOD_COLOURS)],
        values,
        _curve_points(result.deletion_curve, axis),
    )


def _card(
    explanations: Sequence[Explanation],
    labels: Sequence[str] | None,
    metrics: Sequence[Faithfulness] | None,
    index: int | None,
    metric_setting: str,
    signed: Sequence[bool] | None = None,
) -> Card:
    """One text's card. ``signed[m]``: method ``m``'s colour scale (signed or one-colour),
    fixed for the whole report so that it does not change from one card to the next."""
    main = explanations[0]
    if metrics is not None and len(metrics) != len(explanations):
        raise InputError(f"got {len(metrics)} faithfulness results for {len(explanations)} methods")
    names = [labels[i] if labels else e.method for i, e in enumerate(explanations)]
    strip = _strip(main)
    if strip:
        strip_note = ""
    elif main.layer is None:
        strip_note = f"{names[0]} works at the input: no per-layer view"
    else:
        strip_note = "no per-layer report (explained with layer_report=False)"
    axis = _axis([m.deletion_curve for m in metrics or []], main.score is not None)
    return Card(
        index=index,
        text=main.text,
        model=main.model,
        prediction=main.prediction,
        target=main.target if main.score is None else main.prediction,
        scored=main.score is not None,
        probabilities=[
            (label, p, f"{100 * p:.1f}", label in main.prediction.split(", "))
            for label, p in main.probabilities.items()
        ],
        rows=[
            _method_row(e, name, None if signed is None else signed[m])
            for m, (e, name) in enumerate(zip(explanations, names))
        ],
        strip=strip,
        strip_method=names[0],
        strip_note=strip_note,
        metrics=[]
        if metrics is None
        else [_metric_line(n, i, m, axis) for i, (n, m) in enumerate(zip(names, metrics))],
        axis=axis,
        metric_setting=metric_setting,
        truncated=main.truncated,
        footnote=f"decoder: {main.decoder}; words: {main.word_aggregation} of their pieces",
        entity=_mark(main),
        zero_shot=main.task == "zero_shot",
        hypothesis=main.text_pair or "",
    )


def _summary(
    labels: Sequence[str], metrics: Sequence[Sequence[Faithfulness]], scored: bool
) -> Summary:
    lines = []
    axis = _axis([r.deletion_curve for per_text in metrics for r in per_text], scored)
    for m, label in enumerate(labels):
        values = []
        for key, _, _ in METRIC_COLUMNS:
            column = [getattr(per_text[m], key) for per_text in metrics]
            column = [v for v in column if v is not None and math.isfinite(v)]
            values.append(_fixed(sum(column) / len(column)) if column else "–")
        curves = [per_text[m].deletion_curve for per_text in metrics]
        width = min(len(c) for c in curves)
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(width)]
        lines.append(
            MetricLine(
                label, METHOD_COLOURS[m % len(METHOD_COLOURS)], values, _curve_points(mean, axis)
            )
        )
    return Summary(len(metrics), lines, axis)


def _env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("layersal.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _grouped(
    explanations: Sequence[Explanation | Sequence[Explanation]],
) -> list[list[Explanation]]:
    groups = [list(e) if isinstance(e, Sequence) else [e] for e in explanations]
    if not groups or any(not g for g in groups):
        raise InputError("nothing to report: give at least one explanation per text")
    if len({len(g) for g in groups}) != 1:
        raise InputError("every text needs the same number of methods")
    for g in groups:
        if any(e.item != g[0].item for e in g):
            raise InputError("the explanations of one text must all explain that same text")
        if any(_span_of(e) != _span_of(g[0]) for e in g):
            raise InputError("the explanations of one card must all explain the same entity")
    return groups


def _span_of(explanation: Explanation) -> tuple[Any, ...] | None:
    entity = explanation.entity
    return None if not entity else (entity.get("start"), entity.get("end"), entity.get("label"))


def _counted(groups: Sequence[Sequence[Explanation]]) -> str:
    """What the report's cards are: ``3 texts``, or ``5 entities in 2 texts`` (one card per
    entity), or ``4 explanations of 2 texts`` (a multi-label text's labels, one card each).
    A text's explanations come together: a card of another text than the one before it starts
    a text (a zero-shot card's pair is its text and one label's hypothesis: the text counts)."""
    keys = [g[0].text if g[0].task == "zero_shot" else g[0].item for g in groups]
    texts = 1 + sum(a != b for a, b in itertools.pairwise(keys))
    in_texts = f"{texts} text{'s' if texts != 1 else ''}"
    if all(g[0].entity for g in groups):
        return f"{len(groups)} entit{'ies' if len(groups) != 1 else 'y'} in {in_texts}"
    if len(groups) == texts:
        return in_texts
    return f"{len(groups)} explanations of {in_texts}"


def render_report(
    explanations: Sequence[Explanation | Sequence[Explanation]],
    *,
    labels: Sequence[str] | None = None,
    metrics: Sequence[Sequence[Faithfulness]] | None = None,
    metric_setting: str = "token level, hidden with [MASK]",
    title: str = "layersal report",
) -> str:
    """A whole, self-contained HTML page.

    ``explanations``: one :class:`Explanation` per text, or per text a list of explanations by
    several methods (the first is the main one: its layers make the per-layer strip).
    ``labels``: a name per method (default: each explanation's method). ``metrics``: per text,
    a :class:`~layersal.metrics.Faithfulness` per method (adds the numbers and a deletion curve).
    """
    groups = _grouped(explanations)
    n_methods = len(groups[0])
    if labels is not None and len(labels) != n_methods:
        raise InputError(f"got {len(labels)} labels for {n_methods} methods")
    if metrics is not None and len(metrics) != len(groups):
        raise InputError(f"got faithfulness results for {len(metrics)} texts, not {len(groups)}")
    names = list(labels) if labels else [e.method for e in groups[0]]
    signed = [
        any(w.score < -_TINY for group in groups for w in group[m].words) for m in range(n_methods)
    ]
    cards = [
        _card(group, names, None if metrics is None else metrics[i], i + 1, metric_setting, signed)
        for i, group in enumerate(groups)
    ]
    main = groups[0][0]
    models = sorted({g[0].model for g in groups})
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            title=title,
            cards=cards,
            models=", ".join(models),
            counted=_counted(groups),
            methods=names,
            options=_options(main),
            summary=None
            if metrics is None or len(groups) < 2
            else _summary(names, metrics, groups[0][0].score is not None),
            metric_columns=METRIC_COLUMNS,
            metric_setting=metric_setting,
            version=_version(),
        )
    )


def render_card(
    explanation: Explanation | Sequence[Explanation],
    *,
    labels: Sequence[str] | None = None,
    metrics: Sequence[Faithfulness] | None = None,
) -> str:
    """One text's card as an HTML fragment (its own scoped style; what Jupyter shows)."""
    group = _grouped([explanation])[0]
    card = _card(group, labels, metrics, None, "token level, hidden with [MASK]")
    return (
        _env()
        .get_template("fragment.html.j2")
        .render(c=card, metric_columns=METRIC_COLUMNS, options=_options(group[0]))
    )


def write_report(path: str | Path, html: str) -> Path:
    """Write ``html`` to ``path`` (parent folders made); a clear error if that fails."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def _options(explanation: Explanation) -> dict[str, Any]:
    """How the main method ran: one plain sentence, and every option behind a disclosure."""
    return {
        "sentence": plain_sentence(explanation),
        "details": [(k, str(v)) for k, v in option_details(explanation)],
    }


def _version() -> str:
    from ..version import __version__

    return __version__


__all__ = ["Scale", "render_card", "render_report", "word_scores", "write_report"]
