"""Decoding hidden states back into the vocabulary (METHOD.md, steps 2 and 3).

Pure tensor maths: an :class:`LMHead` projects hidden states to vocabulary logits, and
:func:`decode_layer` turns one layer's projection into the decoding matrix ``a_l(i, j)``,
the layer's semantic coherence, the rank of each position's own token and its top tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

DecoderKind = str  # "mlm_head" (a real masked-LM head) or "embeddings" (logits = h E^T)


@dataclass
class LMHead:
    """A masked-LM head: dense -> activation -> layer norm -> decoder (+ bias).

    With ``kind == "embeddings"`` there is no transform: logits are ``h @ decoder.T``.
    """

    decoder: torch.Tensor
    bias: torch.Tensor | None = None
    dense_weight: torch.Tensor | None = None
    dense_bias: torch.Tensor | None = None
    activation: str | None = None
    norm_weight: torch.Tensor | None = None
    norm_bias: torch.Tensor | None = None
    norm_eps: float = 1e-12
    kind: DecoderKind = "mlm_head"
    source: str = ""

    @property
    def vocab_size(self) -> int:
        return int(self.decoder.shape[0])

    @property
    def input_size(self) -> int:
        """Hidden size the head expects."""
        if self.dense_weight is not None:
            return int(self.dense_weight.shape[1])
        return int(self.decoder.shape[1])

    def to(self, device: torch.device | str) -> LMHead:
        """Move every tensor to ``device`` (in place) and return self."""
        for name in ("decoder", "bias", "dense_weight", "dense_bias", "norm_weight", "norm_bias"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head's transform (identity for embedding decoding)."""
        if self.dense_weight is None:
            return hidden
        x = F.linear(hidden, self.dense_weight, self.dense_bias)
        if self.activation:
            x = ACT2FN[self.activation](x)
        if self.norm_weight is not None:
            x = F.layer_norm(x, (x.shape[-1],), self.norm_weight, self.norm_bias, self.norm_eps)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for hidden states ``(..., K)`` -> ``(..., |V|)``."""
        return F.linear(self.transform(hidden), self.decoder, self.bias)


@dataclass
class LayerDecoding:
    """What one layer's hidden states decode to, for a batch of ``B`` sequences of ``n``."""

    transfer: torch.Tensor  # (B, n, n): a_l(i, j), zero outside content rows/columns
    coherence: torch.Tensor  # (B,): mean over content rows of the probability on input tokens
    own_rank: torch.Tensor  # (B, n): rank of t_i in p_l^i (0 = top)
    top_ids: torch.Tensor | None  # (B, n, k): top-k decoded token ids per position
    top_probs: torch.Tensor | None  # (B, n, k)


def duplicate_counts(input_ids: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """For each content column j, how many content positions hold the same token id."""
    same = input_ids.unsqueeze(-1) == input_ids.unsqueeze(-2)
    same &= content.unsqueeze(-1) & content.unsqueeze(-2)
    return same.sum(-1).clamp_min(1)


def decode_layer(
    head: LMHead,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    content: torch.Tensor,
    *,
    tau: int | None = 50,
    weights: str = "prob",
    top_k: int = 0,
    max_elements: int = 1 << 25,
) -> LayerDecoding:
    """Decode one layer: ``a_l(i, j) = p_l^i[t_j]`` when ``t_j`` is in the top ``tau`` of ``p_l^i``.

    A token that occurs ``c`` times gets ``1/c`` of its value at each occurrence, so a row's sum
    is the probability mass on the input's (distinct) tokens. ``weights="uniform"`` counts a
    hit as 1 instead of ``p``; coherence always uses probabilities. ``tau=None`` (or >= |V|)
    disables the cut. Work is chunked over the batch so that no logits tensor exceeds
    ``max_elements`` values.
    """
    if weights not in ("prob", "uniform"):
        raise ValueError(f"weights must be 'prob' or 'uniform', not {weights!r}")
    batch, n = input_ids.shape
    step = max(1, max_elements // max(1, n * head.vocab_size))
    parts = [
        _decode_chunk(
            head,
            hidden[s : s + step],
            input_ids[s : s + step],
            content[s : s + step],
            tau=tau,
            weights=weights,
            top_k=top_k,
        )
        for s in range(0, batch, step)
    ]
    if len(parts) == 1:
        return parts[0]
    return LayerDecoding(
        transfer=torch.cat([p.transfer for p in parts]),
        coherence=torch.cat([p.coherence for p in parts]),
        own_rank=torch.cat([p.own_rank for p in parts]),
        top_ids=torch.cat([p.top_ids for p in parts]) if top_k else None,
        top_probs=torch.cat([p.top_probs for p in parts]) if top_k else None,
    )


def _decode_chunk(
    head: LMHead,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    content: torch.Tensor,
    *,
    tau: int | None,
    weights: str,
    top_k: int,
) -> LayerDecoding:
    logits = head.logits(hidden.to(head.decoder.dtype)).float()
    log_z = torch.logsumexp(logits, dim=-1)
    n = input_ids.shape[1]
    columns = input_ids.unsqueeze(1).expand(-1, n, -1)
    column_logits = logits.gather(-1, columns)
    prob = torch.exp(column_logits - log_z.unsqueeze(-1))
    if tau is not None and tau < logits.shape[-1]:
        kth = logits.topk(tau, dim=-1).values[..., -1:]
        hit = column_logits >= kth
    else:
        hit = torch.ones_like(prob, dtype=torch.bool)
    pair = content.unsqueeze(-1) & content.unsqueeze(-2)
    share = 1.0 / duplicate_counts(input_ids, content).unsqueeze(1)
    kept = hit & pair
    prob_share = torch.where(kept, prob * share, torch.zeros_like(prob))
    transfer = prob_share if weights == "prob" else kept.float() * share
    n_content = content.sum(-1).clamp_min(1)
    coherence = (prob_share.sum(-1) * content).sum(-1) / n_content
    own_logit = logits.gather(-1, input_ids.unsqueeze(-1))
    own_rank = (logits > own_logit).sum(-1)
    top_ids = top_probs = None
    if top_k:
        values, top_ids = logits.topk(top_k, dim=-1)
        top_probs = torch.exp(values - log_z.unsqueeze(-1))
    return LayerDecoding(transfer, coherence, own_rank, top_ids, top_probs)


def carry_saliency(position_saliency: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
    """``S_l(j) = sum_i s_l^i a_l(i, j) / sum_j' a_l(i, j')``: rows renormalised.

    A position none of whose top-``tau`` tokens is an input token carries nothing.
    """
    row_sum = transfer.sum(-1, keepdim=True)
    rows = torch.where(row_sum > 0, transfer / row_sum.clamp_min(1e-30), torch.zeros_like(transfer))
    return torch.einsum("bi,bij->bj", position_saliency, rows)
