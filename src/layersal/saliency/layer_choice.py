"""``layer="auto"``: pick the DLS layer by measured, label-free faithfulness.

For every layer that receives position gradient, DLS scores are computed on a calibration
sample of unlabelled texts (all layers come from the same forward + backward pass) and judged
by comprehensiveness AOPC against the model's own predictions. The best layer is cached per
model and per DLS settings, and every explanation that uses it says why it was chosen.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..encoding import encode, model_input_names
from ..models import LoadedModel
from .base import run_method
from .dls import DLSOptions

MIN_CACHED_TEXTS = 16


@dataclass
class AutoLayer:
    """The layer ``auto`` chose, with the evidence."""

    layer: int
    aopc: dict[int, float]
    n_texts: int
    source: str
    reason: str


def cache_file() -> Path:
    """Where calibrated layers are kept: ``$LAYERSAL_CACHE`` or ``~/.cache/layersal``."""
    root = os.environ.get("LAYERSAL_CACHE") or Path.home() / ".cache" / "layersal"
    return Path(root) / "auto_layer.json"


def cache_key(lm: LoadedModel, options: DLSOptions) -> str:
    """Identifies the model files and the DLS settings that affect layer quality."""
    digest = hashlib.sha256()
    for file in sorted(lm.path.glob("*.json")) + sorted(lm.path.glob("*.safetensors")):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}".encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
    digest.update(lm.lm_head.source.encode())
    settings = (options.saliency, options.apply_relu, options.decode, options.tau, options.weights)
    digest.update(repr(settings).encode())
    return digest.hexdigest()[:24]


def _read_cache() -> dict[str, Any]:
    try:
        return json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def cached_layer(lm: LoadedModel, options: DLSOptions) -> AutoLayer | None:
    """A previously calibrated layer for this model and these settings, if any."""
    entry = _read_cache().get(cache_key(lm, options))
    if not entry:
        return None
    return AutoLayer(
        layer=int(entry["layer"]),
        aopc={int(k): float(v) for k, v in entry["aopc"].items()},
        n_texts=int(entry["n_texts"]),
        source="cache",
        reason=entry["reason"],
    )


def store_layer(lm: LoadedModel, options: DLSOptions, choice: AutoLayer) -> None:
    """Remember a calibration (only when it used at least ``MIN_CACHED_TEXTS`` texts)."""
    if choice.n_texts < MIN_CACHED_TEXTS:
        return
    data = _read_cache()
    record = asdict(choice)
    record["aopc"] = {str(k): v for k, v in choice.aopc.items()}
    data[cache_key(lm, options)] = record
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
    temporary.replace(path)


def calibrate_layer(
    lm: LoadedModel,
    texts: list[str],
    options: DLSOptions,
    *,
    max_texts: int = 64,
    batch_size: int = 16,
) -> AutoLayer:
    """Choose the layer whose DLS scores have the highest comprehensiveness AOPC on ``texts``.

    Uses the first ``max_texts`` texts, no labels: the target is the model's own prediction.
    """
    from ..evaluate import predictor, score_batch

    sample = texts[:max_texts]
    fixed = replace(options, layer=0, layer_report=True, top_k=0)
    predict = predictor(lm)
    inputs = model_input_names(lm.model)
    per_layer: dict[int, list[float]] = {}
    for start in range(0, len(sample), batch_size):
        encoded = encode(lm.tokenizer, sample[start : start + batch_size], lm.max_length, inputs)
        result = run_method("dls", lm, encoded, None, asdict(fixed)).detail
        for layer, saliency in result.layers.items():
            if not bool(saliency.has_gradient.any()):
                continue
            metrics = score_batch(
                lm, encoded, saliency.scores, result.pass_.targets, predict=predict, steps=1, loo=False
            )
            per_layer.setdefault(layer, []).extend(m.aopc_comprehensiveness for m in metrics)
    aopc = {layer: float(np.mean(values)) for layer, values in sorted(per_layer.items())}
    best = max(aopc, key=lambda layer: (aopc[layer], layer))
    ranked = ", ".join(f"{layer}: {value:.3f}" for layer, value in aopc.items())
    reason = (
        f"layer {best} had the highest comprehensiveness AOPC ({aopc[best]:.3f}) on "
        f"{len(sample)} unlabelled texts (per layer: {ranked})"
    )
    return AutoLayer(best, aopc, len(sample), "calibrated", reason)


def resolve_auto(lm: LoadedModel, texts: list[str], options: DLSOptions, **kwargs: Any) -> AutoLayer:
    """The cached choice for this model and settings, else a calibration on ``texts``."""
    cached = cached_layer(lm, options)
    if cached is not None:
        return cached
    choice = calibrate_layer(lm, texts, options, **kwargs)
    store_layer(lm, options, choice)
    return choice
