"""How an explanation was computed, in words for people: where it was taken, with which
rules, and why ``auto`` chose that. The terminal, the HTML report and the web app's card say
it the same way; the full options and auto's evidence stay one click away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..explanation import Explanation

# options every method's record carries that say nothing about how the scores were made
_NOT_SHOWN = ("auto", "top_k", "layer_report")


def how(explanation: Explanation) -> list[str]:
    """Where and how the explanation was computed: layer, rule set, decoding, auto's source."""
    options = explanation.options
    layer = next((r for r in explanation.layers if r.layer == explanation.layer), None)
    where = (
        "on the input embeddings" if explanation.layer is None else f"at layer {explanation.layer}"
    )
    parts = [f"{explanation.method} {where}"]
    if options.get("rule"):
        parts.append(f"rule {options['rule']}")
    if options.get("decode") is False:
        parts.append("not decoded")
    elif options.get("decode"):
        coherence = (
            f", coherence {layer.coherence:.2f}" if layer and layer.coherence is not None else ""
        )
        parts.append(f"decoded ({explanation.decoder}{coherence})")
    if isinstance(options.get("auto"), dict):
        parts.append("chosen by auto")
    budget = options.get("budget")
    if isinstance(budget, dict) and "passes" in budget:
        parts.append(f"picked for a budget of {budget['passes']} passes per text")
    return parts


def plain_sentence(explanation: Explanation) -> str:
    """One sentence for people: what explained the prediction, where, and why there."""
    sentence = ", ".join(p for p in how(explanation) if p != "chosen by auto")
    auto = explanation.options.get("auto")
    if isinstance(auto, dict):
        texts = f" on {auto['n_texts']} texts" if auto.get("n_texts") else ""
        source = f" ({auto['source']})" if auto.get("source") else ""
        sentence += (
            "; chosen automatically as the most faithful setting for this model: hiding its "
            "top words changed the prediction most, and keeping only them changed it least"
            f"{texts}{source}"
        )
    return f"Explained with {sentence}."


def option_details(explanation: Explanation) -> list[tuple[str, Any]]:
    """Every option the method ran with, and auto's full reasoning where it chose them."""
    shown = [(k, v) for k, v in explanation.options.items() if k not in _NOT_SHOWN]
    auto = explanation.options.get("auto")
    if isinstance(auto, dict) and auto.get("reason"):
        shown.append(("auto", auto["reason"]))
    return shown
