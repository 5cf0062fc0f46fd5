"""Project contract: the README's set-up commands, CI, and the bundled models' quality."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

import layersal
from layersal.checkpoints import BUNDLED_DIR

from .conftest import require_data

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README needs a Quick start bash block"
    return [
        line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")
    ]


def test_readme_example_output_is_what_the_cli_prints():
    """The README's first console example shows the real output of its command."""
    from typer.testing import CliRunner

    from layersal.cli import app

    block = re.search(
        r'\$ layersal explain "(a gripping[^"]*)"\n(.*?)\n\n',
        (ROOT / "README.md").read_text(),
        re.S,
    )
    assert block, "README needs the quick-start example output"
    shown = [line.split("<-")[0].rstrip() for line in block.group(2).splitlines()]
    result = CliRunner().invoke(app, ["explain", block.group(1)], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert [line.rstrip() for line in result.stdout.splitlines() if line.strip()] == shown


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "layersal explain" in commands[0] and "pytest" in commands[1]
    assert all("-c constraints.txt" in c for c in commands)
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^torch==\d", (ROOT / "constraints.txt").read_text(), re.M)


@pytest.mark.parametrize("name", ["sst2-tiny", "agnews-tiny"])
def test_bundles_are_small_fp16_with_model_cards(name):
    from safetensors import safe_open

    folder = BUNDLED_DIR / name
    card = json.loads((folder / "model_card.json").read_text())
    for key in ("base", "training", "evaluation", "date"):
        assert key in card
    assert len(card["base"]["weights_sha256"]) == 64
    assert (folder / "model.safetensors").stat().st_size < 20_000_000
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
        assert any(k.startswith("cls.predictions.transform") for k in keys)
        assert {str(weights.get_slice(k).get_dtype()) for k in keys} == {"F16"}


def _sst2(path: Path) -> tuple[list[str], list[int]]:
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def test_sst2_tiny_accuracy_on_glue_dev():
    texts, labels = _sst2(require_data("sst2", "test.tsv"))
    lm = layersal.load("sst2-tiny")
    from layersal.encoding import encode, model_input_names
    from layersal.passes import forward

    correct = 0
    for start in range(0, len(texts), 128):
        batch = encode(
            lm.tokenizer, texts[start : start + 128], lm.max_length, model_input_names(lm.model)
        )
        predicted = forward(lm.model, batch).argmax(-1).tolist()
        correct += sum(p == y for p, y in zip(predicted, labels[start : start + 128]))
    accuracy = correct / len(texts)
    assert len(texts) == 872
    assert accuracy >= 0.80
    card = json.loads((BUNDLED_DIR / "sst2-tiny" / "model_card.json").read_text())
    assert accuracy == pytest.approx(card["evaluation"]["accuracy"], abs=0.005)


MINILM = {"sst2-minilm": 0.86, "agnews-minilm": 0.88}


@pytest.mark.parametrize("name", sorted(MINILM))
def test_minilm_models_are_in_the_checkout_with_their_own_mlm_head(name):
    from safetensors import safe_open

    from layersal.checkpoints import CHECKOUT_MODELS_DIR

    folder = ROOT / "models" / name
    assert folder.is_dir() and CHECKOUT_MODELS_DIR == ROOT / "models"
    assert name in layersal.bundled_models()
    card = json.loads((folder / "model_card.json").read_text())
    mlm = card["mlm_head"]["masked_lm_training"]
    assert (
        mlm["accuracy_after"] > mlm["accuracy_before"] + 0.1
    )  # masked-LM training taught the head
    assert card["evaluation"]["accuracy"] >= MINILM[name]
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
        assert {str(weights.get_slice(k).get_dtype()) for k in keys} == {"F16"}
        assert (
            sum(
                k.startswith("bert.encoder.layer.") and k.endswith("attention.self.query.weight")
                for k in keys
            )
            == 6
        )
    lm = layersal.load(name)
    assert lm.decoder == "mlm_head" and lm.num_layers == 6


@pytest.mark.slow
def test_sst2_minilm_accuracy_on_glue_dev_matches_its_card():
    texts, labels = _sst2(require_data("sst2", "test.tsv"))
    lm = layersal.load("sst2-minilm")
    from layersal.encoding import encode, model_input_names
    from layersal.passes import forward

    correct = 0
    for start in range(0, len(texts), 128):
        batch = encode(lm.tokenizer, texts[start : start + 128], 64, model_input_names(lm.model))
        predicted = forward(lm.model, batch).argmax(-1).tolist()
        correct += sum(p == y for p, y in zip(predicted, labels[start : start + 128]))
    card = json.loads((ROOT / "models" / "sst2-minilm" / "model_card.json").read_text())
    assert correct / len(texts) == pytest.approx(card["evaluation"]["accuracy"], abs=0.005)
