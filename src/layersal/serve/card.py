"""The HTML download of the web app: one self-contained page with a card per explanation.

The page comes from :func:`layersal.report.html.render_report` (the library's report renderer)
when it can be imported; otherwise from the minimal cards below. Everything taken from the
text or the model is escaped. ``create_app(render=...)`` swaps the whole renderer.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ..explanation import Explanation

_POSITIVE = (220, 50, 47)
_NEGATIVE = (38, 139, 210)


def render_html(explanations: Sequence[Explanation], title: str = "layersal explanation") -> str:
    """A standalone HTML document (no scripts, no network) with one card per explanation."""
    try:
        from ..report.html import render_report
    except ImportError:  # the library's renderer (or jinja2) is not there: minimal cards
        return minimal_page(explanations, title)
    return render_report(list(explanations), title=title)


def minimal_page(explanations: Sequence[Explanation], title: str = "layersal explanation") -> str:
    """The fallback page: :func:`minimal_card` per explanation."""
    cards = "\n".join(minimal_card(e) for e in explanations)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;"
        "padding:0 1rem;color:#222}.layersal-card{border:1px solid #ddd;border-radius:8px;"
        "padding:1rem;margin:1rem 0}.layersal-heat{line-height:2;font-size:1.1rem}"
        ".layersal-heat span{padding:.1rem .15rem;border-radius:3px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;"
        "text-align:left}.dim{color:#666}</style></head><body>\n"
        f"{cards}\n</body></html>\n"
    )


def _shade(score: float, scale: float) -> str:
    strength = 0.0 if scale <= 0 else min(1.0, abs(score) / scale)
    base = _POSITIVE if score >= 0 else _NEGATIVE
    r, g, b = (round(255 + (c - 255) * strength) for c in base)
    ink = "#fff" if strength > 0.6 else "#000"
    return f"background:rgb({r},{g},{b});color:{ink}"


def minimal_card(e: Explanation) -> str:
    """Prediction, probabilities, word heat-map and per-layer coherence, all escaped."""
    scale = max((abs(w.score) for w in e.words), default=0.0)
    heat, cursor = [], 0
    for word in e.words:
        heat.append(escape(e.text[cursor : word.start]))
        heat.append(
            f'<span style="{_shade(word.score, scale)}" title="{word.score:.4g}">'
            f"{escape(e.text[word.start : word.end])}</span>"
        )
        cursor = word.end
    heat.append(escape(e.text[cursor:]))
    probs = ", ".join(f"{escape(label)} {p:.3f}" for label, p in e.probabilities.items())
    rows = "".join(
        f"<tr><td>{r.layer}{' (used)' if r.layer == e.layer else ''}</td>"
        f"<td>{'' if r.coherence is None else f'{r.coherence:.3f}'}</td>"
        f"<td>{'yes' if r.has_position_gradient else 'no'}</td></tr>"
        for r in e.layers
    )
    layers = (
        f"<table><tr><th>layer</th><th>coherence</th><th>position gradient</th></tr>{rows}</table>"
        if rows
        else ""
    )
    target = "" if e.target == e.prediction else f" &middot; explaining <b>{escape(e.target)}</b>"
    return (
        '<div class="layersal-card">'
        f"<div><b>prediction:</b> {escape(e.prediction)} <span class=\"dim\">({probs})</span>{target}</div>"
        f'<p class="layersal-heat">{"".join(heat)}</p>'
        f'<div class="dim">{escape(e.method)}'
        f"{'' if e.layer is None else f' at layer {e.layer}'}, decoder: {escape(e.decoder)}, "
        f"model: {escape(e.model)}{' (text truncated)' if e.truncated else ''}</div>"
        f"{layers}</div>"
    )
