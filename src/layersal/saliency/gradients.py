"""Gradient baselines at the input (word) embeddings.

``gradient``, ``input_x_gradient``, ``lrp``, ``integrated_gradients``, ``gradient_shap``
and ``deeplift_shap`` (refused, see below). The one-pass methods take ``rule=``, a
propagation rule set (:mod:`layersal.rules`) applied to their backward pass; ``lrp`` is
input x gradient under AttnLRP's rules. They differentiate directly (what Captum's
``Saliency`` and ``InputXGradient`` compute), so that rows sharing an input share its forward
(:mod:`layersal.sharing`); the others go through Captum. Each differentiates the target
logit with respect to the output of the model's word-embedding module, through
:class:`EmbeddingForward`, which pins [CLS]/[SEP]/padding to their own embeddings.
Definitions: ``docs/methods.md``.

Captum's ``Layer*`` variants of these methods were not used: ``LayerIntegratedGradients``
computes the same attributions (it injects the interpolated layer output with the same kind
of hook) but runs two extra full forwards to read the layer's activations, and
``LayerGradientShap`` adds its Gaussian noise to the *inputs* - integer token ids - rather
than to the embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..encoding import Encoded
from ..errors import InputError
from ..models import LoadedModel
from ..rules import check_rule, propagation_rules
from ..sharing import distinct_batch, row_gradients, row_logits, shared_rows
from ._common import (
    EmbeddingForward,
    PassCounter,
    embedding_arguments,
    non_negative_float,
    one_text,
    optional_positive_int,
    positive_int,
    prediction,
    replacement_id,
    replacement_ids,
    scatter_rows,
    seed_value,
    seeded,
    text_seed,
    word_embeddings,
)
from .base import Attribution, register


def _single_pass(
    lm: LoadedModel, encoded: Encoded, targets: torch.Tensor | None, kind: str, rule: str
) -> Attribution:
    """Saliency / InputXGradient in one forward and one backward, under propagation ``rule``:
    the (modified) gradient of each row's objective at its word embeddings, as Captum's
    ``Saliency`` (``abs=False``) and ``InputXGradient`` compute it. Rows that read the same
    input (the entities of one text) share one forward and get one backward each
    (:mod:`layersal.sharing`).

    With no targets each row explains the task's default target, chosen from its logits of
    the same forward: no separate prediction pass is needed.
    """
    check_rule(rule)
    device = lm.device
    shared = shared_rows(encoded)
    distinct, focus = distinct_batch(encoded, shared)
    names, args = embedding_arguments(distinct, device)
    forward = EmbeddingForward(lm, names)
    embeddings = word_embeddings(lm, distinct.input_ids.to(device)).requires_grad_()
    with (
        PassCounter(lm.model) as counter,
        propagation_rules(lm.model, lm.family, rule),
        torch.enable_grad(),
    ):
        logits = row_logits(lm.task, forward(embeddings, *args), shared, focus)
        chosen = lm.task.default_targets(logits) if targets is None else targets.to(device).long()
        (grads,) = row_gradients(lm.task.objective(logits, chosen), shared, [embeddings])
    assert grads is not None, "the word embeddings reach every logit"
    grads = grads.detach().float()
    if kind == "gradient":
        scores = grads.norm(dim=-1)
    else:
        scores = (grads * shared.expand(embeddings.detach())).sum(-1)
    content = encoded.content.to(device)
    return counter.result(encoded, scores * content, logits.detach().float(), chosen)


@register("gradient")
def gradient(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    rule: str = "gradient",
) -> Attribution:
    """||d y_c / d e_i||_2: L2 norm of the target logit's (modified) gradient at each word
    embedding."""
    return _single_pass(lm, encoded, targets, "gradient", rule)


@register("input_x_gradient")
def input_x_gradient(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    rule: str = "gradient",
) -> Attribution:
    """(d y_c / d e_i) . e_i: (modified) gradient times word embedding, summed over hidden dims."""
    return _single_pass(lm, encoded, targets, "input_x_gradient", rule)


@register("lrp")
def lrp(
    lm: LoadedModel, encoded: Encoded, targets: torch.Tensor | None = None, *, rule: str = "attnlrp"
) -> Attribution:
    """Layer-wise relevance at the word embeddings in one pass: e_i . g~_i under AttnLRP's rules
    (or another rule set), summed over hidden dims. Relevance of the special tokens and the
    position embeddings is not shown."""
    return _single_pass(lm, encoded, targets, "input_x_gradient", rule)


IG_TOKEN_BUDGET = 8192
GAUSS_LEGENDRE_MAX_STEPS = 512


@register("integrated_gradients", cost=lambda o, n: int(o["n_steps"]) + 1)
def integrated_gradients(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    n_steps: int = 50,
    baseline: str = "pad",
    internal_batch_size: int | None = None,
) -> Attribution:
    """Captum ``IntegratedGradients`` from the baseline's word embeddings to the text's.

    Baseline: every content token replaced by ``baseline`` ([PAD]/[MASK]/[UNK]); specials kept.
    Attributions are summed over hidden dims; they add up to y_c(x) - y_c(baseline) up to the
    approximation error of ``n_steps`` Gauss-Legendre steps (Captum's default rule; above
    ``GAUSS_LEGENDRE_MAX_STEPS`` steps the trapezoid rule, whose nodes cost nothing, where
    Gauss-Legendre's take seconds of numpy before the first model pass).
    ``internal_batch_size`` (rows of the expanded batch per model pass) defaults to what fits
    in ``IG_TOKEN_BUDGET`` tokens, so memory stays bounded at any batch size and step count.
    """
    from captum.attr import IntegratedGradients

    n_steps = positive_int("n_steps", n_steps)
    internal_batch_size = optional_positive_int("internal_batch_size", internal_batch_size)
    token = replacement_id(lm.tokenizer, baseline)
    if internal_batch_size is None:
        internal_batch_size = max(1, IG_TOKEN_BUDGET // max(1, encoded.input_ids.shape[1]))
    internal_batch_size = max(
        internal_batch_size, len(encoded)
    )  # Captum's minimum: one step for the batch
    device = lm.device
    names, args = embedding_arguments(encoded, device)
    content = encoded.content.to(device)
    ids = encoded.input_ids.to(device)
    embeddings = word_embeddings(lm, ids)
    base = word_embeddings(lm, torch.where(content, torch.full_like(ids, token), ids))
    with PassCounter(lm.model) as counter:
        logits, chosen = prediction(lm, encoded, targets)
        attributions = IntegratedGradients(EmbeddingForward(lm, names)).attribute(
            embeddings,
            baselines=base,
            target=chosen,
            additional_forward_args=args,
            n_steps=n_steps,
            method="gausslegendre" if n_steps <= GAUSS_LEGENDRE_MAX_STEPS else "riemann_trapezoid",
            internal_batch_size=internal_batch_size,
        )
    return counter.result(encoded, attributions.detach().sum(-1) * content, logits, chosen)


@register("gradient_shap", cost=lambda o, n: int(o["n_samples"]) + 1)
def gradient_shap(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    n_samples: int = 5,
    stdevs: float = 0.0,
    baseline: str | Sequence[str] = "pad",
    seed: int = 0,
) -> Attribution:
    """Captum ``GradientShap`` on the word embeddings, one text at a time (seeded per text).

    Each of ``n_samples`` samples draws a baseline from ``baseline`` (one name or a list:
    content tokens replaced by that token), adds N(0, stdevs^2) noise to the text's
    embeddings, picks alpha ~ U(0, 1) and takes grad(baseline + alpha (x - baseline)) .
    (x - baseline); the mean over samples, summed over hidden dims.
    """
    from captum.attr import GradientShap

    n_samples = positive_int("n_samples", n_samples)
    stdevs = non_negative_float("stdevs", stdevs)
    seed = seed_value(seed)
    tokens = replacement_ids(lm.tokenizer, baseline)
    device = lm.device
    per_text = []
    with PassCounter(lm.model) as counter:
        logits, chosen = prediction(lm, encoded, targets)
        for row in range(len(encoded)):
            text = one_text(encoded, row, device)
            names = sorted(text.inputs)
            args = tuple(text.inputs[n] for n in names) + (text.content.unsqueeze(0),)
            ids = text.inputs["input_ids"]
            embeddings = word_embeddings(lm, ids)
            bases = torch.cat([word_embeddings(lm, torch.full_like(ids, t)) for t in tokens])
            with seeded(text_seed(seed, ids[0].tolist()), device):
                attributions = GradientShap(EmbeddingForward(lm, names)).attribute(
                    embeddings,
                    baselines=bases,
                    n_samples=n_samples,
                    stdevs=stdevs,
                    target=int(chosen[row]),
                    additional_forward_args=args,
                )
            per_text.append((text, attributions.detach()[0].sum(-1)[text.content_positions]))
    return counter.result(encoded, scatter_rows(encoded, per_text, device), logits, chosen)


def deeplift_blockers(model: nn.Module) -> list[str]:
    """Nonlinear modules of ``model`` that Captum's DeepLift would treat as linear."""
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    found: set[str] = set()
    for module in model.modules():
        kind = type(module)
        if kind in SUPPORTED_NON_LINEAR:
            continue
        name = kind.__name__
        if (
            isinstance(module, (nn.LayerNorm, nn.GELU, nn.SiLU))
            or "LayerNorm" in name
            or kind.__module__.startswith("transformers.activations")
        ):
            found.add(name)
        elif (
            name.endswith("Attention")
            and not any(type(m).__name__.endswith("Attention") for m in module.children())
            and not any(isinstance(m, nn.Softmax) for m in module.modules())
        ):
            found.add(f"{name} (its softmax and products are function calls)")
    return sorted(found)


@register("deeplift_shap")
def deeplift_shap(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    baseline: str | Sequence[str] = ("pad", "mask"),
) -> Attribution:
    """Refused with an :class:`InputError`: Captum's DeepLift cannot handle these models.

    Captum applies DeepLift's rescale rule only to the nonlinear *modules* it knows (ReLU,
    Tanh, Sigmoid, Softmax modules, ...). A transformer's LayerNorm, GELU and attention
    softmax (a function call inside the attention module) would be backpropagated as plain
    gradients, so the attributions would not add up to y_c(x) - y_c(baseline): on the
    bundled sst2-tiny, sums of -0.03, 0.26 and 3.29 for differences of 1.77, 2.94 and 2.16.
    """
    replacement_ids(lm.tokenizer, baseline)
    blockers = deeplift_blockers(lm.model) or ["the attention softmax (a function call)"]
    raise InputError(
        "deeplift_shap is not available for this model: Captum's DeepLift applies its rescale "
        "rule only to nonlinear modules it supports (ReLU, Tanh, Sigmoid, Softmax, ...), and "
        f"this model's {', '.join(blockers)} would be treated as linear, so the attributions "
        "would not add up to the logit difference (DeepLift's defining property). Use "
        "integrated_gradients or gradient_shap instead"
    )
