"""DLS as a registered method (``method="dls"``): :func:`~layersal.saliency.dls.run_dls`, with
``layer="auto"`` made concrete once per job by :mod:`layersal.saliency.layer_choice`.

Kept apart from :mod:`.dls` (the method's maths) because the choice of layer itself runs DLS.
"""

from __future__ import annotations

import torch

from ..encoding import Encoded
from ..models import LoadedModel
from .base import Attribution, register
from .dls import INPUT, DLSOptions, run_dls
from .layer_choice import prepare

LAYER_WORDS = ("auto", "coherent", INPUT)  # the order the web page offers them in


@register("dls", options=DLSOptions, prepare=prepare, named={"layer": LAYER_WORDS})
def dls(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    options: DLSOptions,
) -> Attribution:
    """Decoded Layer Saliency as a registered method: one forward and one backward pass
    (``options`` built once per job by the registry)."""
    result = run_dls(lm, encoded, options, targets)
    return Attribution(
        scores=result.scores(),
        logits=result.pass_.logits,
        targets=result.pass_.targets,
        forward_passes=1,
        backward_passes=1,
        layers=list(result.chosen),
        detail=result,
    )
