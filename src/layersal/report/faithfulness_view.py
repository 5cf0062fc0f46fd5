"""Faithfulness of finished explanations, for reports: scores laid back onto the encoded batch.

An :class:`~layersal.Explanation` keeps scores for content tokens only; re-encoding its text with
the same model puts them back on the content positions, where
:func:`layersal.evaluate.score_batch` hides them most-salient first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..encoding import encode, model_input_names
from ..errors import InputError
from ..evaluate import predictor, score_batch
from ..explanation import Explanation
from ..metrics import Faithfulness
from ..models import LoadedModel


def faithfulness_of(
    lm: LoadedModel,
    explanations: Sequence[Explanation],
    *,
    batch_size: int = 16,
    **metric_options: Any,
) -> list[Faithfulness]:
    """Faithfulness metrics of each explanation (for its own ``target``), in input order.

    ``metric_options`` go to :func:`layersal.metrics.faithfulness` (``level``,
    ``perturbation``, ``rank_by``, ...); leave-one-out is off unless ``loo=True``.
    """
    metric_options.setdefault("loo", False)
    inputs = model_input_names(lm.model)
    predict = predictor(lm)
    results: list[Faithfulness] = []
    for start in range(0, len(explanations), batch_size):
        chunk = list(explanations[start : start + batch_size])
        encoded = encode(lm.tokenizer, [e.item for e in chunk], lm.max_length, inputs)
        scores = torch.zeros(encoded.input_ids.shape, dtype=torch.float32)
        targets = []
        for row, explanation in enumerate(chunk):
            positions = encoded.content[row].nonzero().flatten()
            if len(positions) != len(explanation.tokens):
                raise InputError(
                    f"the explanation of text {start + row} has {len(explanation.tokens)} tokens "
                    f"but {lm.name} encodes it as {len(positions)}: explain it with this model"
                )
            scores[row, positions] = torch.tensor(explanation.scores, dtype=torch.float32)
            if explanation.target not in lm.labels:
                raise InputError(
                    f"target {explanation.target!r} is not a label of {lm.name} "
                    f"({', '.join(lm.labels)})"
                )
            targets.append(lm.labels.index(explanation.target))
        results += score_batch(
            lm, encoded, scores, torch.tensor(targets), predict=predict, **metric_options
        )
    return results


__all__ = ["faithfulness_of"]
