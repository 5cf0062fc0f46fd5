"""The LM head that decodes a classifier's layers into vocabulary space: found in the
checkpoint itself, in an explicit ``lm_head=`` checkpoint or object, or (as a flagged fallback)
in the classifier's tied input embeddings; checked against the classifier's width and
vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoints import is_object, read_config, read_tensors, resolve
from .decoding import LMHead, Norm
from .errors import ModelLoadError
from .families import Family, norm_eps


def _lookup(tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """A tensor by name, accepting old ``gamma``/``beta`` layer-norm names."""
    if name in tensors:
        return tensors[name]
    for new, old in ((".weight", ".gamma"), (".bias", ".beta")):
        if name.endswith(new) and name[: -len(new)] + old in tensors:
            return tensors[name[: -len(new)] + old]
    return None


def head_from_tensors(
    tensors: dict[str, torch.Tensor],
    family: Family,
    config: Any,
    source: str,
    *,
    tied: bool = True,
) -> LMHead | None:
    """Build the LM head from a state dict, or ``None`` if it holds no head.

    A head without a transform (causal LMs) is found by its decoder tensor; with ``tied`` (an
    LM checkpoint given as the head), a checkpoint that saved its decoder only as the tied word
    embeddings counts too. The final norm and next-token flag are the classifier's
    (:func:`resolve_lm_head` adds them).
    """
    for layout in family.heads:
        if layout.marker is not None and layout.marker not in tensors:
            continue
        decoder = tensors.get(layout.decoder) if layout.decoder else None
        if decoder is None and (tied or layout.dense is not None):
            decoder = _lookup(tensors, family.embedding_key)
            if decoder is None:
                decoder = _lookup(tensors, family.embedding_key.split(".", 1)[1])
        bias = next((tensors[b] for b in layout.bias if b in tensors), None)
        if layout.dense is None or layout.norm is None:
            if decoder is None:
                continue
            return LMHead(
                decoder=decoder.float(),
                bias=None if bias is None else bias.float(),
                kind="lm_head" if family.causal else "mlm_head",
                source=source,
            )
        dense_w = _lookup(tensors, layout.dense + ".weight")
        norm_w = _lookup(tensors, layout.norm + ".weight")
        if dense_w is None or norm_w is None or decoder is None:
            continue
        dense_b = _lookup(tensors, layout.dense + ".bias")
        norm_b = _lookup(tensors, layout.norm + ".bias")
        return LMHead(
            decoder=decoder.float(),
            bias=None if bias is None else bias.float(),
            dense_weight=dense_w.float(),
            dense_bias=None if dense_b is None else dense_b.float(),
            activation=family.activation(config),
            norm_weight=norm_w.float(),
            norm_bias=None if norm_b is None else norm_b.float(),
            norm_eps=family.layer_norm_eps(config),
            kind="mlm_head",
            source=source,
        )
    return None


def embedding_head(model: Any, source: str) -> LMHead:
    """Fallback decoder: logits = h E^T with the classifier's own input embeddings."""
    embeddings = model.get_input_embeddings().weight.detach().float().clone()
    hidden = int(getattr(model.config, "hidden_size", embeddings.shape[1]))
    if embeddings.shape[1] != hidden:
        raise ModelLoadError(
            f"{source!r} embeds tokens in {embeddings.shape[1]} dims but its layers are {hidden} "
            "wide, so its embeddings cannot decode them; pass `lm_head` with a compatible base"
        )
    return LMHead(decoder=embeddings, kind="embeddings", source=source)


def final_norm(model: Any, family: Family | None) -> Norm | None:
    """A pre-norm classifier's final norm as tensors (``None`` for post-norm families)."""
    if family is None or family.final_norm is None:
        return None
    module = model.get_submodule(family.final_norm)
    weight = getattr(module, "weight", None)
    weight = None if weight is None else weight.detach().float().clone()
    if isinstance(module, torch.nn.LayerNorm):
        bias = None if module.bias is None else module.bias.detach().float().clone()
        return Norm(weight, bias, float(module.eps))
    return Norm(weight, None, norm_eps(module), rms=True, offset=family.rms_offset)


def resolve_lm_head(
    model: Any,
    family: Family | None,
    path: Path | None,
    lm_head: Any,
    *,
    allow_pickle: bool = False,
) -> LMHead:
    """The checkpoint's own LM head, else ``lm_head``'s, else the tied embeddings.

    ``path``: the classifier's checkpoint folder (``None``: nothing saved to look in, a model
    object's). ``lm_head``: a checkpoint name or folder, or a ``*ForMaskedLM`` /
    ``*ForCausalLM`` object. A pre-norm family's head applies the classifier's final norm
    first; a causal family's head decodes next-token predictions.
    """
    head = _saved_or_given_head(model, family, path, lm_head, allow_pickle=allow_pickle)
    if head is None:
        head = embedding_head(model, str(path) if path is not None else type(model).__name__)
    head.pre_norm = final_norm(model, family)
    head.next_token = family is not None and family.causal
    return head


def _saved_or_given_head(
    model: Any, family: Family | None, path: Path | None, lm_head: Any, *, allow_pickle: bool
) -> LMHead | None:
    """The head saved in the classifier's own folder, else the one ``lm_head`` names."""
    config = model.config
    if lm_head is None and family is not None and path is not None:
        tensors = read_tensors(path, allow_pickle=allow_pickle)
        head = head_from_tensors(tensors, family, config, str(path), tied=False)
        if head is not None:
            return _checked(head, model, str(path))
    if lm_head is None:
        return None
    if family is None:
        raise ModelLoadError(
            f"layersal has no LM-head adapter for model type {config.model_type!r}; "
            "leave `lm_head` out to decode through the input embeddings"
        )
    if is_object(lm_head):
        source = str(getattr(lm_head.config, "_name_or_path", "") or type(lm_head).__name__)
        what = f"the {type(lm_head).__name__} object"
        tensors = {k: v.detach() for k, v in lm_head.state_dict().items()}
    else:
        head_path = resolve(lm_head, allow_pickle=allow_pickle)
        architecture = read_config(head_path).get("architectures", ["?"])[0]
        source, what = str(lm_head), f"{str(lm_head)!r} ({architecture})"
        tensors = read_tensors(head_path, allow_pickle=allow_pickle)
    head = head_from_tensors(tensors, family, config, source)
    if head is None:
        kind = "causal-LM" if family.causal else "masked-LM"
        raise ModelLoadError(f"{what} has no {kind} head weights for the {family.name} layout")
    return _checked(head, model, source)


def _checked(head: LMHead, model: Any, source: str) -> LMHead:
    hidden = int(
        getattr(model.config, "hidden_size", getattr(model.config, "dim", head.input_size))
    )
    if head.input_size != hidden:
        raise ModelLoadError(
            f"the LM head from {source!r} takes {head.input_size}-dim states but the classifier's "
            f"layers are {hidden}-dim"
        )
    vocab = model.get_input_embeddings().weight.shape[0]
    if head.vocab_size != vocab:
        raise ModelLoadError(
            f"the LM head from {source!r} has a {head.vocab_size}-token vocabulary, the "
            f"classifier {vocab}: they do not share a tokenizer"
        )
    return head
