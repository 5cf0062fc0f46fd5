"""Perturbation baselines through Captum: ``occlusion``, ``lime``, ``kernel_shap``,
``shapley_sampling``.

Each text is explained on its own (without padding) by perturbing only its content tokens:
Captum sees the ``(1, k)`` tensor of content-token ids, one feature per token, and
:class:`TokenForward` writes them back between the text's own special tokens. A removed
token is replaced by the ``baseline`` token ([MASK] by default). Perturbations of one text
go through the model ``perturbations_per_eval`` at a time. The explained quantity is the
target class's logit. Definitions: ``docs/methods.md``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..encoding import Encoded
from ..models import LoadedModel
from ._common import (
    OneText,
    PassCounter,
    TokenForward,
    non_negative_float,
    one_text,
    positive_int,
    prediction,
    replacement_id,
    scatter_rows,
    seed_value,
    seeded,
    text_seed,
)
from .base import Attribution, register


def _per_text(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None,
    explain_one: Any,
) -> Attribution:
    """Run ``explain_one(forward, content_ids, target, text) -> (1, k)`` on every text."""
    device = lm.device
    per_text: list[tuple[OneText, torch.Tensor]] = []
    with PassCounter(lm.model) as counter:
        logits, chosen = prediction(lm, encoded, targets)
        for row in range(len(encoded)):
            text = one_text(encoded, row, device)
            forward = TokenForward(lm, text)
            content_ids = text.inputs["input_ids"][:, text.content_positions]
            values = explain_one(forward, content_ids, int(chosen[row]), text)
            per_text.append((text, values.detach().reshape(-1)))
    return counter.result(encoded, scatter_rows(encoded, per_text, device), logits, chosen)


@register("occlusion", renamed={"window": "span"}, cost=lambda o, n: n + 1)
def occlusion(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    span: int = 3,
    baseline: str = "mask",
    perturbations_per_eval: int = 16,
) -> Attribution:
    """Captum ``Occlusion``: slide a window of ``span`` content tokens (stride 1), replace
    them by the baseline token; a token's score is the mean over the windows that cover it
    of y_c(x) - y_c(x with the window replaced). A text shorter than the span is occluded
    whole. (``span`` was called ``window``, which is ``explain()``'s long-text window.)"""
    from captum.attr import Occlusion

    span = positive_int("span", span)
    batch = positive_int("perturbations_per_eval", perturbations_per_eval)
    token = replacement_id(lm.tokenizer, baseline)

    def one(forward: TokenForward, ids: torch.Tensor, target: int, text: OneText) -> torch.Tensor:
        width = min(span, ids.shape[1])
        return Occlusion(forward).attribute(
            ids,
            sliding_window_shapes=(width,),
            strides=1,
            baselines=token,
            target=target,
            perturbations_per_eval=batch,
        )

    return _per_text(lm, encoded, targets, one)


# --------------------------------------------------------------------------- LIME / KernelSHAP


def _fit_weighted_linear(
    model: Any, dataloader: Any, construct_kwargs: dict[str, Any], **_: Any
) -> dict[str, float]:
    """Weighted (ridge) least squares with an intercept, for Captum's ``LinearModel``.

    Minimises sum_s w_s (y_s - b - z_s . beta)^2 + alpha ||beta||^2, as scikit-learn's
    ``Ridge``/``LinearRegression`` with ``sample_weight`` do (``alpha=0``: minimum-norm
    least squares, as ``LinearRegression`` gives when there are fewer samples than tokens).
    """
    alpha = float(construct_kwargs["alpha"])
    xs, ys, ws = [], [], []
    for x, y, w in dataloader:
        xs.append(x.detach().cpu().double())
        ys.append(y.detach().cpu().double().reshape(-1))
        ws.append(w.detach().cpu().double().reshape(-1))
    x, y, w = torch.cat(xs), torch.cat(ys), torch.cat(ws)
    total = w.sum()
    x_mean = (w.unsqueeze(1) * x).sum(0) / total
    y_mean = (w * y).sum() / total
    root = w.sqrt()
    xc = (x - x_mean) * root.unsqueeze(1)
    yc = (y - y_mean) * root
    if alpha > 0:
        gram = xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=x.dtype)
        coef = torch.linalg.solve(gram, xc.T @ yc)
    else:
        coef = torch.linalg.lstsq(xc, yc.unsqueeze(1), driver="gelsd").solution[:, 0]
    intercept = y_mean - x_mean @ coef
    model._construct_model_params(
        weight_values=coef.float().unsqueeze(0), bias_value=intercept.float().reshape(1)
    )
    return {}


def weighted_linear_model(alpha: float) -> Any:
    """A Captum interpretable model fitted in closed form (no scikit-learn needed)."""
    from captum._utils.models.linear_model import LinearModel

    return LinearModel(train_fn=_fit_weighted_linear, alpha=alpha)


def _lime_similarity(kernel_width: float) -> Any:
    """LIME's text kernel on the binary sample z: exp(-d^2 / (2 w^2)), d = 1 - cos(1, z)."""

    def similarity(original: Any, perturbed: Any, sample: torch.Tensor, **kwargs: Any) -> float:
        kept = float(sample.sum())
        total = int(kwargs["num_interp_features"])
        distance = 1.0 - math.sqrt(kept / total)
        return math.exp(-(distance**2) / (2 * kernel_width**2))

    return similarity


