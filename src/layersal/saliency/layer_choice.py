"""``layer="auto"``: choose the DLS configuration by measured, label-free faithfulness.

A configuration is a propagation rule set, a layer (the word embeddings included) and
decoding on or off. One forward and one backward pass per rule set gives every layer's
relevance, decoded and not (:func:`~layersal.saliency.dls.candidate_scores`); each
configuration's scores on a calibration sample of unlabelled texts are judged against the
model's own predictions by :data:`CRITERION`, comprehensiveness AOPC minus sufficiency AOPC
(hiding the top tokens should hurt the prediction, keeping only them should not), and the
best one is used.

A choice with some dimensions fixed by the user (``rule="cp"``, ``decode=False``) searches
only the configurations it allows. Where the table of the finalists' scores comes from, in
order: the model card (``model_card.json`` -> ``calibration``, shipped with the bundled models
and written by ``scripts/calibrate_cards.py``, valid only for the weights whose SHA-256 it
records, and only for the unrestricted search), the per-user cache (keyed on the weights'
content hash and the restriction), a calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

from ..models import LoadedModel
from .auto_configs import AutoChoice, choose, default_rule
from .auto_race import calibrate
from .auto_store import cached_table, card_table, store_table
from .base import Prepared
from .dls import DLSOptions


def resolve_auto(
    lm: LoadedModel,
    texts: Callable[[], list[str]],
    options: DLSOptions,
    *,
    fresh: bool = False,
    **kwargs: Any,
) -> AutoChoice:
    """The configuration for ``layer="auto"``: from the model card, the cache, or a
    calibration on ``texts()`` (then cached); ``fresh`` skips the card and the cache."""
    if not fresh:
        found = card_table(lm, options)
        if found is not None:
            return choose(found[0], options, found[1], "model card")
        found = cached_table(lm, options)
        if found is not None:
            return choose(found[0], options, found[1], "cache")
    table, n_texts = calibrate(lm, texts(), options, **kwargs)
    if not fresh:
        store_table(lm, options, table, n_texts)
    return choose(
        table, options, n_texts, "calibrated" if not fresh else "calibrated on the given texts"
    )


def prepare(
    model: Callable[[], LoadedModel],
    texts: Callable[[], list[str]],
    options: dict[str, Any],
    parsed: DLSOptions,
    batch_size: int,
    fresh: bool,
) -> Prepared:
    """DLS ``options`` with ``layer="auto"`` replaced by the chosen configuration, what each
    explanation records of the choice, and the evidence a dataset run keeps.

    The one place where ``auto`` is resolved (``explain``, the benchmark and dataset runs all
    reach it through :func:`~layersal.saliency.base.prepare_options`). Options without
    ``layer="auto"`` come back unchanged.
    """
    if parsed.layer != "auto" and parsed.rule is None:
        return Prepared({**options, "rule": default_rule(model())})
    if parsed.layer != "auto":
        return Prepared(dict(options))
    choice = resolve_auto(model(), texts, parsed, fresh=fresh, batch_size=batch_size)
    chosen = choice.options()
    return Prepared(
        options={**options, **chosen},
        recorded={"layer": "auto", "auto": choice_record(choice)},
        settings={
            "auto_layer": chosen["layer"],
            "auto_rule": chosen["rule"],
            "auto_decode": chosen["decode"],
        },
        evidence={**choice_record(choice, table=True), "options": chosen},
    )


def choice_record(choice: AutoChoice, table: bool = False) -> dict[str, Any]:
    """The choice as a JSON-ready dict: recorded in every explanation without the table of
    the finalists' scores (``table=False``), and in full in a dataset run's folder."""
    if table:
        return asdict(choice)
    # field by field: asdict would deep-copy the table only to drop it (a cost on every text)
    return {f.name: getattr(choice, f.name) for f in fields(choice) if f.name != "table"}
