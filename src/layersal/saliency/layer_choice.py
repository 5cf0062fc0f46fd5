"""``layer="auto"``: choose the DLS configuration by measured, label-free faithfulness.

A configuration is a propagation rule set, a layer (the word embeddings included) and
decoding on or off. One forward and one backward pass per rule set gives every layer's
relevance, decoded and not (:func:`~layersal.saliency.dls.candidate_scores`); each
configuration's scores on a calibration sample of unlabelled texts are judged by
comprehensiveness AOPC against the model's own predictions, and the best one is used.

The table of every configuration's AOPC is kept, so a choice with some dimensions fixed by
the user (``rule="cp"``, ``decode=False``) is read from the same table. Where the table comes
from, in order: the model card (``model_card.json`` -> ``calibration``, shipped with the
bundled models and written by ``scripts/calibrate_cards.py``, valid only for the weights whose
SHA-256 it records), the per-user cache (keyed on the weights' content hash), a calibration.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..encoding import encode, model_input_names
from ..errors import InputError
from ..models import LoadedModel
from .dls import INPUT, DLSOptions, candidate_scores

MIN_CACHED_TEXTS = 16
SCREEN_TEXTS = 8
KEEP_PER_RULE = 2
AUTO_RULES = ("gradient", "cp", "cp_id", "attnlrp")
CARD_FILE = "model_card.json"


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
    aopc: dict[str, float]
    n_texts: int
    source: str
    reason: str

    def options(self) -> dict[str, Any]:
        """The DLS options that apply the choice."""
        return {"layer": INPUT if self.layer is None else self.layer, "rule": self.rule, "decode": self.decode}


def settings_of(options: DLSOptions) -> dict[str, Any]:
    """The DLS settings that change a configuration's scores (and so the table)."""
    return {
        "saliency": options.saliency,
        "relu": options.apply_relu,
        "tau": options.tau,
        "weights": options.weights,
    }


def rules_for(options: DLSOptions, lm: LoadedModel) -> tuple[str, ...]:
    """The rule sets a calibration compares: the usual four (only ``gradient`` for a model
    whose family has no propagation map), plus one the user asked for."""
    mapped = lm.family is not None and lm.family.propagation is not None
    usual = AUTO_RULES if mapped else ("gradient",)
    if options.rule is None or options.rule in usual:
        return usual
    return (*usual, options.rule)


def choose(table: dict[str, float], options: DLSOptions, n_texts: int, source: str) -> AutoChoice:
    """The best configuration of ``table`` among those ``options`` leave free."""
    allowed = {
        key: value
        for key, value in table.items()
        if (options.rule is None or parse_key(key)[0] == options.rule)
        and (options.decode is None or parse_key(key)[2] == options.decode)
    }
    if not allowed:
        raise InputError(
            f"no configuration with rule={options.rule!r} and decode={options.decode!r} "
            "could be calibrated for this model"
        )
    best = max(sorted(allowed), key=lambda key: allowed[key])
    rule, layer, decode = parse_key(best)
    ranked = sorted(allowed.items(), key=lambda item: -item[1])
    runners = ", ".join(f"{key} {value:.3f}" for key, value in ranked[1:4])
    reason = (
        f"{best} had the highest comprehensiveness AOPC ({allowed[best]:.3f}) of the "
        f"{len(allowed)} finalist configurations on {n_texts} unlabelled texts ({source}); "
        f"next: {runners}"
    )
    return AutoChoice(rule, layer, decode, dict(table), n_texts, source, reason)


