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

from dataclasses import dataclass
from typing import Any

import torch

from .errors import ModelLoadError


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


SINGLE_LABEL = Task()
TASKS: dict[str, Task] = {task.name: task for task in (SINGLE_LABEL, MultiLabel(), Regression())}
EXPLAINED = frozenset(TASKS)
"""The tasks every face (explanations, metrics, reports, dataset runs, the web app) speaks."""


def task_of(config: Any, override: str | None = None) -> Task:
    """The task of a model, from its config: ``problem_type`` where it says, else one output
    is a regression and more is single-label classification. ``override`` names it instead."""
    if override is not None:
        if override not in TASKS:
            raise ModelLoadError(f"unknown task {override!r}; tasks are {', '.join(TASKS)}")
        return TASKS[override]
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification":
        return TASKS["multi_label"]
    if problem == "regression" or (problem is None and int(getattr(config, "num_labels", 2)) == 1):
        return TASKS["regression"]
    return SINGLE_LABEL


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
    "SINGLE_LABEL",
    "TASKS",
    "MultiLabel",
    "Regression",
    "Task",
    "check_explained",
    "task_of",
]
