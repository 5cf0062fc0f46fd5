"""Attention baselines: ``attention`` (last layer, pooled row) and ``rollout``.

Both read the attention of the position the classifier pools: [CLS] (position 0) for encoders,
the last real token for decoder-only models (which pad on the right).

Both need the attention probabilities, which PyTorch's fused (sdpa) attention does not
return: the model is switched to eager attention for the one forward and switched back
afterwards. Definitions: ``docs/methods.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ..encoding import Encoded
from ..errors import InputError
from ..models import LoadedModel
from ._common import PassCounter, on_device
from .base import Attribution, register


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Use eager attention inside the block; restore the model's own setting after it."""
    current = getattr(model.config, "_attn_implementation", None)
    setter = getattr(model, "set_attn_implementation", None)
    if current == "eager" or current is None or setter is None:
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(current)


def attention_maps(lm: LoadedModel, encoded: Encoded) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits ``(B, C)`` and per-layer attention probabilities ``(B, H, n, n)`` (one forward)."""
    with eager_attention(lm.model), torch.no_grad():
        out = lm.model(**on_device(encoded, lm.device), output_attentions=True)
    attentions = list(getattr(out, "attentions", None) or ())
    if not attentions:
        raise InputError(
            f"model {lm.name!r} returned no attention weights (output_attentions=True), so "
            "attention-based methods cannot explain it"
        )
    return out.logits.float(), [a.float() for a in attentions]


def pooled_rows(lm: LoadedModel, encoded: Encoded, maps: torch.Tensor) -> torch.Tensor:
    """Row of ``maps`` (``(B, n, n)``) at the position each text is pooled at: ``(B, n)``."""
    if lm.family is not None and lm.family.causal:
        last = encoded.attention_mask.sum(-1).to(maps.device) - 1
        return maps[torch.arange(maps.shape[0], device=maps.device), last]
    return maps[:, 0, :]


def _result(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None,
    scores: torch.Tensor,
    logits: torch.Tensor,
    counter: PassCounter,
) -> Attribution:
    chosen = logits.argmax(-1) if targets is None else targets.to(logits.device).long()
    return counter.result(encoded, scores * encoded.content.to(scores.device), logits, chosen)


@register("attention")
def attention(
    lm: LoadedModel, encoded: Encoded, targets: torch.Tensor | None = None
) -> Attribution:
    """Last layer's attention from the pooled position to each token, averaged over heads.

    The same for every target class.
    """
    with PassCounter(lm.model) as counter:
        logits, maps = attention_maps(lm, encoded)
    return _result(
        lm, encoded, targets, pooled_rows(lm, encoded, maps[-1].mean(1)), logits, counter
    )


def rollout_matrix(maps: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema (2020): prod over layers of rownorm(mean_heads(A_l) + I), ``(B, n, n)``."""
    batch, _, n, _ = maps[0].shape
    eye = torch.eye(n, dtype=maps[0].dtype, device=maps[0].device)
    rolled = eye.expand(batch, n, n)
    for layer in maps:
        mixed = layer.mean(1) + eye
        mixed = mixed / mixed.sum(-1, keepdim=True)
        rolled = mixed @ rolled
    return rolled


@register("rollout")
def rollout(lm: LoadedModel, encoded: Encoded, targets: torch.Tensor | None = None) -> Attribution:
    """Attention rollout read at the pooled row; the same for every target class."""
    with PassCounter(lm.model) as counter:
        logits, maps = attention_maps(lm, encoded)
    rolled = pooled_rows(lm, encoded, rollout_matrix(maps))
    return _result(lm, encoded, targets, rolled, logits, counter)
