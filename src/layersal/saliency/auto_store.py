"""Where ``auto``'s measurements are kept: the model card (shipped with the bundled models,
valid only for the weights whose SHA-256 it records) and the per-user cache (keyed on the
weights' content hash, the LM head and the settings), with the digests that identify weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import CARD_FILE, read_card
from ..models import LoadedModel
from .auto_configs import (
    CRITERION,
    METRIC,
    Measured,
    Table,
    choose,
    config_key,
    records,
    rules_for,
    settings_of,
)
from .dls import DLSOptions

MIN_CACHED_TEXTS = 16


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


_PLAIN = "whole texts"


def task_key(lm: LoadedModel) -> str:
    """What rows a calibration was measured on: whole texts (or pairs), for every task that
    explains a text as a whole; else the task, as built (a token classifier's tags, a
    zero-shot classifier's labels, template and scoring), since its rows differ."""
    task = lm.task
    return repr(task) if task.focused or task.hypotheses else _PLAIN


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
    if entry.get("task", _PLAIN) != task_key(lm):  # calibrated on another task's rows
        return None
    if lm.lm_head.source != str(lm.path):
        return None
    if not set(rules_for(options, lm)) <= set(entry.get("rules", [])):
        return None
    if entry.get("weights_sha256") != model_digest(lm):
        return None
    return read_table(entry)


def read_table(entry: dict[str, Any]) -> tuple[Table, int] | None:
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
        "task": task_key(lm),
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
    if task_key(lm) != _PLAIN:
        space.append(task_key(lm))
    digest.update(json.dumps(space, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_table(lm: LoadedModel, options: DLSOptions) -> tuple[Table, int] | None:
    """A previous calibration's table for this model, these settings and this restriction."""
    entry = read_cache().get(cache_key(lm, options))
    return read_table(entry) if isinstance(entry, dict) else None


def store_table(lm: LoadedModel, options: DLSOptions, table: Table, n_texts: int) -> None:
    """Remember a calibration (only when it used at least ``MIN_CACHED_TEXTS`` texts)."""
    if n_texts < MIN_CACHED_TEXTS:
        return
    data = read_cache()
    data[cache_key(lm, options)] = {"table": records(table), "n_texts": n_texts}
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
        temporary.replace(path)
    except OSError:
        return
