"""Decoded Layer Saliency (docs/method.md steps 1-4): layer saliency, decoding, layer choice."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..decoding import LayerDecoding, carry_saliency, decode_layer
from ..encoding import Encoded, token_pieces
from ..errors import InputError
from ..explanation import LayerReport
from ..models import LoadedModel
from ..passes import Pass, forward_backward
from ..rules import check_rule
from .base import MethodDetail

SALIENCY_KINDS = ("gradcam", "grad_x_act", "grad_norm")
INPUT = "input"
LAYER_CHOICES = ("coherent", "auto", INPUT)
_NO_GRADIENT_TOL = 1e-6
_NO_GRADIENT_NOTE = (
    "no gradient reaches the input positions at this layer (the classifier reads only the "
    "vector it pools, [CLS] or the last token, here), so it carries no position saliency"
)


@dataclass(frozen=True)
class DLSOptions:
    """The method's named choices (see docs/method.md and docs/benchmarks.md).

    - ``layer``: ``"auto"`` (the default): the configuration (rule set, layer, decoding) with
      the best measured comprehensiveness minus sufficiency AOPC on a calibration sample of
      unlabelled texts, shipped
      in the model card for the bundled models and cached for others (see
      :mod:`layersal.saliency.layer_choice`); an int (negative counts from the top; 0 is the
      embedding output); ``"input"``: the word embeddings (input x gradient under ``rule``);
      ``"coherent"``: the paper's rule, the deepest layer with position gradient whose
      coherence is at least ``rho`` times the embedding layer's.
    - ``rule``: the propagation rule set of the backward pass (:mod:`layersal.rules`:
      ``gradient``, ``ln``, ``cp``, ``cp_id``, ``attnlrp``). ``None``: ``auto``'s choice under
      ``layer="auto"``; with another ``layer``, ``cp_id`` where the family has a propagation
      map, else ``gradient`` (settled by :func:`~.layer_choice.prepare`; this class alone,
      unprepared, runs ``gradient``).
    - ``saliency``: the feature aggregation g: ``grad_x_act`` (gradient . activation per
      position, the default: the relevance the rules are made for), ``gradcam`` (pooled
      gradient . activation) or ``grad_norm``.
    - ``relu``: clip position saliency at 0; ``None`` means on for gradcam, off otherwise.
    - ``decode``: carry position saliency onto input tokens through the LM head (``False``:
      identity mapping, position i -> token i). ``None``: ``auto``'s choice under
      ``layer="auto"``, else on (off at ``layer="input"``, where there is nothing to decode).
    - ``tau``: how many top decoded tokens per position count (``None``, the default: all of
      them; then only the input tokens' logits are computed, not the whole vocabulary).
    - ``weights``: ``"prob"`` weights a hit by its probability, ``"uniform"`` counts 1.
    - ``top_k``: decoded tokens per position kept for the layer report (0: none).
    - ``layer_report``: decode every layer for the report (coherence per layer, top decoded
      tokens); off by default because it sweeps the vocabulary at every layer.
    """

    layer: int | str = "auto"
    rule: str | None = None
    saliency: str = "grad_x_act"
    relu: bool | None = None
    decode: bool | None = None
    tau: int | None = None
    weights: str = "prob"
    rho: float = 0.5
    top_k: int = 5
    layer_report: bool = False

    def __post_init__(self) -> None:
        if self.saliency not in SALIENCY_KINDS:
            raise InputError(
                f"unknown saliency {self.saliency!r}; choose one of {', '.join(SALIENCY_KINDS)}"
            )
        if (
            isinstance(self.layer, bool)
            or (isinstance(self.layer, str) and self.layer not in LAYER_CHOICES)
            or not isinstance(self.layer, (int, str))
        ):
            raise InputError(
                f"layer must be an integer, 'auto', 'input' or 'coherent', not {self.layer!r}"
            )
        if self.rule is not None:
            check_rule(self.rule)
        if self.decode is not None and not isinstance(self.decode, bool):
            raise InputError(f"decode must be true, false or None, not {self.decode!r}")
        if self.layer == INPUT and self.decode:
            raise InputError(
                "layer 'input' is the word embeddings: there is nothing to decode there "
                "(use decode=False, or a layer number)"
            )
        if self.tau is not None and self.tau < 1:
            raise InputError(f"tau must be at least 1, not {self.tau}")
        if self.weights not in ("prob", "uniform"):
            raise InputError(f"weights must be 'prob' or 'uniform', not {self.weights!r}")
        if not 0.0 < self.rho <= 1.0:
            raise InputError(f"rho must be in (0, 1], not {self.rho}")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0, not {self.top_k}")

    @property
    def apply_relu(self) -> bool:
        return self.saliency == "gradcam" if self.relu is None else self.relu

    @property
    def active_rule(self) -> str:
        """The rule set a pass uses (``None`` resolves to ``gradient``)."""
        return self.rule or "gradient"

    @property
    def active_decode(self) -> bool:
        """Whether scores are decoded (``None`` resolves to on, off at the input)."""
        return self.layer != INPUT if self.decode is None else self.decode


@dataclass
class LayerSaliency:
    """One layer's results for a batch."""

    position: torch.Tensor  # (B, n): s_l^i
    scores: torch.Tensor  # (B, n): S_l(j), zero outside content tokens
    has_gradient: torch.Tensor  # (B,): whether content positions receive any gradient
    decoding: LayerDecoding | None


@dataclass
class DLSResult(MethodDetail):
    """DLS over a batch: the pass, every computed layer, and the layer chosen per text.

    ``input`` holds the word-embedding level when it was asked for; ``chosen[b]`` is ``None``
    for a text explained there.
    """

    pass_: Pass
    layers: dict[int, LayerSaliency]
    options: DLSOptions
    chosen: list[int | None] = field(default_factory=list)
    input: LayerSaliency | None = None

    def at(self, layer: int | None) -> LayerSaliency:
        """The results at ``layer`` (``None``: the word embeddings)."""
        if layer is None:
            assert self.input is not None
            return self.input
        return self.layers[layer]

    def scores(self) -> torch.Tensor:
        """``(B, n)`` token scores, each text at its chosen layer."""
        return torch.stack([self.at(l).scores[row] for row, l in enumerate(self.chosen)])

    def applied_options(self) -> dict[str, Any]:
        """Every option, with ``relu``, ``rule`` and ``decode`` as the pass applied them."""
        applied = {f.name: getattr(self.options, f.name) for f in fields(self.options)}
        applied.update(
            relu=self.options.apply_relu,
            rule=self.options.active_rule,
            decode=self.options.active_decode,
        )
        return applied

    def coherence(self) -> dict[int, list[float]]:
        return {
            layer: saliency.decoding.coherence.tolist()
            for layer, saliency in self.layers.items()
            if saliency.decoding is not None and saliency.decoding.coherence is not None
        }

    def layer_reports(self, row: int, content: list[int], tokenizer: Any) -> list[LayerReport]:
        """The per-layer report of text ``row`` over its content positions (when the options
        asked for one: ``layer_report``)."""
        if not self.options.layer_report:
            return []
        reports = []
        for layer, result in sorted(self.layers.items()):
            decoding = result.decoding
            has_gradient = bool(result.has_gradient[row])
            top_tokens = top_probs = None
            if (
                decoding is not None
                and decoding.top_ids is not None
                and decoding.top_probs is not None
            ):
                ids = decoding.top_ids[row, content].tolist()
                top_tokens = [token_pieces(tokenizer, i) for i in ids]
                top_probs = [
                    [round(p, 6) for p in ps] for ps in decoding.top_probs[row, content].tolist()
                ]
            reports.append(
                LayerReport(
                    layer=layer,
                    coherence=None
                    if decoding is None or decoding.coherence is None
                    else float(decoding.coherence[row]),
                    has_position_gradient=has_gradient,
                    scores=result.scores[row, content].tolist(),
                    own_rank=None
                    if decoding is None or decoding.own_rank is None
                    else decoding.own_rank[row, content].tolist(),
                    top_tokens=top_tokens,
                    top_probs=top_probs,
                    note="" if has_gradient else _NO_GRADIENT_NOTE,
                )
            )
        return reports


def position_saliency(
    grad: torch.Tensor, hidden: torch.Tensor, real: torch.Tensor, kind: str, relu: bool
) -> torch.Tensor:
    """Per-position saliency ``s_l^i`` from one layer's gradient and activation, ``(B, n)``.

    ``real`` marks non-padding positions; Grad-CAM's pooled weights average over them.
    """
    mask = real.unsqueeze(-1).to(grad.dtype)
    if kind == "gradcam":
        alpha = (grad * mask).sum(1) / mask.sum(1).clamp_min(1)
        s = torch.einsum("bnk,bk->bn", hidden, alpha)
    elif kind == "grad_x_act":
        s = (grad * hidden).sum(-1)
    elif kind == "grad_norm":
        s = grad.norm(dim=-1)
    else:
        raise InputError(f"unknown saliency {kind!r}")
    if relu:
        s = s.clamp_min(0)
    return s * real.to(s.dtype)


def resolve_layer(layer: int, num_layers: int) -> int:
    """Map a possibly negative layer index onto 0..num_layers, or raise a clear error."""
    index = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= index <= num_layers:
        raise InputError(
            f"layer {layer} is out of range: this model has layers 0..{num_layers} "
            f"(or -{num_layers + 1}..-1)"
        )
    return index


def run_dls(
    lm: LoadedModel,
    encoded: Encoded,
    options: DLSOptions,
    targets: torch.Tensor | None = None,
) -> DLSResult:
    """Explain one batch: one forward, one backward (under ``options.rule``), then per-layer
    saliency and decoding."""
    if options.layer == "auto":
        raise InputError("layer='auto' must be resolved first (layersal.explain does this)")
    num_layers = lm.num_layers
    at_input = options.layer == INPUT
    fixed = None if isinstance(options.layer, str) else resolve_layer(options.layer, num_layers)
    result = forward_backward(
        lm.model, encoded, targets, family=lm.family, rule=options.active_rule, task=lm.task
    )
    batch = _BatchMasks.of(encoded, result.hidden[0].device)
    everything = options.layer_report or options.layer == "coherent"
    wanted = list(range(len(result.hidden))) if everything else [] if fixed is None else [fixed]
    layers = {
        layer: layer_saliency(
            lm,
            result,
            batch,
            layer,
            options,
            options.active_decode and not at_input,
            report=options.layer_report,
            coherence=everything,
        )
        for layer in wanted
    }
    input_level = input_saliency(result, batch, options) if at_input else None
    if at_input:
        chosen: list[int | None] = [None] * len(encoded)
    elif fixed is not None:
        chosen = [fixed] * len(encoded)
    else:
        chosen = list(_coherent_layers(layers, options.rho))
    return DLSResult(pass_=result, layers=layers, options=options, chosen=chosen, input=input_level)


@dataclass(frozen=True)
class _BatchMasks:
    real: torch.Tensor  # (B, n) non-padding
    content: torch.Tensor  # (B, n) content tokens
    input_ids: torch.Tensor

    @classmethod
    def of(cls, encoded: Encoded, device: torch.device) -> _BatchMasks:
        return cls(
            encoded.attention_mask.to(device).bool(),
            encoded.content.to(device),
            encoded.input_ids.to(device),
        )


def layer_saliency(
    lm: LoadedModel,
    result: Pass,
    batch: _BatchMasks,
    layer: int,
    options: DLSOptions,
    decode: bool,
    *,
    report: bool = False,
    coherence: bool = False,
) -> LayerSaliency:
    """Token scores at one layer of a pass, decoded through the LM head or not.

    ``report`` adds own-token ranks and top tokens, ``coherence`` the layer's coherence (both
    sweep the vocabulary); without them only the input tokens' logits are computed.
    """
    grad, hidden = result.grads[layer], result.hidden[layer]
    s = position_saliency(grad, hidden, batch.real, options.saliency, options.apply_relu)
    decoding = (
        decode_layer(
            lm.lm_head,
            hidden,
            batch.input_ids,
            batch.content,
            tau=options.tau,
            weights=options.weights,
            top_k=options.top_k if report else 0,
            ranks=report,
            coherence=coherence,
        )
        if decode or report or coherence
        else None
    )
    has_gradient = _has_position_gradient(grad, batch.real, batch.content)
    if decode:
        assert decoding is not None
        scores = carry_saliency(s * batch.content, decoding.transfer)
    else:
        scores = s * batch.content
    scores = scores * has_gradient.unsqueeze(-1)
    return LayerSaliency(s, scores, has_gradient, decoding)


def input_saliency(result: Pass, batch: _BatchMasks, options: DLSOptions) -> LayerSaliency:
    """Token scores at the word embeddings: input x (modified) gradient, per
    ``options.saliency``."""
    s = position_saliency(
        result.embedded_grad, result.embedded, batch.real, options.saliency, options.apply_relu
    )
    has_gradient = _has_position_gradient(result.embedded_grad, batch.real, batch.content)
    return LayerSaliency(s, s * batch.content, has_gradient, None)


def candidate_scores(
    lm: LoadedModel, encoded: Encoded, options: DLSOptions, rule: str
) -> tuple[torch.Tensor, dict[tuple[int | None, bool], torch.Tensor]]:
    """Every configuration's token scores under ``rule`` from one forward and one backward.

    Returns the targets and ``{(layer, decode): (B, n) scores}`` for the word embeddings
    (layer ``None``) and every layer that receives position gradient, decoded and not. Used by
    ``layer="auto"`` to compare configurations on a calibration sample.
    """
    result = forward_backward(lm.model, encoded, None, family=lm.family, rule=rule, task=lm.task)
    batch = _BatchMasks.of(encoded, result.hidden[0].device)
    out: dict[tuple[int | None, bool], torch.Tensor] = {
        (None, False): input_saliency(result, batch, options).scores
    }
    for layer in range(len(result.hidden)):
        for decode in (False, True):
            saliency = layer_saliency(lm, result, batch, layer, options, decode)
            if not bool(saliency.has_gradient.any()):
                break
            out[(layer, decode)] = saliency.scores
    return result.targets, out


def _has_position_gradient(
    grad: torch.Tensor, real: torch.Tensor, content: torch.Tensor
) -> torch.Tensor:
    """Whether any content position gets gradient (not so at a [CLS]-pooled last layer)."""
    size = grad.abs().amax(-1)
    overall = (size * real).amax(-1)
    on_content = (size * content).amax(-1)
    return on_content > _NO_GRADIENT_TOL * overall.clamp_min(1e-30)


def _coherence(saliency: LayerSaliency) -> torch.Tensor:
    decoding = saliency.decoding
    assert decoding is not None and decoding.coherence is not None, "coherence was measured"
    return decoding.coherence


def _coherent_layers(layers: dict[int, LayerSaliency], rho: float) -> list[int]:
    """Per text: the deepest layer with gradient whose coherence >= rho * layer 0's."""
    coherence = torch.stack([_coherence(layers[l]) for l in sorted(layers)], dim=1)
    usable = torch.stack([layers[l].has_gradient for l in sorted(layers)], dim=1)
    ok = (coherence >= rho * coherence[:, :1]) & usable
    chosen = []
    for row in ok.tolist():
        candidates = [l for l, good in zip(sorted(layers), row) if good]
        chosen.append(candidates[-1] if candidates else 0)
    return chosen
