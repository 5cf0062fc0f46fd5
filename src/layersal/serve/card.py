"""The HTML download of the web app: one self-contained page with a card per explanation.

The page is :func:`layersal.report.html.render_report`, the library's report renderer
(everything taken from the text or the model is escaped there). ``create_app(render=...)``
swaps the whole renderer.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..explanation import Explanation
from ..report.html import render_report


def render_html(explanations: Sequence[Explanation], title: str = "layersal explanation") -> str:
    """A standalone HTML document (no scripts, no network) with one card per explanation."""
    return render_report(list(explanations), title=title)
