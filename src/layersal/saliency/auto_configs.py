"""The configurations ``layer="auto"`` chooses among, and the choice: a propagation rule set,
a layer (the word embeddings included) and decoding on or off, each judged by :data:`CRITERION`
(comprehensiveness AOPC minus sufficiency AOPC against the model's own prediction, no labels).
:mod:`.auto_race` measures them, :mod:`.auto_store` keeps the measurements, and
:mod:`.layer_choice` puts the three together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..models import LoadedModel
from .dls import INPUT, DLSOptions

AUTO_RULES = ("gradient", "cp", "cp_id", "attnlrp")
FIXED_LAYER_RULE = "cp_id"  # auto's choice on three of the four bundled models
CRITERION = "comprehensiveness - sufficiency AOPC"
METRIC = "[MASK], budgets 1/5/10/20/50%, predicted class"


@dataclass(frozen=True)
class Measured:
    """A configuration's mean comprehensiveness and sufficiency AOPC over ``n_texts`` texts."""

    comprehensiveness: float
    sufficiency: float
    n_texts: int

    @property
    def score(self) -> float:
        """:data:`CRITERION`: higher is more faithful."""
        return self.comprehensiveness - self.sufficiency

    def record(self) -> dict[str, float | int]:
        return {
            "comprehensiveness": round(self.comprehensiveness, 6),
            "sufficiency": round(self.sufficiency, 6),
            "n_texts": self.n_texts,
        }

    @classmethod
    def read(cls, record: Any) -> Measured:
        return cls(
            float(record["comprehensiveness"]), float(record["sufficiency"]), int(record["n_texts"])
        )


Table = dict[str, Measured]


def config_key(rule: str, layer: int | None, decode: bool) -> str:
    """``rule/layer/decoded|plain``, with ``input`` for the word embeddings."""
    where = INPUT if layer is None else str(layer)
    return f"{rule}/{where}/{'decoded' if decode else 'plain'}"


def parse_key(key: str) -> tuple[str, int | None, bool]:
    rule, where, how = key.split("/")
    return rule, None if where == INPUT else int(where), how == "decoded"


@dataclass
class AutoChoice:
    """The configuration ``auto`` chose, with the evidence."""

    rule: str
    layer: int | None
    decode: bool
    table: dict[str, dict[str, float | int]]
    n_texts: int
    source: str
    reason: str

    def options(self) -> dict[str, Any]:
        """The DLS options that apply the choice."""
        return {
            "layer": INPUT if self.layer is None else self.layer,
            "rule": self.rule,
            "decode": self.decode,
        }


def settings_of(options: DLSOptions) -> dict[str, Any]:
    """The DLS settings that change a configuration's scores (and so the table)."""
    return {
        "saliency": options.saliency,
        "relu": options.apply_relu,
        "tau": options.tau,
        "weights": options.weights,
    }


def default_rule(lm: LoadedModel) -> str:
    """The rule set of a layer the user fixed without naming one: :data:`FIXED_LAYER_RULE`
    where the model's family has a propagation map, else the plain gradient.

    Every rule set beat the plain gradient at every layer of every bundled model, mostly by
    a wide margin, and the plain gradient can even flip a word's sign (docs/benchmarks.md).
    """
    mapped = lm.family is not None and lm.family.propagation is not None
    return FIXED_LAYER_RULE if mapped else "gradient"


def rules_for(options: DLSOptions, lm: LoadedModel) -> tuple[str, ...]:
    """The rule sets a calibration compares: the one the user fixed, else the usual four (only
    ``gradient`` for a model whose family has no propagation map)."""
    if options.rule is not None:
        return (options.rule,)
    mapped = lm.family is not None and lm.family.propagation is not None
    return AUTO_RULES if mapped else ("gradient",)


def is_allowed(key: str, options: DLSOptions) -> bool:
    rule, _, decode = parse_key(key)
    return (options.rule is None or rule == options.rule) and (
        options.decode is None or decode == options.decode
    )


def choose(table: Table, options: DLSOptions, n_texts: int, source: str) -> AutoChoice:
    """The configuration of ``table`` with the best :data:`CRITERION` among those ``options``
    allow and that were measured on every text (the race's survivors)."""
    allowed = {key: value for key, value in table.items() if is_allowed(key, options)}
    if allowed:  # those that stayed in the race to the end
        most = max(value.n_texts for value in allowed.values())
        allowed = {key: value for key, value in allowed.items() if value.n_texts == most}
    if not allowed:
        raise InputError(
            f"no configuration with rule={options.rule!r} and decode={options.decode!r} "
            "could be calibrated for this model"
        )
    best = max(sorted(allowed), key=lambda key: allowed[key].score)
    rule, layer, decode = parse_key(best)
    top = allowed[best]
    # those still in the race first: a mean over fewer (the first, shorter) texts is not
    # comparable with theirs
    others = sorted(
        (k for k in table if k != best), key=lambda key: (key not in allowed, -table[key].score)
    )
    runners = ", ".join(
        f"{key} {table[key].score:.3f}"
        + ("" if key in allowed else f" (out after {table[key].n_texts})")
        for key in others[:3]
    )
    reason = (
        f"{best} had the highest {CRITERION} ({top.score:.3f}: comprehensiveness "
        f"{top.comprehensiveness:.3f}, sufficiency {top.sufficiency:.3f}) of {len(table)} "
        f"finalist configurations on {n_texts} unlabelled texts ({source})"
        + (f"; next: {runners}" if runners else "")
    )
    return AutoChoice(rule, layer, decode, records(table), n_texts, source, reason)


def records(table: Table) -> dict[str, dict[str, float | int]]:
    """``table`` as JSON-ready records (what cards, the cache and a run folder keep)."""
    return {key: value.record() for key, value in sorted(table.items())}
