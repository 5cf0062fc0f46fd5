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

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..encoding import encode, model_input_names
from ..errors import InputError
from ..inputs import has_text, item_length
from ..models import CARD_FILE, LoadedModel, read_card
from .base import Prepared
from .dls import INPUT, DLSOptions, candidate_scores

MIN_CACHED_TEXTS = 16
SCREEN_TEXTS = 8
KEEP_PER_RULE = 2
RACE_Z = 2.0
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


def _allowed(key: str, options: DLSOptions) -> bool:
    rule, _, decode = parse_key(key)
    return (options.rule is None or rule == options.rule) and (
        options.decode is None or decode == options.decode
    )


def choose(table: Table, options: DLSOptions, n_texts: int, source: str) -> AutoChoice:
    """The configuration of ``table`` with the best :data:`CRITERION` among those ``options``
    allow and that were measured on every text (the race's survivors)."""
    allowed = {key: value for key, value in table.items() if _allowed(key, options)}
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
    return AutoChoice(rule, layer, decode, _records(table), n_texts, source, reason)


def calibrate(
    lm: LoadedModel,
    texts: list[str],
    options: DLSOptions,
    *,
    max_texts: int = 64,
    batch_size: int = 16,
    screen: int = SCREEN_TEXTS,
    keep: int = KEEP_PER_RULE,
    race_z: float = RACE_Z,
) -> tuple[Table, int]:
    """:data:`CRITERION` of the configurations ``options`` allow, on the first ``max_texts``
    of ``texts``.

    No labels: the target is the model's own prediction. The perturbed passes that score a
    configuration dominate the cost, so the search spends them where they decide something:
    every configuration is scored on ``screen`` texts spread over the sample's length range;
    the ``keep`` best of each rule set go on to the rest, a batch at a time, and after each
    batch a finalist whose criterion is below the leader's by more than ``race_z`` standard
    errors of their paired difference drops out (a race). The table holds every finalist with
    the texts it was measured on; those still running at the end were measured on all of
    them, and the choice is made among those. Returns the table and the number of texts.
    """
    sample = [t for t in texts if has_text(t)][:max_texts]
    if not sample:
        raise InputError("layer='auto' needs at least one non-empty text to calibrate on")
    sample.sort(key=item_length)  # batches of similar length: less padding in every pass
    if len(sample) > screen:
        step = len(sample) / screen
        first = sorted({int(i * step) for i in range(screen)})
    else:
        first = list(range(len(sample)))
    rest = [i for i in range(len(sample)) if i not in set(first)]
    with lm.borrowed():  # eval mode; a model object's own modes restored after
        per_config = score_configs(lm, [sample[i] for i in first], options, None, batch_size)
        screened = _means(per_config)
        finalists: set[str] = set()
        for rule in rules_for(options, lm):
            ranked = sorted(
                (k for k in screened if parse_key(k)[0] == rule), key=lambda k: -screened[k].score
            )
            finalists.update(ranked[:keep])
        running = set(finalists)
        for start in range(0, len(rest), batch_size):
            chunk = [sample[i] for i in rest[start : start + batch_size]]
            for key, values in score_configs(lm, chunk, options, running, batch_size).items():
                for metric, column in values.items():
                    per_config[key][metric].extend(column)
            running = race(per_config, running, race_z)
    return _means({key: per_config[key] for key in sorted(finalists)}), len(sample)


def race(per_config: dict[str, dict[str, list[float]]], running: set[str], z: float) -> set[str]:
    """The configurations of ``running`` not clearly worse than the leader: a paired
    difference of :data:`CRITERION` over the texts all of them were measured on, below ``z``
    standard errors, stays in the race."""
    if len(running) < 2:
        return set(running)
    criterion = {
        key: np.array(per_config[key]["comprehensiveness"])
        - np.array(per_config[key]["sufficiency"])
        for key in running
    }
    leader = max(sorted(running), key=lambda key: float(criterion[key].mean()))
    if len(criterion[leader]) < 2:
        return set(running)
    staying = {leader}
    for key in running - {leader}:
        gap = criterion[leader] - criterion[key]
        error = float(gap.std(ddof=1)) / np.sqrt(len(gap))
        if float(gap.mean()) <= 0 or float(gap.mean()) <= z * error:
            staying.add(key)
    return staying


def _means(per_config: dict[str, dict[str, list[float]]]) -> Table:
    return {
        key: Measured(
            float(np.mean(values["comprehensiveness"])),
            float(np.mean(values["sufficiency"])),
            len(values["comprehensiveness"]),
        )
        for key, values in per_config.items()
    }


