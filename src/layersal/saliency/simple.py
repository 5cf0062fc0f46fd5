"""``gradcam`` (DLS without decoding, the ablation) and ``random`` (the floor).

Definitions: ``docs/methods.md``.
"""

from __future__ import annotations

import torch

from ..encoding import Encoded
from ..errors import InputError
from ..models import LoadedModel
from ._common import PassCounter, prediction, seed_value, text_seed
from .base import Attribution, register
from .dls import DLSOptions, run_dls


@register("gradcam")
def gradcam(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    layer: int = -2,
    rule: str = "gradient",
) -> Attribution:
    """DLS position saliency at ``layer`` without decoding: ReLU(alpha_l . h_l^i) for token i.

    ``run_dls(..., DLSOptions(layer=layer, saliency="gradcam", decode=False))``: one forward
    and one backward, under propagation ``rule``. The default -2 is the last layer whose
    positions still get gradient in a two-layer model (the last layer of a [CLS]-pooled
    classifier gets none).
    """
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise InputError(f"layer must be an integer, not {layer!r}")
    options = DLSOptions(
        layer=layer, rule=rule, saliency="gradcam", decode=False, layer_report=False
    )
    with PassCounter(lm.model) as counter:
        result = run_dls(lm, encoded, options, targets)
    pass_ = result.pass_
    return counter.result(
        encoded, result.scores(), pass_.logits, pass_.targets, list(result.chosen)
    )


@register("random")
def random(
    lm: LoadedModel, encoded: Encoded, targets: torch.Tensor | None = None, *, seed: int = 0
) -> Attribution:
    """U(0, 1) scores on content tokens, seeded per text (the floor any method should beat)."""
    seed = seed_value(seed)
    with PassCounter(lm.model) as counter:
        logits, chosen = prediction(lm, encoded, targets)
    scores = torch.zeros(encoded.input_ids.shape, dtype=torch.float32)
    for row in range(len(encoded)):
        ids = encoded.input_ids[row][encoded.attention_mask[row].bool()].tolist()
        generator = torch.Generator().manual_seed(text_seed(seed, ids))
        content = encoded.content[row]
        scores[row, content] = torch.rand(int(content.sum()), generator=generator)
    return counter.result(encoded, scores.to(logits.device), logits, chosen)
