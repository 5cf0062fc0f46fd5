"""Shared fixtures: tiny randomly initialised checkpoints of every supported family.

Built in the test session (no download); the tokenizer is the bundled bert-base-uncased one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import layersal
from layersal.models import BUNDLED_DIR

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOKENIZER_DIR = BUNDLED_DIR / "agnews-tiny"
FAMILIES = ["bert", "distilbert", "roberta", "electra", "deberta-v2"]


def tiny_config(family: str, num_labels: int = 3):
    """A 2-layer, 32-wide config of ``family`` over the bert-base-uncased vocabulary."""
    from transformers import (
        BertConfig,
        DebertaV2Config,
        DistilBertConfig,
        ElectraConfig,
        RobertaConfig,
    )

    common = {"vocab_size": 30522, "num_labels": num_labels, "max_position_embeddings": 128}
    blocks = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    if family == "bert":
        return BertConfig(**common, **blocks)
    if family == "distilbert":
        return DistilBertConfig(**common, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    if family == "roberta":
        return RobertaConfig(**common, **blocks, pad_token_id=0)
    if family == "electra":
        return ElectraConfig(**common, **blocks, embedding_size=32)
    if family == "deberta-v2":
        return DebertaV2Config(
            **common, **blocks, relative_attention=True, pos_att_type=["p2c", "c2p"], pad_token_id=0
        )
    raise ValueError(family)


def build_tiny(root: Path, family: str, seed: int = 0) -> tuple[Path, Path]:
    """Save a random masked-LM checkpoint and a classifier sharing its encoder weights.

    Returns (classifier_dir, mlm_dir); the classifier has no LM head of its own.
    """
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = tiny_config(family)
    mlm = AutoModelForMaskedLM.from_config(config)
    classifier = AutoModelForSequenceClassification.from_config(config)
    classifier.base_model.load_state_dict(mlm.base_model.state_dict(), strict=False)
    classifier.config.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    classifier.config.label2id = {v: k for k, v in classifier.config.id2label.items()}
    mlm_dir, classifier_dir = root / f"{family}-mlm", root / f"{family}-classifier"
    mlm.save_pretrained(mlm_dir)
    classifier.save_pretrained(classifier_dir)
    for folder in (mlm_dir, classifier_dir):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(TOKENIZER_DIR / name, folder / name)
    return classifier_dir, mlm_dir


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(root, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def bert_tiny(tiny_dirs) -> layersal.LoadedModel:
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    return layersal.load(classifier_dir, lm_head=mlm_dir)


@pytest.fixture(scope="session")
def sst2_tiny() -> layersal.LoadedModel:
    return layersal.load("sst2-tiny")


def require_data(*parts: str) -> Path:
    """Path to a file of ../shared/data, or skip the test with the reason."""
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared data folder is absent on this machine")
    return path


def pytest_terminal_summary(terminalreporter) -> None:
    """One line on whether the Ray engine's tests ran: CI installs Ray, so they must not skip.

    Counts the tests of ``tests/test_ray_*.py`` by outcome, with the seconds of all their
    phases (set-up, call, tear-down)."""
    ours = [
        (key, report)
        for key, reports in terminalreporter.stats.items()
        for report in reports
        if "tests/test_ray_" in getattr(report, "nodeid", "")
    ]
    if not ours:
        return
    counts = {o: sum(k == o for k, _ in ours) for o in ("passed", "failed", "skipped", "error")}
    seconds = sum(getattr(report, "duration", 0.0) for _, report in ours)
    listed = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
    terminalreporter.write_line(f"Ray engine tests: {listed} in {seconds:.0f} s")