def calibrate(
    lm: LoadedModel,
    texts: list[str],
    options: DLSOptions,
    *,
    max_texts: int = 64,
    batch_size: int = 16,
    screen: int = SCREEN_TEXTS,
    keep: int = KEEP_PER_RULE,
) -> tuple[dict[str, float], int]:
    """Comprehensiveness AOPC of the configurations on the first ``max_texts`` of ``texts``.

    No labels: the target is the model's own prediction. Two stages keep the cost down (the
    perturbed passes that score a configuration dominate it): every configuration is scored
    on ``screen`` texts spread over the sample's length range; the ``keep`` best of each rule
    set, and the best of each rule set with decoding on and off, go on to the rest. The table
    holds those finalists, each with its mean over every text of the sample, so that any
    choice compares configurations on the same texts. Returns the table and the number of
    texts used.
    """
    sample = [t for t in texts if t.strip()][:max_texts]
    if not sample:
        raise InputError("layer='auto' needs at least one non-empty text to calibrate on")
    sample.sort(key=len)  # batches of similar length: less padding in every perturbed pass
    if len(sample) > screen:
        step = len(sample) / screen
        first = sorted({int(i * step) for i in range(screen)})
    else:
        first = list(range(len(sample)))
    rest = [i for i in range(len(sample)) if i not in set(first)]
    per_config = score_configs(lm, [sample[i] for i in first], options, None, batch_size)
    screened = {key: float(np.mean(values)) for key, values in per_config.items()}
    survivors: set[str] = set()
    for rule in rules_for(options, lm):
        ranked = sorted((k for k in screened if parse_key(k)[0] == rule), key=lambda k: -screened[k])
        survivors.update(ranked[:keep])
        for decode in (False, True):
            survivors.update([k for k in ranked if parse_key(k)[2] == decode][:1])
    more = score_configs(lm, [sample[i] for i in rest], options, survivors, batch_size)
    for key, values in more.items():
        per_config[key].extend(values)
    return {key: float(np.mean(per_config[key])) for key in sorted(survivors)}, len(sample)


def score_configs(
    lm: LoadedModel, texts: list[str], options: DLSOptions, only: set[str] | None, batch_size: int
) -> dict[str, list[float]]:
    """Per configuration (all, or those in ``only``): each text's comprehensiveness AOPC."""
    from ..evaluate import hide_ids, predictor
    from ..metrics import comprehensiveness_many

    predict = predictor(lm)
    inputs = model_input_names(lm.model)
    per_config: dict[str, list[float]] = {}
    for start in range(0, len(texts), batch_size):
        encoded = encode(lm.tokenizer, texts[start : start + batch_size], lm.max_length, inputs)
        keys, score_sets = [], []
        targets = None
        for rule in rules_for(options, lm):
            with lm.autocast():
                targets, candidates = candidate_scores(lm, encoded, options, rule)
            for (layer, decode), scores in candidates.items():
                key = config_key(rule, layer, decode)
                if only is None or key in only:
                    keys.append(key)
                    score_sets.append(scores)
        if targets is None or not keys:
            continue
        aopc = comprehensiveness_many(
            predict,
            encoded.input_ids,
            encoded.attention_mask,
            encoded.content,
            score_sets,
            targets,
            mask_id=hide_ids(lm)[0],
        )
        for key, values in zip(keys, aopc):
            per_config.setdefault(key, []).extend(values.tolist())
    return per_config


def weights_digest(path: Path) -> str:
    """SHA-256 over the checkpoint's safetensors files (names and contents)."""
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")):
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_digest(lm: LoadedModel) -> str:
    """:func:`weights_digest` of the files ``lm`` was loaded from, computed once per load (the
    weights in memory are those, whatever happens to the files later)."""
    if lm.weights_sha256 is None:
        lm.weights_sha256 = weights_digest(lm.path)
    return lm.weights_sha256


