"""The user-facing entry point: ``explain(texts, model=..., method="dls", ...)``, a thin call
of :class:`~layersal.job.Explainer` (one settled job)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, overload

from .errors import TruncationWarning
from .explanation import Explanation
from .inputs import TextItem, TextPair, check_texts
from .job import Explainer, ProgressFn, build_explanation, explainer
from .rows import gives_several
from .saliency import methods
from .targets import Target


@overload
def explain(texts: str | TextPair, model: Any = ..., **kwargs: Any) -> Explanation: ...
@overload
def explain(texts: Sequence[TextItem], model: Any = ..., **kwargs: Any) -> list[Explanation]: ...


def explain(
    texts: TextItem | Sequence[TextItem],
    model: Any = None,
    *,
    method: str | None = None,
    budget: int | None = None,
    target: Target | Sequence[Target] = None,
    word_aggregation: str = "sum",
    batch_size: int = 16,
    lm_head: str | None = None,
    progress: bool | ProgressFn = False,
    long_texts: str = "windows",
    window: int | None = None,
    stride: int | None = None,
    options: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    template: str | None = None,
    multi_label: bool = False,
    **method_options: Any,
) -> Explanation | list[Explanation]:
    """Explain why ``model`` classifies each text as it does.

    ``texts``: one string (returns one :class:`Explanation`) or a sequence (returns a list).
    A multi-label model explains each label it predicts for a text (every label whose sigmoid
    is at least 0.5, else the top one), one explanation each: one text then returns a list,
    and a list of texts returns their explanations in order, a text's labels together
    (``target=`` names one label for all instead).
    A pair classifier (natural-language inference, a cross-encoder) reads pairs of texts: one
    pair is a tuple of two strings, ``(premise, hypothesis)``, and a list of such tuples gives
    a list of explanations (a list of two strings is two texts, not a pair). Pairs are
    truncated (the longer text first) rather than split into windows.
    ``model``: a :class:`LoadedModel` from :func:`layersal.load` (load once, reuse), a model
    name or path, a ``*ForSequenceClassification`` model object or a text-classification
    pipeline (wrapped for this call, see :func:`layersal.models.from_objects`), or ``None``
    for the bundled default.
    ``method``: one of :func:`layersal.methods` (``None``: the default, ``dls``);
    ``budget``: instead of a method, at most this many model passes per text (forward and
    backward, as ``layersal bench`` counts them): the most faithful method the model's card
    measured within it (``scripts/card_frontier.py``), recorded in the explanation's
    ``options["budget"]`` with why (see :mod:`layersal.budget_choice`); ``options`` is a
    dict of the method's own options (:func:`layersal.method_schema` lists them; for
    ``dls``: ``layer``, ``rule``, ``saliency``, ``relu``, ``decode``, ``tau``, ``weights``,
    ``rho``, ``top_k``, ``layer_report``, see :class:`layersal.DLSOptions`), e.g.
    ``explain(text, lm, method="occlusion", options={"span": 5})``. Method options may also be
    given as keywords (``explain(text, lm, layer=1)``); no method option is named like one of
    this function's parameters, so the two never mix. The default,
    ``layer="auto"``, uses the rule set, layer and decoding that measured most faithful for
    this model (shipped in the bundled models' cards; calibrated once on the first texts and
    cached for other models) at the cost of one forward and one backward pass.
    ``target``: class to explain (index or label name, one for all or one per text);
    ``None`` explains the predicted class.
    A token classifier (NER, a ``*ForTokenClassification`` model or a token-classification
    pipeline) explains entities: one explanation per entity it predicts in a text (always a
    list, maybe empty), each with its ``entity`` (span, label, probability); ``target`` names
    a span instead: a word index (``3``), character offsets (``(10, 16)``, ``"10:16"``), with
    or without a label (``"10:16=ORG"``). A zero-shot classifier (a natural-language-inference
    model with ``labels=[...]``, or a zero-shot-classification pipeline with them) explains a
    text's top label, its hypothesis ``template.format(label)`` (default ``"This example is
    {}."``) as the pair's second text; ``target`` names a label, or a list of labels (then a
    list comes back); ``multi_label`` scores labels independently, as the pipeline does.
    ``word_aggregation`` (``sum``/``mean``/``max``)
    merges sub-word scores into word scores. Texts are batched ``batch_size`` at a time,
    sorted by length to cut padding; results come back in input order.
    ``long_texts``: ``"windows"`` explains a text longer than the model's maximum as
    overlapping windows of ``window`` tokens every ``stride`` tokens, merged into one
    explanation (see :mod:`layersal.windows`); ``"truncate"`` keeps its first window and warns.
    ``progress``: ``True`` draws a bar on the terminal; a function is called as
    ``progress(done, total)`` in model rows (a text, or one window of a long one) as they are
    explained, so a single long document reports its progress too.
    """
    single = isinstance(texts, str) or _is_one_pair(texts)
    items = check_texts([texts] if single else list(texts))
    job = explainer(
        model,
        method,
        budget=budget,
        options=options,
        lm_head=lm_head,
        word_aggregation=word_aggregation,
        batch_size=batch_size,
        long_texts=long_texts,
        window=window,
        stride=stride,
        labels=labels,
        template=template,
        multi_label=multi_label,
        **method_options,
    )
    grouped = job.explain_grouped(items, target=target, progress=progress)
    if single:  # one text: its explanation, or a multi-label model's list, one per label
        return grouped[0] if gives_several(job.lm.task, target) else grouped[0][0]
    return [e for group in grouped for e in group]


def _is_one_pair(texts: Any) -> bool:
    """A tuple of two strings is one pair of texts (a list of two strings is two texts)."""
    return isinstance(texts, tuple) and len(texts) == 2 and all(isinstance(t, str) for t in texts)


__all__ = ["Explainer", "TruncationWarning", "build_explanation", "explain", "explainer", "methods"]
