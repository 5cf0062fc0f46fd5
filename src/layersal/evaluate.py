"""Faithfulness of explanations from a loaded model: the glue between methods and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .encoding import Encoded
from .errors import InputError
from .metrics import Faithfulness, PredictFn, faithfulness
from .models import LoadedModel


def predictor(lm: LoadedModel) -> PredictFn:
    """``predict(input_ids, attention_mask[, token_type_ids]) -> probabilities`` for ``lm`` (no
    gradients)."""
    device = lm.device

    def predict(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        with torch.no_grad(), lm.autocast(), lm.borrowed():
            logits = lm.model(**{k: v.to(device) for k, v in inputs.items()}).logits
        return torch.softmax(logits.float(), dim=-1).cpu()

    return predict


def hide_ids(lm: LoadedModel) -> tuple[int, int]:
    """``(mask_id, pad_id)`` used to hide tokens: [MASK] (else [UNK], else padding) and [PAD].

    A decoder-only tokenizer often has neither [MASK] nor an [UNK] apart from its padding
    token; hiding with padding is then, for a model pooled at the last non-padding token,
    much like deleting the hidden tokens.
    """
    tokenizer = lm.tokenizer
    found = [tokenizer.mask_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id]
    mask = next((i for i in found if i is not None), None)
    if mask is None:
        raise InputError(
            "the model's tokenizer has no mask, unknown or padding token to hide tokens with; "
            "use perturbation='delete'"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else mask
    return int(mask), int(pad)


def score_batch(
    lm: LoadedModel,
    encoded: Encoded,
    scores: torch.Tensor,
    targets: torch.Tensor,
    *,
    labels: Sequence[int] | None = None,
    predict: PredictFn | None = None,
    **metric_options: Any,
) -> list[Faithfulness]:
    """Faithfulness metrics of ``scores`` (``(B, n)``, one batch) for ``lm``'s own targets."""
    mask_id, pad_id = hide_ids(lm)
    return faithfulness(
        predict or predictor(lm),
        encoded.input_ids,
        encoded.attention_mask,
        encoded.content,
        scores.detach().cpu(),
        targets.cpu(),
        labels=None if labels is None else torch.tensor(list(labels)),
        word_ids=encoded.word_ids,
        mask_id=mask_id,
        pad_id=pad_id,
        token_type_ids=segment_ids(encoded),
        **metric_options,
    )


def segment_ids(encoded: Encoded) -> torch.Tensor | None:
    """The batch's ``token_type_ids`` when it holds pairs of texts (the metrics must give them
    to the model with every perturbed input), else ``None``."""
    if encoded.segments is None:
        return None
    return encoded.inputs.get("token_type_ids")
