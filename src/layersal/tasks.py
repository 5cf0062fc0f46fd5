"""What is explained: the one seam that knows how a model's outputs become what a user sees.

A :class:`Task` says which scalar of a row's logits the backward pass differentiates for a
target, how logits become the numbers shown (softmax, sigmoid or the score itself), what the
prediction is, which target a text gets when none is named, and how the windows of a long
text merge. Read from the model's config by :func:`task_of`; no other module tests for a
softmax or an arg-max.

Three tasks are defined here and explained on every face: ``single_label`` (one softmax
over exclusive classes), ``multi_label`` (independent sigmoids; by default each label a text
predicts is explained, one explanation each) and ``regression`` (one output: reward models,
similarity scorers). A task added here is refused at ``load()`` until it is in
:data:`EXPLAINED`, once every face speaks it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .entities import entity_types, span_log_probs, type_matrix
from .errors import ModelLoadError

if TYPE_CHECKING:
    from .encoding import Encoded

FOCUS = "focus"
"""The per-position input (``(B, n)``, non-zero where it looks) that a task with a view reads:
it travels in :attr:`layersal.encoding.Encoded.inputs` with the model's own inputs, is cut,
padded and perturbed with them, and is taken out again before the model sees its inputs."""


@dataclass(frozen=True)
class Task:
    """Single-label classification: one softmax over exclusive classes (the base the others
    change)."""

    name: str = "single_label"
    description: str = "single-label classifier (one softmax over the classes)"
    probabilistic: bool = True
    """Whether the outputs are probabilities (log-odds and accuracy apply) or a score."""
    several: bool = False
    """Whether a text is explained once per predicted label by default (multi-label)."""
    explained: str = "the model's predicted class"
    """What a benchmark's metrics watch, in words."""
    focused: bool = False
    """Whether each explained row looks at a span of its text (an entity): its targets are
    spans, and each row carries a :data:`FOCUS` input for :meth:`view`."""
    hypotheses: bool = False
    """Whether a text is read with one hypothesis per label (zero-shot): each row is the pair
    ``(text, hypothesis)`` of one label, explained through :meth:`view`."""

    def labels_of(self, config_labels: list[str]) -> list[str]:
        """The labels explanations speak, from the config's (here: the same)."""
        return list(config_labels)

    def hideable(self, encoded: Encoded) -> torch.Tensor:
        """``(B, n)`` the tokens metrics may hide: every content token (a zero-shot row's
        hypothesis is not the user's text, so it is kept)."""
        return encoded.content

    def view(self, logits: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        """The ``(B, C)`` logits the generic code sees for a row with a :data:`FOCUS` input,
        from what the model returns (a token classifier's ``(B, n, tags)``): column ``c`` is
        the scalar explained for label ``c``. A task without a view never gets a focus."""
        return logits

    @contextlib.contextmanager
    def viewing(self, model: Any) -> Iterator[None]:
        """While inside, a call of ``model`` given a :data:`FOCUS` keyword returns
        :meth:`view` of its logits (the focus is taken out before the model runs); calls
        without one are the model's own. Scoped: the hooks are removed on exit."""
        if type(self).view is Task.view:
            yield
            return
        held: list[torch.Tensor] = []

        def before(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if FOCUS not in kwargs:
                return None
            kwargs = dict(kwargs)
            held.append(kwargs.pop(FOCUS))
            return args, kwargs

        def after(module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
            if held:
                output.logits = self.view(output.logits, held.pop())
            return output

        handles = [
            model.register_forward_pre_hook(before, with_kwargs=True, prepend=True),
            model.register_forward_hook(after, with_kwargs=True, prepend=True),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` logits -> what the user sees per label (here: class probabilities)."""
        return torch.softmax(logits.float(), dim=-1)

    def default_targets(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the label each row is explained for when none is named: the prediction."""
        return logits.detach().argmax(-1)

    def objective(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the scalar the backward pass differentiates: the target's logit (the
        softmax is monotonic in it; its gradient is the usual saliency target)."""
        return logits.gather(1, targets.to(logits.device).long().unsqueeze(1)).squeeze(1)

    def predicted(self, outputs: torch.Tensor) -> list[int]:
        """Indices of the labels one row's ``outputs`` predict (here: the arg-max)."""
        return [int(outputs.argmax())]

    def merge_windows(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(W, C)`` outputs of a long text's windows -> the text's ``(C,)``: their mean."""
        return outputs.mean(0)

    def probabilities(self, outputs: torch.Tensor, labels: list[str]) -> dict[str, float]:
        """What an explanation shows per label (here: each class's probability)."""
        return dict(zip(labels, outputs.tolist()))

    def score(self, outputs: torch.Tensor) -> float | None:
        """The number the model predicts, for a task that predicts one (else ``None``)."""
        return None

    def prediction(self, outputs: torch.Tensor, labels: list[str]) -> str:
        """The prediction as an explanation states it (here: the class's name)."""
        return ", ".join(labels[i] for i in self.predicted(outputs))


@dataclass(frozen=True)
class MultiLabel(Task):
    """Independent sigmoids: each label is on or off on its own."""

    name: str = "multi_label"
    description: str = "multi-label classifier (independent sigmoids)"
    several: bool = True
    explained: str = "the model's top label, its sigmoid"
    threshold: float = 0.5

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def predicted(self, outputs: torch.Tensor) -> list[int]:
        """Every label at or above the threshold; the top one when none reaches it."""
        on = [int(i) for i in torch.nonzero(outputs >= self.threshold).flatten()]
        return on or [int(outputs.argmax())]


@dataclass(frozen=True)
class Regression(Task):
    """One output, a score in its own units (reward models, similarity scorers)."""

    name: str = "regression"
    description: str = "regression head (one output: a score)"
    probabilistic: bool = False
    explained: str = "the model's score"

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float()

    def default_targets(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(logits), dtype=torch.long, device=logits.device)

    def predicted(self, outputs: torch.Tensor) -> list[int]:
        return [0]

    def probabilities(self, outputs: torch.Tensor, labels: list[str]) -> dict[str, float]:
        return {}  # a score is no probability: it is the explanation's ``score``

    def score(self, outputs: torch.Tensor) -> float | None:
        return float(outputs[0])

    def prediction(self, outputs: torch.Tensor, labels: list[str]) -> str:
        return f"{float(outputs[0]):.4g}"


@dataclass(frozen=True)
class TokenClassification(Task):
    """A tag per token (NER, POS, PII): what is explained is one entity, a span of tokens and
    its type. The explained scalar is the mean, over the span's tokens, of the log of the
    token's probability of the type (``B-X`` and ``I-X`` summed); its ``exp`` is the entity's
    probability. Built per model: ``tags`` are the config's labels."""

    name: str = "token_classification"
    description: str = "token classifier (a tag per token: entities)"
    several: bool = True
    focused: bool = True
    explained: str = "the entity's type: mean log-probability of the type over the span's tokens"
    tags: tuple[str, ...] = ()

    def labels_of(self, config_labels: list[str]) -> list[str]:
        return entity_types(config_labels)

    def view(self, logits: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        return span_log_probs(logits, focus, type_matrix(self.tags))

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Per type, the geometric mean over the span of each token's probability of it."""
        return torch.exp(logits.float())


@dataclass(frozen=True)
class ZeroShot(Task):
    """A natural-language-inference model as a zero-shot classifier: the text is paired with
    ``template.format(label)`` for each candidate label, and the score of a label is what
    ``pipeline("zero-shot-classification")`` reports: with ``multi_label=False`` the softmax
    of the entailment logits across labels (explained: the label's entailment logit, the
    logit of that softmax, as a single-label classifier's target logit is explained); with
    ``multi_label=True`` each label's entailment against contradiction (explained: the logit
    of that two-way softmax, ``entailment - contradiction``). Built per call of :func:`load`."""

    name: str = "zero_shot"
    description: str = "zero-shot classifier (an NLI model scoring one hypothesis per label)"
    hypotheses: bool = True
    explained: str = "the label's zero-shot score (its hypothesis' entailment)"
    candidates: tuple[str, ...] = ()
    template: str = "This example is {}."
    multi_label: bool = False
    entailment: int = 0
    contradiction: int = 2
    hidden: tuple[int, ...] = field(default=(0,))
    """Which segment of each row metrics may hide: the text's, never the hypothesis'."""

    def labels_of(self, config_labels: list[str]) -> list[str]:
        return list(self.candidates)

    def hideable(self, encoded: Encoded) -> torch.Tensor:
        if encoded.segments is None:
            return encoded.content
        first = torch.tensor([[s == 0 for s in row] for row in encoded.segments])
        return encoded.content & first

    def hypothesis(self, label: str) -> str:
        return self.template.format(label)

    def view(self, logits: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
        """A row is one label's pair: every column holds that label's explained logit (the row
        does not know which label it is; its target picks its own column)."""
        logits = logits.float()
        own = logits[:, self.entailment]
        if self.multi_label:
            own = own - logits[:, self.contradiction]
        else:  # the other labels' log-sum-exp on the whole text, carried by the focus
            own = own - focus[:, 0].to(own.device).float()
        return own.unsqueeze(1).expand(-1, len(self.candidates))

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """A row's score for its label (every column the same): the pipeline's score. With
        ``multi_label=False`` the other labels' entailment logits are held at their values on
        the whole text (the row's offset), so hiding words of the text moves this label's
        logit only: on the whole text it is exactly the pipeline's score."""
        return torch.sigmoid(logits.float())

    def offset(self, pair_logits: torch.Tensor, label: int) -> float:
        """The focus value of label ``label``'s row: with ``multi_label=False``, the log-sum-exp
        of the other labels' entailment logits (``(labels, 3)`` logits of one text); else 0."""
        if self.multi_label or len(pair_logits) < 2:
            return 0.0 if self.multi_label else -1e4
        others = torch.cat([pair_logits[:label], pair_logits[label + 1 :]])[:, self.entailment]
        return float(torch.logsumexp(others.float(), dim=0))

    def scores(self, pair_logits: torch.Tensor) -> torch.Tensor:
        """The pipeline's scores of one text, ``(labels,)`` from its pairs' ``(labels, 3)``
        NLI logits, in the candidates' order."""
        pair_logits = pair_logits.float()
        if self.multi_label:
            two = pair_logits[:, [self.contradiction, self.entailment]]
            return torch.softmax(two, dim=-1)[:, 1]
        return torch.softmax(pair_logits[:, self.entailment], dim=0)


def zero_shot(
    config_labels: Sequence[str], labels: Sequence[str], template: str, multi_label: bool
) -> ZeroShot:
    """The zero-shot task of an NLI model with these labels (``config_labels``: its own, which
    must name entailment and contradiction)."""
    lowered = [str(label).lower() for label in config_labels]
    if "entailment" not in lowered or "contradiction" not in lowered:
        raise ModelLoadError(
            "zero-shot classification needs a natural-language-inference model whose labels "
            f"include entailment and contradiction; this one's are {', '.join(config_labels)}"
        )
    candidates = tuple(str(label) for label in labels)
    if not candidates or any(not label.strip() for label in candidates):
        raise ModelLoadError("zero-shot classification needs its candidate labels: labels=[...]")
    if len(set(candidates)) != len(candidates):
        raise ModelLoadError("the zero-shot labels repeat a label: give each once")
    if template.count("{}") != 1:
        raise ModelLoadError(
            f"the zero-shot template must hold one '{{}}' where the label goes, not {template!r}"
        )
    return ZeroShot(
        candidates=candidates,
        template=template,
        multi_label=bool(multi_label) or len(candidates) == 1,  # as the pipeline decides
        entailment=lowered.index("entailment"),
        contradiction=lowered.index("contradiction"),
    )


SINGLE_LABEL = Task()
TASKS: dict[str, Task] = {
    task.name: task
    for task in (SINGLE_LABEL, MultiLabel(), Regression(), TokenClassification(), ZeroShot())
}
EXPLAINED = frozenset(TASKS)
"""The tasks every face (explanations, metrics, reports, dataset runs, the web app) speaks."""


def task_of(config: Any, override: str | None = None) -> Task:
    """The task of a model, from its config: ``problem_type`` where it says, else one output
    is a regression and more is single-label classification. ``override`` names it instead."""
    if override is not None:
        override = override.replace("-", "_")
        if override == "zero_shot":
            raise ModelLoadError(
                "zero-shot classification needs its candidate labels: load(model, "
                "task='zero-shot', labels=[...])"
            )
        if override not in TASKS:
            raise ModelLoadError(f"unknown task {override!r}; tasks are {', '.join(TASKS)}")
        if override == "token_classification":
            return TokenClassification(tags=tuple(_config_labels(config)))
        return TASKS[override]
    problem = getattr(config, "problem_type", None)
    architectures = getattr(config, "architectures", None) or []
    if any(str(a).endswith("ForTokenClassification") for a in architectures):
        return TokenClassification(tags=tuple(_config_labels(config)))
    if problem == "multi_label_classification":
        return TASKS["multi_label"]
    if problem == "regression" or (problem is None and int(getattr(config, "num_labels", 2)) == 1):
        return TASKS["regression"]
    return SINGLE_LABEL


def _config_labels(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, f"LABEL_{i}")) for i in range(int(config.num_labels))]


def check_explained(task: Task, name: str) -> None:
    """Refuse a task the faces do not speak yet, rather than explain it as another: a softmax
    over a regression head's one output reads "probability 1.0" and zeroes every metric, and
    a multi-label head's labels are not exclusive classes."""
    if task.name not in EXPLAINED:
        raise ModelLoadError(
            f"{name!r} is a {task.description}: layersal explains single-label classifiers "
            "(one softmax over the classes) and regression heads so far; explaining it as one "
            "of those would give wrong probabilities and metrics"
        )


__all__ = [
    "FOCUS",
    "SINGLE_LABEL",
    "TASKS",
    "MultiLabel",
    "Regression",
    "Task",
    "TokenClassification",
    "ZeroShot",
    "check_explained",
    "task_of",
    "zero_shot",
]