def _bernoulli_sampler(generator: torch.Generator) -> Any:
    """Captum's default LIME sampling (each token kept with probability 1/2), local RNG."""

    def sample(original: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        probs = torch.full((1, int(kwargs["num_interp_features"])), 0.5)
        return torch.bernoulli(probs, generator=generator).long().to(original.device)

    return sample


@register("lime", cost=lambda o, n: int(o["n_samples"]) + 1)
def lime(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    n_samples: int = 25,
    baseline: str = "mask",
    perturbations_per_eval: int = 16,
    seed: int = 0,
    alpha: float = 1.0,
    kernel_width: float = 0.25,
) -> Attribution:
    """Captum ``Lime``: ``n_samples`` random keep/replace masks (each token kept with
    probability 1/2), weighted by LIME's text kernel, fitted by weighted ridge regression
    (``alpha``); a token's score is its coefficient."""
    from captum.attr import Lime

    n_samples = positive_int("n_samples", n_samples, minimum=2)
    batch = positive_int("perturbations_per_eval", perturbations_per_eval)
    seed = seed_value(seed)
    alpha = non_negative_float("alpha", alpha)
    kernel_width = non_negative_float("kernel_width", kernel_width, strict=True)
    token = replacement_id(lm.tokenizer, baseline)

    def one(forward: TokenForward, ids: torch.Tensor, target: int, text: OneText) -> torch.Tensor:
        own = text_seed(seed, ids[0].tolist())
        explainer = Lime(
            forward,
            interpretable_model=weighted_linear_model(alpha),
            similarity_func=_lime_similarity(kernel_width),
            perturb_func=_bernoulli_sampler(torch.Generator().manual_seed(own)),
        )
        # the samples come from the local generator; ``seeded`` only keeps the global stream
        # unchanged (Captum's DataLoader and the linear model's init draw from it)
        with seeded(own, ids.device):
            return explainer.attribute(
                ids,
                baselines=token,
                target=target,
                feature_mask=torch.arange(ids.shape[1], device=ids.device).unsqueeze(0),
                n_samples=n_samples,
                perturbations_per_eval=batch,
            )

    return _per_text(lm, encoded, targets, one)


@register("kernel_shap", cost=lambda o, n: int(o["n_samples"]) + 1)
def kernel_shap(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    n_samples: int = 25,
    baseline: str = "mask",
    perturbations_per_eval: int = 16,
    seed: int = 0,
) -> Attribution:
    """Captum ``KernelShap``: the all-kept and all-replaced masks, then ``n_samples - 2``
    masks drawn from the Shapley kernel, fitted by weighted least squares (minimum norm)."""
    from captum.attr import FeatureAblation, KernelShap

    n_samples = positive_int("n_samples", n_samples, minimum=2)
    batch = positive_int("perturbations_per_eval", perturbations_per_eval)
    seed = seed_value(seed)
    token = replacement_id(lm.tokenizer, baseline)

    def one(forward: TokenForward, ids: torch.Tensor, target: int, text: OneText) -> torch.Tensor:
        if ids.shape[1] == 1:
            # Captum's KernelShap cannot build its coalition-size distribution for a single
            # token (sizes 1..k-1 are empty); one token's Shapley value is exactly
            # y_c(x) - y_c(baseline), which FeatureAblation computes (2 forwards, as
            # KernelShap's two end-point samples would be).
            return FeatureAblation(forward).attribute(ids, baselines=token, target=target)
        explainer = KernelShap(forward)
        explainer.interpretable_model = weighted_linear_model(0.0)
        with seeded(text_seed(seed, ids[0].tolist()), ids.device):
            return explainer.attribute(
                ids,
                baselines=token,
                target=target,
                n_samples=n_samples,
                perturbations_per_eval=batch,
            )

    return _per_text(lm, encoded, targets, one)


@register("shapley_sampling", cost=lambda o, n: int(o["n_permutations"]) * (n + 1))
def shapley_sampling(
    lm: LoadedModel,
    encoded: Encoded,
    targets: torch.Tensor | None = None,
    *,
    n_permutations: int = 25,
    baseline: str = "mask",
    perturbations_per_eval: int = 16,
    seed: int = 0,
) -> Attribution:
    """Captum ``ShapleyValueSampling``: for each of ``n_permutations`` random orders, start
    from the all-replaced text, put tokens back one at a time, credit each token with the
    change of the target logit; a token's score is its mean credit."""
    from captum.attr import ShapleyValueSampling

    n_permutations = positive_int("n_permutations", n_permutations)
    batch = positive_int("perturbations_per_eval", perturbations_per_eval)
    seed = seed_value(seed)
    token = replacement_id(lm.tokenizer, baseline)

    def one(forward: TokenForward, ids: torch.Tensor, target: int, text: OneText) -> torch.Tensor:
        with seeded(text_seed(seed, ids[0].tolist()), ids.device):
            return ShapleyValueSampling(forward).attribute(
                ids,
                baselines=token,
                target=target,
                n_samples=n_permutations,
                perturbations_per_eval=batch,
            )

    return _per_text(lm, encoded, targets, one)
