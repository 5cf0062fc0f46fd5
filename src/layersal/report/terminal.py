"""Terminal rendering with rich: a coloured word heat-map and per-layer tables."""

from __future__ import annotations

import re

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..explanation import Explanation
from .provenance import how

# Control characters other than tab and newline (escape sequences, bells, NULs) would act on the
# terminal: they are shown as \x.. escapes instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_POSITIVE = (220, 50, 47)
_NEGATIVE = (38, 139, 210)


def visible(text: str) -> str:
    """``text`` safe to print: control characters as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _shade(score: float, scale: float) -> str:
    """Background colour for a score: red for positive, blue for negative, white for 0."""
    strength = 0.0 if scale <= 0 else min(1.0, abs(score) / scale)
    base = _POSITIVE if score >= 0 else _NEGATIVE
    r, g, b = (round(255 + (c - 255) * strength) for c in base)
    ink = "white" if strength > 0.6 else "black"
    return f"{ink} on rgb({r},{g},{b})"


def heatmap(explanation: Explanation) -> Text:
    """The text with each word coloured by its score (relative to the largest |score|); a
    pair's two texts on two lines, each under its own marker (a zero-shot row's second text
    under ``hypothesis:``), on one colour scale. An entity's words are underlined."""
    scale = max((abs(w.score) for w in explanation.words), default=0.0)
    out = Text()
    paired = explanation.text_pair is not None
    zero_shot = explanation.task == "zero_shot"
    entity = explanation.entity
    for segment, text in enumerate(explanation.texts):
        if zero_shot and segment:
            out.append("\nhypothesis: ", style="dim")
        elif paired and not zero_shot:
            out.append(("\n" if segment else "") + f"[{segment + 1}] ", style="dim")
        cursor = 0
        for word in (w for w in explanation.words if w.segment == segment):
            style = _shade(word.score, scale)
            if entity is not None and entity["start"] < word.end and word.start < entity["end"]:
                style += " underline"
            out.append(visible(text[cursor : word.start]))
            out.append(visible(text[word.start : word.end]), style=style)
            cursor = word.end
        out.append(visible(text[cursor:]))
    return out


def entity_text(entity: dict, label: bool = True) -> str:
    """``"Angela Merkel" PER 0.412``: an entity as one line names it."""
    word = f'"{visible(entity["word"])}"'
    return f"{word} {entity['label']} {entity['probability']:.3f}" if label else word


def entities_line(key: object, explanations: list[Explanation]) -> Text:
    """The line that opens a token classifier's text: its entities, each with its label and
    probability, or that it has none."""
    line = Text.assemble((f"text {key}: ", "bold"))
    if not explanations:
        line.append("no entity", style="bold yellow")
        return line
    count = len(explanations)
    line.append(f"{count} {'entity' if count == 1 else 'entities'}: ", style="bold")
    line.append(", ".join(entity_text(e.entity) for e in explanations if e.entity is not None))
    return line


def summary(explanation: Explanation, top: int = 5) -> Group:
    """Prediction, probabilities, heat-map, top words and the layer used."""
    if explanation.entity is not None:  # a token classifier's entity
        entity = explanation.entity
        head = Text.assemble(
            ("entity: ", "bold"),
            (entity_text(entity, label=False), "bold green"),
            f" {entity['label']}, probability {entity['probability']:.3f}",
            (f"  (characters {entity['start']}:{entity['end']})", "dim"),
        )
        types = ", ".join(f"{label} {p:.3f}" for label, p in explanation.probabilities.items())
        head.append(f"  span's types: {types}", style="dim")
    elif explanation.score is not None:  # a task that predicts a number
        head = Text.assemble(("score: ", "bold"), (explanation.prediction, "bold green"))
        head.append("  (word scores in its units: + raised it, - lowered it)", style="dim")
    else:
        probs = ", ".join(f"{label} {p:.3f}" for label, p in explanation.probabilities.items())
        head = Text.assemble(
            ("prediction: ", "bold"),
            (explanation.prediction, "bold green"),
            f"  ({probs})",
        )
    if (
        explanation.entity is None
        and explanation.score is None
        and explanation.target != explanation.prediction
    ):
        head.append(f"  explaining: {explanation.target}", style="bold yellow")
    detail = Text(", ".join(how(explanation)) + f", model: {explanation.model}", style="dim")
    tops = Text("top words: ", style="bold")
    words = explanation.words
    if explanation.task == "zero_shot":  # the user's text, not the label's hypothesis
        words = [w for w in words if w.segment == 0]
    ranked = (  # a score's words: those that moved it most, either way
        sorted(words, key=lambda w: -abs(w.score))[:top]
        if explanation.score is not None
        else sorted(words, key=lambda w: w.score, reverse=True)[:top]
    )
    for i, word in enumerate(ranked):
        tops.append(("" if i == 0 else ", ") + f"{visible(word.text)} {word.score:.3g}")
    parts = [head, heatmap(explanation), tops, detail]
    if explanation.truncated:
        parts.append(Text("warning: text was truncated to the model's maximum length", "yellow"))
    return Group(*parts)


def layer_table(explanation: Explanation, top: int = 3) -> Group:
    """Coherence per layer, then each input token's top decoded tokens at every layer."""
    summary_table = Table(title="semantic coherence per layer", title_justify="left")
    own = "next token in top-1" if explanation.decoder == "lm_head" else "own token in top-1"
    for column in ("layer", "coherence", own, "position gradient", "note"):
        summary_table.add_column(column)
    for report in explanation.layers:
        ranks = [r for r in report.own_rank or [] if r >= 0]  # -1: no next token to predict
        share = sum(r == 0 for r in ranks) / len(ranks) if ranks else 0.0
        marker = " <- used" if report.layer == explanation.layer else ""
        summary_table.add_row(
            f"{report.layer}{marker}",
            "-" if report.coherence is None else f"{report.coherence:.3f}",
            f"{share:.0%}",
            "yes" if report.has_position_gradient else "no",
            "[CLS] only" if not report.has_position_gradient else "",
        )
    tokens = Table(title=f"top-{top} decoded tokens per position", title_justify="left")
    tokens.add_column("token")
    for report in explanation.layers:
        tokens.add_column(f"layer {report.layer}")
    for index, token in enumerate(explanation.tokens):
        cells = []
        for report in explanation.layers:
            decoded = (report.top_tokens or [[]] * len(explanation.tokens))[index][:top]
            cell = Text()
            for i, piece in enumerate(decoded):
                cell.append(
                    ("" if i == 0 else " ") + visible(piece),
                    style="bold" if piece == token.text else "",
                )
            cells.append(cell)
        tokens.add_row(visible(token.text), *cells)
    parts: list[Text | Table] = [summary_table, tokens]
    if explanation.entity is not None:  # which of a text's entities these layers explain
        parts.insert(0, Text.assemble(("entity: ", "bold"), entity_text(explanation.entity)))
    elif explanation.task == "zero_shot":
        parts.insert(0, Text.assemble(("label: ", "bold"), visible(explanation.target)))
    return Group(*parts)
