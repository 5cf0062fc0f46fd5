"""The user-facing entry point: ``explain(texts, model=..., method="dls", ...)``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, overload

import torch

from .encoding import Encoded, check_texts, encode, model_input_names
from .errors import InputError
from .explanation import Explanation, LayerReport, Token, Word
from .models import DEFAULT_MODEL, LoadedModel, load
from .saliency.dls import DLSOptions, DLSResult, run_dls
from .words import WORD_AGGREGATIONS, aggregate, group_words

METHODS = ("dls",)
Target = int | str | None


class TruncationWarning(UserWarning):
    """A text was longer than the model's maximum and lost its tail."""


@overload
def explain(texts: str, model: LoadedModel | str | None = ..., **kwargs: Any) -> Explanation: ...
@overload
def explain(
    texts: Sequence[str], model: LoadedModel | str | None = ..., **kwargs: Any
) -> list[Explanation]: ...


def explain(
    texts: str | Sequence[str],
    model: LoadedModel | str | None = None,
    *,
    method: str = "dls",
    target: Target | Sequence[Target] = None,
    layer: int | str = "coherent",
    saliency: str = "gradcam",
    relu: bool | None = None,
    decode: bool = True,
    tau: int | None = 50,
    weights: str = "prob",
    rho: float = 0.5,
    top_k: int = 5,
    layer_report: bool = True,
    word_aggregation: str = "sum",
    batch_size: int = 16,
    lm_head: str | None = None,
    progress: bool = False,
) -> Explanation | list[Explanation]:
    """Explain why ``model`` classifies each text as it does.

    ``texts``: one string (returns one :class:`Explanation`) or a sequence (returns a list).
    ``model``: a :class:`LoadedModel` from :func:`layersal.load` (load once, reuse), a model
    name or path (loaded for this call), or ``None`` for the bundled default.
    ``target``: class to explain (index or label name, one for all or one per text);
    ``None`` explains the predicted class. The DLS options are described in
    :class:`layersal.saliency.DLSOptions`; ``word_aggregation`` (``sum``/``mean``/``max``)
    merges sub-word scores into word scores.
    """
    single = isinstance(texts, str)
    items = check_texts([texts] if single else list(texts))
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    if word_aggregation not in WORD_AGGREGATIONS:
        raise InputError(
            f"word aggregation must be one of {', '.join(WORD_AGGREGATIONS)}, "
            f"not {word_aggregation!r}"
        )
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    options = DLSOptions(
        layer=layer,
        saliency=saliency,
        relu=relu,
        decode=decode,
        tau=tau,
        weights=weights,
        rho=rho,
        top_k=top_k,
        layer_report=layer_report,
    )
    lm = model if isinstance(model, LoadedModel) else load(model or DEFAULT_MODEL, lm_head)
    targets = _target_indices(target, len(items), lm.labels)
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    results: list[Explanation | None] = [None] * len(items)
    for batch in _progress(batches, progress, total_texts=len(items)):
        encoded = encode(lm.tokenizer, [items[i] for i in batch], lm.max_length, model_input_names(lm.model))
        batch_targets = None if targets is None else torch.tensor([targets[i] for i in batch])
        dls = run_dls(lm, encoded, options, batch_targets)
        for row, index in enumerate(batch):
            if encoded.truncated[row]:
                warnings.warn(
                    f"text {index} is longer than {lm.max_length} tokens: explained its first "
                    f"{lm.max_length} tokens only",
                    TruncationWarning,
                    stacklevel=2,
                )
            results[index] = _build(lm, encoded, dls, row, options, word_aggregation, method)
    explanations = [r for r in results if r is not None]
    return explanations[0] if single else explanations


def _target_indices(
    target: Target | Sequence[Target], n: int, labels: list[str]
) -> list[int] | None:
    if target is None:
        return None
    many = isinstance(target, Sequence) and not isinstance(target, str)
    values = list(target) if many else [target] * n
    if len(values) != n:
        raise InputError(f"got {len(values)} targets for {n} texts")
    if any(v is None for v in values):
        raise InputError("a per-text target list cannot contain None")
    return [_target_index(v, labels) for v in values]


