"""Faithfulness of explanations from a loaded model: the glue between methods and metrics, and
the one place that scores them (the benchmark, ``layer="auto"``, the report and the command line
all come here, and :mod:`layersal.metrics` holds the maths).

:func:`faithfulness_of` scores finished explanations: an :class:`~layersal.Explanation` keeps
scores for content tokens only, and re-encoding its text with the same model puts them back on
the content positions, where :func:`score_batch` hides them most-salient first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .ceilings import Ceiling, beam_bounds
from .encoding import Encoded, encode, model_input_names
from .errors import InputError
from .metrics import DEFAULT_PARTS, ERASER_BUDGETS, Faithfulness, PredictFn, faithfulness
from .models import LoadedModel
from .passes import on_input_ids
from .soft_erasure import EmbeddingPredict
from .tasks import FOCUS

if TYPE_CHECKING:
    from .explanation import Explanation


def predictor(lm: LoadedModel) -> PredictFn:
    """``predict(input_ids, attention_mask[, token_type_ids], **row_inputs) -> probabilities``
    for ``lm`` (no gradients; ``row_inputs``: a task's focus, see :func:`row_inputs`)."""
    device = lm.device

    def predict(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        **row_inputs: torch.Tensor,
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **row_inputs}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        with torch.no_grad(), lm.autocast(), lm.borrowed():
            logits = lm.model(**{k: v.to(device) for k, v in inputs.items()}).logits
        return lm.task.outputs(logits).cpu()

    return predict


def embedding_predictor(lm: LoadedModel) -> EmbeddingPredict:
    """``lm`` seen at its word embeddings, for the soft metrics: ``predict(input_ids,
    attention_mask, keep[, token_type_ids], **row_inputs)`` runs the model on ``input_ids``
    with the word-embedding module's output multiplied by ``keep`` (``(rows, n, width)``),
    everything after it (positions, segments, normalisation) as the model does it."""
    device = lm.device
    width = int(lm.model.get_input_embeddings().weight.shape[1])

    def predict(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        keep: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        **row_inputs: torch.Tensor,
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **row_inputs}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        on_device = {k: v.to(device) for k, v in inputs.items()}

        def scaled(output: torch.Tensor) -> torch.Tensor:
            return output * keep.to(output.device, output.dtype)

        changed = on_input_ids(lm.model, on_device["input_ids"], scaled)
        with torch.no_grad(), lm.autocast(), lm.borrowed(), changed:
            logits = lm.model(**on_device).logits
        return lm.task.outputs(logits).cpu()

    return EmbeddingPredict(width, predict)


SPECIAL_TOKENS = ("pad", "mask", "unk", "cls", "sep", "bos", "eos")


def eval_predictor(lm: LoadedModel, judge: LoadedModel | None) -> PredictFn:
    """The predictions that score ``lm``'s explanations: ``lm``'s own, or, with a ``judge``
    (``bench --eval-model``: an in-distribution copy, ``docs/metrics.md``), the judge's on the
    same perturbed ids (the F-Fidelity protocol: the original model explained, the copy
    fine-tuned with masking predicting).

    The judge must read the ids as ``lm`` does and answer in the same classes: the same
    vocabulary and special tokens, the same task and labels in the same order; anything else
    is refused with an :class:`~layersal.errors.InputError` naming the difference.
    """
    if judge is None:
        return predictor(lm)
    own, other = lm.tokenizer, judge.tokenizer
    if own.get_vocab() != other.get_vocab():
        raise InputError(
            f"the evaluation model {judge.name} has another tokenizer vocabulary than "
            f"{lm.name}: it must share the explained model's tokenizer"
        )
    for name in SPECIAL_TOKENS:
        mine, theirs = (getattr(t, f"{name}_token_id", None) for t in (own, other))
        if mine != theirs:
            raise InputError(
                f"the evaluation model {judge.name} has {name} token id {theirs}, {lm.name} "
                f"has {mine}: it must share the explained model's tokenizer"
            )
    if judge.task.name != lm.task.name or list(judge.labels) != list(lm.labels):
        raise InputError(
            f"the evaluation model {judge.name} predicts {judge.task.name} labels "
            f"{list(judge.labels)}, {lm.name} predicts {lm.task.name} labels "
            f"{list(lm.labels)}: they must be the same, in the same order"
        )
    return predictor(judge)


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
    soft: bool = False,
    **metric_options: Any,
) -> list[Faithfulness]:
    """Faithfulness metrics of ``scores`` (``(B, n)``, one batch) for ``lm``'s own targets, in
    what its task shows (probabilities, or a regression head's score: then without log-odds
    and gold-label accuracy, which need probabilities). ``soft=True`` adds the soft metrics
    to the parts computed (the ``soft`` part, through :func:`embedding_predictor`)."""
    mask_id, pad_id = hide_ids(lm)
    if not lm.task.probabilistic:
        labels = None
        metric_options.setdefault("parts", tuple(p for p in DEFAULT_PARTS if p != "log_odds"))
    if soft:
        parts = tuple(metric_options.get("parts", DEFAULT_PARTS))
        metric_options["parts"] = parts if "soft" in parts else (*parts, "soft")
    if "soft" in metric_options.get("parts", ()) and metric_options.get("soft_predict") is None:
        metric_options["soft_predict"] = embedding_predictor(lm)
    return faithfulness(
        predict or predictor(lm),
        encoded.input_ids,
        encoded.attention_mask,
        lm.task.hideable(encoded),
        scores.detach().cpu(),
        targets.cpu(),
        labels=None if labels is None else torch.tensor(list(labels)),
        word_ids=encoded.word_ids,
        mask_id=mask_id,
        pad_id=pad_id,
        token_type_ids=segment_ids(encoded),
        row_inputs=row_inputs(encoded),
        **metric_options,
    )


def bounds_batch(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor,
    *,
    beam: int = 4,
    predict: PredictFn | None = None,
    level: str = "token",
    perturbation: str = "mask",
    budgets: tuple[float, ...] = ERASER_BUDGETS,
    batch_size: int = 64,
) -> list[Ceiling]:
    """Beam-search bounds of comprehensiveness and sufficiency AOPC for one batch (``lm``'s
    targets ``targets``), hiding what :func:`score_batch` hides, the same way
    (:func:`layersal.ceilings.beam_bounds`)."""
    mask_id, pad_id = hide_ids(lm)
    return beam_bounds(
        predict or predictor(lm),
        encoded.input_ids,
        encoded.attention_mask,
        lm.task.hideable(encoded),
        targets.cpu(),
        beam=beam,
        budgets=budgets,
        level=level,
        word_ids=encoded.word_ids,
        perturbation=perturbation,
        mask_id=mask_id,
        pad_id=pad_id,
        batch_size=batch_size,
        token_type_ids=segment_ids(encoded),
        row_inputs=row_inputs(encoded),
    )


def row_inputs(encoded: Encoded) -> dict[str, torch.Tensor]:
    """The batch's inputs that the metrics must give the model with every perturbed input
    besides ids, mask and segment ids: a task's focus (:data:`layersal.tasks.FOCUS`)."""
    return {FOCUS: encoded.inputs[FOCUS]} if FOCUS in encoded.inputs else {}


def segment_ids(encoded: Encoded) -> torch.Tensor | None:
    """The batch's ``token_type_ids`` when it holds pairs of texts (the metrics must give them
    to the model with every perturbed input), else ``None``."""
    if encoded.segments is None:
        return None
    return encoded.inputs.get("token_type_ids")


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
        encoded = encode(lm.tokenizer, [e.row_item for e in chunk], lm.max_length, inputs)
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