def card_table(lm: LoadedModel, options: DLSOptions) -> tuple[dict[str, float], int] | None:
    """The calibration table shipped in the model's card, when it applies to these weights,
    this LM head and these settings."""
    try:
        card = json.loads((lm.path / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = card.get("calibration") if isinstance(card, dict) else None
    if not isinstance(entry, dict) or entry.get("settings") != settings_of(options):
        return None
    if lm.lm_head.source != str(lm.path) or entry.get("decoder") != lm.decoder:
        return None
    if not set(rules_for(options, lm)) <= set(entry.get("rules", [])):
        return None
    if entry.get("weights_sha256") != model_digest(lm):
        return None
    return {str(k): float(v) for k, v in entry["aopc"].items()}, int(entry["n_texts"])


def card_entry(lm: LoadedModel, options: DLSOptions, table: dict[str, float], n_texts: int, texts: str) -> dict[str, Any]:
    """What ``scripts/calibrate_cards.py`` writes into a card (``texts`` says which texts)."""
    return {
        "weights_sha256": model_digest(lm),
        "decoder": lm.decoder,
        "settings": settings_of(options),
        "rules": list(rules_for(options, lm)),
        "n_texts": n_texts,
        "texts": texts,
        "metric": "comprehensiveness AOPC ([MASK], budgets 1/5/10/20/50%, predicted class)",
        "choice": config_key(*_best(table)),
        "aopc": {k: round(v, 6) for k, v in sorted(table.items())},
    }


def _best(table: dict[str, float]) -> tuple[str, int | None, bool]:
    return parse_key(max(sorted(table), key=lambda key: table[key]))


def cache_file() -> Path:
    """Where calibrations are kept: ``$LAYERSAL_CACHE`` or ``~/.cache/layersal``."""
    root = os.environ.get("LAYERSAL_CACHE") or Path.home() / ".cache" / "layersal"
    return Path(root) / "auto_config.json"


def cache_key(lm: LoadedModel, options: DLSOptions) -> str:
    """Identifies the weights (by content), the LM head and the settings of a table."""
    digest = hashlib.sha256()
    digest.update(model_digest(lm).encode())
    for file in sorted(lm.path.glob("*.json")):
        if file.name != CARD_FILE:
            digest.update(file.read_bytes())
    digest.update(lm.lm_head.source.encode())
    digest.update(json.dumps([settings_of(options), rules_for(options, lm)], sort_keys=True).encode())
    return digest.hexdigest()[:24]


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_table(lm: LoadedModel, options: DLSOptions) -> tuple[dict[str, float], int] | None:
    """A previous calibration's table for this model and these settings, if any."""
    entry = _read_cache().get(cache_key(lm, options))
    if not isinstance(entry, dict):
        return None
    try:
        return {str(k): float(v) for k, v in entry["aopc"].items()}, int(entry["n_texts"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def store_table(lm: LoadedModel, options: DLSOptions, table: dict[str, float], n_texts: int) -> None:
    """Remember a calibration (only when it used at least ``MIN_CACHED_TEXTS`` texts)."""
    if n_texts < MIN_CACHED_TEXTS:
        return
    data = _read_cache()
    data[cache_key(lm, options)] = {"aopc": table, "n_texts": n_texts}
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
        temporary.replace(path)
    except OSError:
        return


def resolve_auto(lm: LoadedModel, texts: list[str], options: DLSOptions, **kwargs: Any) -> AutoChoice:
    """The configuration for ``layer="auto"``: from the model card, the cache, or a
    calibration on ``texts`` (then cached)."""
    found = card_table(lm, options)
    if found is not None:
        return choose(found[0], options, found[1], "model card")
    found = cached_table(lm, options)
    if found is not None:
        return choose(found[0], options, found[1], "cache")
    table, n_texts = calibrate(lm, texts, options, **kwargs)
    store_table(lm, options, table, n_texts)
    return choose(table, options, n_texts, "calibrated")


def resolve_options(
    lm: LoadedModel, texts: list[str], options: dict[str, Any], **kwargs: Any
) -> tuple[dict[str, Any], AutoChoice | None]:
    """DLS ``options`` with ``layer="auto"`` replaced by the chosen configuration.

    The one place where ``auto`` is resolved (``explain``, the benchmark and dataset runs).
    Options without ``layer="auto"`` come back unchanged, with no choice.
    """
    parsed = DLSOptions(**options)
    if parsed.layer != "auto":
        return dict(options), None
    choice = resolve_auto(lm, texts, parsed, **kwargs)
    return {**options, **choice.options()}, choice


def choice_record(choice: AutoChoice, table: bool = False) -> dict[str, Any]:
    """The choice as a JSON-ready dict: recorded in every explanation without the table of
    every configuration's AOPC (``table=False``), and in full in a dataset run's folder."""
    record = asdict(choice)
    if not table:
        record.pop("aopc")
    return record
