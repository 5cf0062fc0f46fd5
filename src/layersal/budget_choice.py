"""``explain(..., budget=N)``: the most faithful method known for at most ``N`` passes per text.

What is known is the model card's ``frontier`` (written by ``scripts/card_frontier.py`` from
a ``layersal bench`` run on the model's own data: every benchmarked method with its measured
passes per text and its comprehensiveness and sufficiency AOPC). It counts only for the
weights whose SHA-256 it records. The choice is the point with the best comprehensiveness
minus sufficiency AOPC (the criterion ``layer="auto"`` uses) among those that fit the budget,
fewer passes breaking a tie. A model without a frontier gets the default whatever the
budget: what beats the default at a given budget differs between models (on the bundled
SST-2 models ``shapley_control_variate`` fitted in log-odds from 32 passes, on the AG News
ones nothing below Shapley sampling's ~950 passes; docs/benchmarks.md), and a method that
needs more depends on the text's length, which a budget cannot know before the text is
read; ``layersal bench`` and
``scripts/card_frontier.py`` measure the frontier for a model of your own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .checkpoints import read_card
from .errors import InputError
from .models import LoadedModel
from .saliency import check_method
from .saliency.auto_store import model_digest

DEFAULT_METHOD = "dls"
DEFAULT_PASSES = 2  # one forward and one backward
FRONTIER = "frontier"


@dataclass(frozen=True)
class BudgetChoice:
    """The method a budget picked, with its options, its passes per text (measured, or
    declared where nothing was measured) and why."""

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    passes: float = DEFAULT_PASSES
    source: str = "default"
    reason: str = ""

    def record(self, budget: int) -> dict[str, Any]:
        """What an explanation records of the choice (``options["budget"]``)."""
        return {
            "passes": budget,
            "method": self.method,
            "options": dict(self.options),
            "passes_per_text": self.passes,
            "source": self.source,
            "reason": self.reason,
        }


def check_budget(budget: Any) -> int:
    """A budget is a whole number of passes per text, at least 1."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a whole number of passes per text >= 1, not {budget!r}")
    return budget


def budget_alone(budget: Any, method_given: bool) -> int:
    """A budget given instead of a method (every face asks this one question): a whole number
    of passes per text, with no method or method option beside it."""
    budget = check_budget(budget)
    if method_given:
        raise InputError(
            "give a method (with its options) or a budget of passes per text, not both: a "
            "budget picks the method and its options itself"
        )
    return budget


def card_frontier(lm: LoadedModel) -> list[dict[str, Any]] | None:
    """The measured points of the model card's frontier, when it was measured on these
    weights (``None`` otherwise)."""
    entry = read_card(lm.path).get(FRONTIER) if lm.path is not None else None
    if not isinstance(entry, dict) or not isinstance(entry.get("points"), list):
        return None
    if entry.get("weights_sha256") != model_digest(lm):
        return None
    points = [p for p in entry["points"] if _valid(p)]
    return points or None


def _valid(point: Any) -> bool:
    """A point of numbers whose method and options this version still runs."""
    if not isinstance(point, dict) or not isinstance(point.get("method"), str):
        return False
    numbers = ("passes_per_text", "aopc_comprehensiveness", "aopc_sufficiency")
    if not all(isinstance(point.get(k), (int, float)) for k in numbers):
        return False
    try:
        check_method(point["method"], dict(point.get("options") or {}))
    except (InputError, TypeError):
        return False
    return True


def choose(frontier: list[dict[str, Any]] | None, budget: int) -> BudgetChoice:
    """The method for ``budget`` passes per text, from measured ``frontier`` points (or the
    rule for a model without them, see the module's docstring)."""
    budget = check_budget(budget)
    if frontier:
        fits = [p for p in frontier if p["passes_per_text"] <= budget]
        if fits:
            best = max(
                fits,
                key=lambda p: (
                    p["aopc_comprehensiveness"] - p["aopc_sufficiency"],
                    -p["passes_per_text"],
                ),
            )
            value = best["aopc_comprehensiveness"] - best["aopc_sufficiency"]
            return BudgetChoice(
                best["method"],
                dict(best.get("options") or {}),
                float(best["passes_per_text"]),
                "model card",
                f"best measured comp. - suff. AOPC ({value:.3f}) of the {len(fits)} of "
                f"{len(frontier)} measured methods within {budget} passes per text",
            )
        return BudgetChoice(
            DEFAULT_METHOD,
            reason=f"no measured method fits {budget} passes per text: the default, "
            f"{DEFAULT_PASSES} passes",
        )
    return BudgetChoice(
        DEFAULT_METHOD,
        reason="no measured frontier for this model (scripts/card_frontier.py writes one from "
        f"a layersal bench run): the default, {DEFAULT_PASSES} passes",
    )


def choose_for(lm: LoadedModel, budget: int) -> BudgetChoice:
    """:func:`choose` on ``lm``'s card frontier."""
    return choose(card_frontier(lm), budget)
