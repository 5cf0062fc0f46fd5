"""Decoding hidden states back into the vocabulary (docs/method.md, steps 2 and 3).

Pure tensor maths: an :class:`LMHead` projects hidden states to vocabulary logits, and
:func:`decode_layer` turns one layer's projection into the decoding matrix ``a_l(i, j)``,
the layer's semantic coherence, the rank of each position's own token and its top tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DecoderKind = str  # "mlm_head", "lm_head" (causal) or "embeddings" (logits = h E^T)


@dataclass
class Norm:
    """A model's final LayerNorm or RMSNorm, as tensors: ``rms`` norms do not centre and scale
    by ``offset + weight`` (Gemma's RMSNorm has ``offset`` 1)."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None = None
    eps: float = 1e-5
    rms: bool = False
    offset: float = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.rms:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * (self.offset + self.weight.float())
        return y.to(x.dtype) if self.bias is None else y.to(x.dtype) + self.bias

    def to(self, device: torch.device | str) -> Norm:
        self.weight = None if self.weight is None else self.weight.to(device)
        self.bias = None if self.bias is None else self.bias.to(device)
        return self


@dataclass
class LMHead:
    """A language-model head: [final norm ->] dense -> activation -> layer norm -> decoder.

    A masked-LM head has the dense transform; a causal-LM head (``kind == "lm_head"``) and
    decoding through the input embeddings (``kind == "embeddings"``) have none: logits are
    ``h @ decoder.T`` (+ bias). ``pre_norm`` is a pre-norm model's final norm, applied first
    because its layers' residual streams are only normalised there. ``next_token``: the head
    predicts the token *after* each position (a causal LM), not the position's own token.
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
    pre_norm: Norm | None = None
    next_token: bool = False

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
        if self.pre_norm is not None:
            self.pre_norm.to(device)
        return self

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head's transform: the final norm if any, then dense, activation, layer norm."""
        if self.pre_norm is not None:
            hidden = self.pre_norm(hidden)
        if self.dense_weight is None:
            return hidden
        x = F.linear(hidden, self.dense_weight, self.dense_bias)
        if self.activation:
            # here, not at the top: importing the methods (their registry) needs no transformers
            from transformers.activations import ACT2FN

            x = ACT2FN[self.activation](x)
        if self.norm_weight is not None:
            x = F.layer_norm(x, (x.shape[-1],), self.norm_weight, self.norm_bias, self.norm_eps)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for hidden states ``(..., K)`` -> ``(..., |V|)``."""
        return F.linear(self.transform(hidden), self.decoder, self.bias)


@dataclass
class LayerDecoding:
    """What one layer's hidden states decode to, for a batch of ``B`` sequences of ``n``.

    Only content positions are decoded; other rows are zero (``own_rank``/``top_*``: 0).
    """

    transfer: torch.Tensor  # (B, n, n): a_l(i, j), zero outside content rows/columns
    coherence: torch.Tensor | None  # (B,): mean share of decoded probability on input tokens
    own_rank: torch.Tensor | None  # (B, n): rank of t_i in p_l^i (0 = top), if asked for
    top_ids: torch.Tensor | None  # (B, n, k): top-k decoded token ids per position
    top_probs: torch.Tensor | None  # (B, n, k)


def _same_tokens(input_ids: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``(B, n, n)``: whether content positions j and k hold the same token id."""
    same = input_ids.unsqueeze(-1) == input_ids.unsqueeze(-2)
    return same & content.unsqueeze(-1) & content.unsqueeze(-2)


def duplicate_counts(input_ids: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """For each content column j, how many content positions hold the same token id."""
    return _same_tokens(input_ids, content).sum(-1).clamp_min(1)


def _visible_columns(
    input_ids: torch.Tensor,
    content: torch.Tensor,
    rows_b: torch.Tensor,
    rows_i: torch.Tensor,
    next_token: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per decoded row: which columns it may credit, and how many of those hold each column's
    token (``(rows, n)`` each). All content columns for a masked-LM head; for a causal head
    those up to and including the predicted position ``i + 1``."""
    if not next_token:
        return content[rows_b], duplicate_counts(input_ids, content)[rows_b].to(torch.float32)
    n = input_ids.shape[1]
    last = (rows_i + 1).clamp_max(n - 1)
    visible = content[rows_b] & (torch.arange(n, device=content.device) <= last.unsqueeze(-1))
    # seen[b, j, k]: occurrences of t_j among the content positions up to k
    seen = _same_tokens(input_ids, content).cumsum(-1, dtype=torch.int32)
    counts = seen[rows_b, :, last].to(torch.float32).clamp_min(1)
    return visible, counts


def decode_layer(
    head: LMHead,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    content: torch.Tensor,
    *,
    tau: int | None = 50,
    weights: str = "prob",
    top_k: int = 0,
    ranks: bool = False,
    coherence: bool = True,
    max_elements: int = 1 << 24,
) -> LayerDecoding:
    """Decode one layer: ``a_l(i, j) = p_l^i[t_j]`` when ``t_j`` is in the top ``tau`` of ``p_l^i``.

    A token that occurs ``c`` times gets ``1/c`` of its value at each occurrence, so a row's sum
    is the probability mass on the input's (distinct) tokens. ``weights="uniform"`` counts a
    hit as 1 instead of ``p``; coherence always uses probabilities. ``tau=None`` (or >= |V|)
    disables the cut. Only content positions are projected through the head (padding and
    special tokens cost nothing), in chunks of at most ``max_elements`` logits; ``ranks`` and
    ``top_k`` add the report's own-token ranks and top decoded tokens.

    Coherence comes free whenever the vocabulary is swept anyway. Without a cut, ranks, top
    tokens or ``coherence``, only the input tokens' logits are computed
    (``n`` columns instead of ``|V|``): rows of ``transfer`` are then normalised over the input
    tokens instead of the vocabulary, which :func:`carry_saliency` makes no difference to.

    A causal head (``head.next_token``) predicts at position ``i`` the token at ``i + 1``, so
    position ``i`` may only credit the tokens it has seen and the one it predicts: columns
    ``j <= i + 1`` (duplicates are counted among those). Coherence is then the mean share of
    each position's next-token distribution on the tokens it may credit, and ``own_rank`` is
    the rank of the *next* token (-1 where the next position is not an input token: at the
    last one, or before a separator).
    """
    if weights not in ("prob", "uniform"):
        raise ValueError(f"weights must be 'prob' or 'uniform', not {weights!r}")
    batch, n = input_ids.shape
    rows_b, rows_i = content.nonzero(as_tuple=True)
    column_ids = input_ids[rows_b]
    visible, counts = _visible_columns(input_ids, content, rows_b, rows_i, head.next_token)
    own_at = (rows_i + 1).clamp_max(n - 1) if head.next_token else rows_i
    own_ids = input_ids[rows_b, own_at]
    cut = tau is not None and tau < head.vocab_size
    full = bool(cut or ranks or top_k or coherence)
    if full:
        projected = _project_rows(
            head, hidden[rows_b, rows_i], column_ids, own_ids, tau, top_k, ranks, max_elements
        )
        column_logits, log_z = _present(projected[0]), _present(projected[1])
        kth, own_rank, top_ids, top_probs = projected[2:]
    else:
        column_logits = _input_token_logits(head, hidden[rows_b, rows_i], column_ids)
        masked = (column_logits - counts.log()).masked_fill(~visible, float("-inf"))
        log_z = torch.logsumexp(masked, dim=-1).nan_to_num(neginf=0.0)
        kth = own_rank = top_ids = top_probs = None
    prob = torch.exp(column_logits - log_z.unsqueeze(-1))
    hit = (
        column_logits >= kth.unsqueeze(-1)
        if kth is not None
        else torch.ones_like(prob, dtype=torch.bool)
    )
    kept = hit & visible
    share = 1.0 / counts
    prob_share = torch.where(kept, prob * share, torch.zeros_like(prob))
    transfer = torch.zeros(batch, n, n, dtype=prob.dtype, device=prob.device)
    transfer[rows_b, rows_i] = prob_share if weights == "prob" else kept.to(prob.dtype) * share
    mass = torch.zeros(batch, dtype=prob.dtype, device=prob.device).index_add_(
        0, rows_b, prob_share.sum(-1)
    )
    share_on_inputs = mass / content.sum(-1).clamp_min(1)
    if own_rank is not None and head.next_token:
        has_next = content[rows_b, own_at] & (own_at > rows_i)
        own_rank = torch.where(has_next, own_rank, torch.full_like(own_rank, -1))
    return LayerDecoding(
        transfer=transfer,
        coherence=share_on_inputs if full else None,
        own_rank=_scatter(own_rank, rows_b, rows_i, (batch, n)),
        top_ids=_scatter(top_ids, rows_b, rows_i, (batch, n, top_k)),
        top_probs=_scatter(top_probs, rows_b, rows_i, (batch, n, top_k)),
    )


def _input_token_logits(head: LMHead, rows: torch.Tensor, column_ids: torch.Tensor) -> torch.Tensor:
    """Logits of each row's own sequence tokens only: ``(rows, n)``, no vocabulary sweep."""
    transformed = head.transform(rows.to(head.decoder.dtype))
    logits = torch.einsum("rk,rjk->rj", transformed, head.decoder[column_ids])
    if head.bias is not None:
        logits = logits + head.bias[column_ids]
    return logits.float()


def _project_rows(
    head: LMHead,
    rows: torch.Tensor,
    column_ids: torch.Tensor,
    own_ids: torch.Tensor,
    tau: int | None,
    top_k: int,
    ranks: bool,
    max_elements: int,
) -> tuple[torch.Tensor | None, ...]:
    """Per content row: logits of the sequence's tokens, log-normaliser, tau-th logit, ...

    The ``(rows, |V|)`` logits exist one chunk at a time.
    """
    count, vocab = rows.shape[0], head.vocab_size
    cut = tau is not None and tau < vocab
    step = max(1, max_elements // vocab)
    parts: list[tuple[torch.Tensor | None, ...]] = []
    for s in range(0, count, step):
        logits = head.logits(rows[s : s + step].to(head.decoder.dtype)).float()
        log_z = torch.logsumexp(logits, dim=-1)
        kth = logits.topk(tau, dim=-1).values[:, -1] if cut and tau is not None else None
        own_rank = None
        if ranks:
            own = logits.gather(1, own_ids[s : s + step].unsqueeze(1))
            own_rank = (logits > own).sum(-1)
        top_ids = top_probs = None
        if top_k:
            values, top_ids = logits.topk(top_k, dim=-1)
            top_probs = torch.exp(values - log_z.unsqueeze(-1))
        parts.append(
            (logits.gather(1, column_ids[s : s + step]), log_z, kth, own_rank, top_ids, top_probs)
        )
    if not parts:
        empty = torch.zeros(0, column_ids.shape[1], device=rows.device)
        k = torch.zeros(0, top_k, device=rows.device)
        return (
            empty,
            empty[:, 0],
            empty[:, 0] if cut else None,
            empty[:, 0].long() if ranks else None,
            k.long() if top_k else None,
            k if top_k else None,
        )
    return tuple(
        None if parts[0][i] is None else torch.cat([_present(p[i]) for p in parts])
        for i in range(6)
    )


def _present(value: torch.Tensor | None) -> torch.Tensor:
    assert value is not None, "a part computed for one chunk is computed for every chunk"
    return value


def _scatter(
    values: torch.Tensor | None, rows_b: torch.Tensor, rows_i: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor | None:
    """Place per-row values back at their (batch, position) slots, zero elsewhere."""
    if values is None or (len(shape) == 3 and shape[2] == 0):
        return None
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)
    out[rows_b, rows_i] = values
    return out


def carry_saliency(position_saliency: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
    """``S_l(j) = sum_i s_l^i a_l(i, j) / sum_j' a_l(i, j')``: rows renormalised.

    A position none of whose top-``tau`` tokens is an input token carries nothing.
    """
    row_sum = transfer.sum(-1, keepdim=True)
    rows = torch.where(row_sum > 0, transfer / row_sum.clamp_min(1e-30), torch.zeros_like(transfer))
    return torch.einsum("bi,bij->bj", position_saliency, rows)