def _target_index(value: int | str, labels: list[str]) -> int:
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        lowered = [label.lower() for label in labels]
        if value.lower() not in lowered:
            raise InputError(f"unknown target {value!r}; labels are: {', '.join(labels)}")
        return lowered.index(value.lower())
    index = int(value)
    if not 0 <= index < len(labels):
        raise InputError(
            f"target {index} is out of range: the model has {len(labels)} classes "
            f"(0..{len(labels) - 1}: {', '.join(labels)})"
        )
    return index


def _progress(batches: list[list[int]], enabled: bool, total_texts: int) -> Any:
    if not enabled or len(batches) < 2:
        return batches
    from rich.progress import track

    return track(batches, description=f"explaining {total_texts} texts")


def _build(
    lm: LoadedModel,
    encoded: Encoded,
    dls: DLSResult,
    row: int,
    options: DLSOptions,
    word_aggregation: str,
    method: str,
) -> Explanation:
    """One text's :class:`Explanation` from a batch result (content tokens only)."""
    text = encoded.texts[row]
    content = encoded.content[row].nonzero().flatten().tolist()
    ids = encoded.input_ids[row, content].tolist()
    pieces = lm.tokenizer.convert_ids_to_tokens(ids)
    offsets = [tuple(int(x) for x in encoded.offsets[row, i]) for i in content]
    layer = dls.chosen[row]
    chosen = dls.layers[layer]
    scores = chosen.scores[row, content].tolist()
    spans = group_words([encoded.word_ids[row][i] for i in content], offsets)
    word_of = {t: w for w, span in enumerate(spans) for t in span.tokens}
    tokens = [
        Token(text=piece, start=start, end=end, score=score, word=word_of[i])
        for i, (piece, (start, end), score) in enumerate(zip(pieces, offsets, scores))
    ]
    words = [
        Word(
            text=text[span.start : span.end],
            start=span.start,
            end=span.end,
            score=aggregate([scores[t] for t in span.tokens], word_aggregation),
            tokens=list(span.tokens),
        )
        for span in spans
    ]
    probs = dls.pass_.probabilities[row].tolist()
    return Explanation(
        text=text,
        model=lm.name,
        method=method,
        prediction=lm.labels[int(torch.tensor(probs).argmax())],
        target=lm.labels[int(dls.pass_.targets[row])],
        probabilities=dict(zip(lm.labels, probs)),
        tokens=tokens,
        words=words,
        layer=layer,
        decoder=lm.decoder,
        word_aggregation=word_aggregation,
        truncated=encoded.truncated[row],
        options={
            "layer": options.layer,
            "saliency": options.saliency,
            "relu": options.apply_relu,
            "decode": options.decode,
            "tau": options.tau,
            "weights": options.weights,
            "rho": options.rho,
        },
        layers=_layer_reports(lm, dls, row, content) if options.layer_report else [],
    )


def _layer_reports(lm: LoadedModel, dls: DLSResult, row: int, content: list[int]) -> list[LayerReport]:
    reports = []
    for layer, result in sorted(dls.layers.items()):
        decoding = result.decoding
        has_gradient = bool(result.has_gradient[row])
        top_tokens = top_probs = None
        if decoding is not None and decoding.top_ids is not None:
            top_tokens = [lm.tokenizer.convert_ids_to_tokens(decoding.top_ids[row, i].tolist()) for i in content]
            top_probs = [[round(p, 6) for p in decoding.top_probs[row, i].tolist()] for i in content]
        reports.append(
            LayerReport(
                layer=layer,
                coherence=None if decoding is None else float(decoding.coherence[row]),
                has_position_gradient=has_gradient,
                scores=result.scores[row, content].tolist(),
                own_rank=None if decoding is None else decoding.own_rank[row, content].tolist(),
                top_tokens=top_tokens,
                top_probs=top_probs,
                note=""
                if has_gradient
                else "no gradient reaches the input positions at this layer (the classifier "
                "reads only the [CLS] vector here), so it carries no position saliency",
            )
        )
    return reports