def score_configs(
    lm: LoadedModel, texts: list[str], options: DLSOptions, only: set[str] | None, batch_size: int
) -> dict[str, dict[str, list[float]]]:
    """Per configuration that ``options`` allow (all, or those in ``only``): each text's
    comprehensiveness and sufficiency AOPC, ``{key: {metric: [per text]}}``."""
    from ..evaluate import hide_ids, predictor, segment_ids
    from ..metrics import erasure_aopc_many

    predict = predictor(lm)
    inputs = model_input_names(lm.model)
    per_config: dict[str, dict[str, list[float]]] = {}
    for start in range(0, len(texts), batch_size):
        encoded = encode(lm.tokenizer, texts[start : start + batch_size], lm.max_length, inputs)
        keys, score_sets = [], []
        targets = None
        for rule in rules_for(options, lm):
            if only is not None and not any(parse_key(key)[0] == rule for key in only):
                continue
            with lm.autocast():
                targets, candidates = candidate_scores(lm, encoded, options, rule)
            for (layer, decode), scores in candidates.items():
                key = config_key(rule, layer, decode)
                if _allowed(key, options) and (only is None or key in only):
                    keys.append(key)
                    score_sets.append(scores)
        if targets is None or not keys:
            continue
        aopc = erasure_aopc_many(
            predict,
            encoded.input_ids,
            encoded.attention_mask,
            encoded.content,
            score_sets,
            targets,
            mask_id=hide_ids(lm)[0],
            token_type_ids=segment_ids(encoded),
        )
        for s, key in enumerate(keys):
            into = per_config.setdefault(key, {metric: [] for metric in aopc})
            for metric, values in aopc.items():
                into[metric].extend(values[s].tolist())
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
        lm.weights_sha256 = (
            weights_digest(lm.path) if lm.path is not None else tensors_digest(lm.model)
        )
    return lm.weights_sha256


def tensors_digest(model: Any) -> str:
    """SHA-256 of a model object's weights as they are in memory (names, dtypes, shapes,
    bytes): what identifies a model given as an object, fine-tuned in memory or not."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        flat = value.reshape(-1)  # 0-d tensors too
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def card_table(lm: LoadedModel, options: DLSOptions) -> tuple[Table, int] | None:
    """The calibration table shipped in the model's card, when it applies to these weights,
    this LM head, these settings and the unrestricted search."""
    if options.rule is not None or options.decode is not None or lm.path is None:
        return None
    entry = read_card(lm.path).get("calibration")
    if not isinstance(entry, dict) or entry.get("settings") != settings_of(options):
        return None
    if entry.get("criterion") != CRITERION or entry.get("decoder") != lm.decoder:
        return None
    if lm.lm_head.source != str(lm.path):
        return None
    if not set(rules_for(options, lm)) <= set(entry.get("rules", [])):
        return None
    if entry.get("weights_sha256") != model_digest(lm):
        return None
    return _read_table(entry)


def _records(table: Table) -> dict[str, dict[str, float | int]]:
    """``table`` as JSON-ready records (what cards, the cache and a run folder keep)."""
    return {key: value.record() for key, value in sorted(table.items())}


def _read_table(entry: dict[str, Any]) -> tuple[Table, int] | None:
    try:
        return {str(k): Measured.read(v) for k, v in entry["table"].items()}, int(entry["n_texts"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def card_entry(
    lm: LoadedModel, options: DLSOptions, table: Table, n_texts: int, texts: str
) -> dict[str, Any]:
    """What ``scripts/calibrate_cards.py`` writes into a card (``texts`` says which texts)."""
    best = choose(table, options, n_texts, "model card")
    return {
        "weights_sha256": model_digest(lm),
        "decoder": lm.decoder,
        "settings": settings_of(options),
        "rules": list(rules_for(options, lm)),
        "n_texts": n_texts,
        "texts": texts,
        "criterion": CRITERION,
        "metric": METRIC,
        "choice": config_key(best.rule, best.layer, best.decode),
        "table": best.table,
    }


def cache_file() -> Path:
    """Where calibrations are kept: ``$LAYERSAL_CACHE`` or ``~/.cache/layersal``."""
    root = os.environ.get("LAYERSAL_CACHE") or Path.home() / ".cache" / "layersal"
    return Path(root) / "auto_config.json"


def cache_key(lm: LoadedModel, options: DLSOptions) -> str:
    """Identifies the weights (by content), the LM head and the settings of a table."""
    digest = hashlib.sha256()
    digest.update(model_digest(lm).encode())
    if lm.path is None:
        digest.update(lm.model.config.to_json_string().encode())
    else:
        for file in sorted(lm.path.glob("*.json")):
            if file.name != CARD_FILE:
                digest.update(file.read_bytes())
    digest.update(lm.lm_head.source.encode())
    space = [settings_of(options), rules_for(options, lm), options.decode, CRITERION]
    digest.update(json.dumps(space, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_table(lm: LoadedModel, options: DLSOptions) -> tuple[Table, int] | None:
    """A previous calibration's table for this model, these settings and this restriction."""
    entry = _read_cache().get(cache_key(lm, options))
    return _read_table(entry) if isinstance(entry, dict) else None


def store_table(lm: LoadedModel, options: DLSOptions, table: Table, n_texts: int) -> None:
    """Remember a calibration (only when it used at least ``MIN_CACHED_TEXTS`` texts)."""
    if n_texts < MIN_CACHED_TEXTS:
        return
    data = _read_cache()
    data[cache_key(lm, options)] = {"table": _records(table), "n_texts": n_texts}
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
        temporary.replace(path)
    except OSError:
        return


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
