"""The Task seam's maths, by hand: what each task shows, differentiates, predicts and merges."""

from __future__ import annotations

import pytest
import torch

from layersal.errors import ModelLoadError
from layersal.tasks import SINGLE_LABEL, TASKS, check_explained, task_of

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [-3.0, 0.5, 0.4]])


class Config:
    def __init__(self, num_labels: int = 3, problem_type: str | None = None) -> None:
        self.num_labels, self.problem_type = num_labels, problem_type


def test_single_label_is_one_softmax_and_its_arg_max():
    task = TASKS["single_label"]
    shown = task.outputs(LOGITS)
    assert torch.allclose(shown.sum(-1), torch.ones(2))
    assert task.default_targets(LOGITS).tolist() == [0, 1]
    assert task.objective(LOGITS, torch.tensor([2, 0])).tolist() == [-1.0, -3.0]
    assert [task.predicted(row) for row in shown] == [[0], [1]]
    assert torch.allclose(task.merge_windows(shown), shown.mean(0))


def test_multi_label_is_independent_sigmoids_with_every_label_on():
    task = TASKS["multi_label"]
    shown = task.outputs(LOGITS)
    assert torch.allclose(shown, 1 / (1 + torch.exp(-LOGITS)))
    assert task.predicted(shown[0]) == [0, 1]  # sigmoid(2) and sigmoid(0) = 0.5 are on
    assert task.predicted(torch.tensor([0.1, 0.3, 0.2])) == [1]  # none on: the top one
    assert task.objective(LOGITS, torch.tensor([1, 2])).tolist() == pytest.approx([0.0, 0.4])


def test_regression_shows_the_score_and_explains_its_one_output():
    task = TASKS["regression"]
    scores = torch.tensor([[1.7], [-0.2]])
    assert torch.equal(task.outputs(scores), scores)
    assert task.default_targets(scores).tolist() == [0, 0]
    assert task.objective(scores, task.default_targets(scores)).tolist() == pytest.approx(
        [1.7, -0.2]
    )
    assert task.merge_windows(scores).tolist() == pytest.approx([0.75])


@pytest.mark.parametrize(
    "config, name",
    [
        (Config(), "single_label"),
        (Config(2, "single_label_classification"), "single_label"),
        (Config(1), "regression"),
        (Config(3, "regression"), "regression"),
        (Config(6, "multi_label_classification"), "multi_label"),
    ],
)
def test_the_task_is_read_from_the_config(config, name):
    assert task_of(config).name == name
    assert task_of(config, override="single_label") is SINGLE_LABEL
    with pytest.raises(ModelLoadError, match="unknown task 'ner'"):
        task_of(config, override="ner")


def test_every_defined_task_is_explained_and_a_task_not_yet_spoken_is_refused(monkeypatch):
    from layersal import tasks

    for task in TASKS.values():
        check_explained(task, "m")
    monkeypatch.setattr(tasks, "EXPLAINED", frozenset({"single_label"}))
    with pytest.raises(ModelLoadError, match="is a multi-label classifier"):
        check_explained(TASKS["multi_label"], "m")
