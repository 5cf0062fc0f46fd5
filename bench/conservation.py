"""How close to conservative each propagation rule set is, per model family and checkpoint.

    .venv/bin/python bench/conservation.py [--texts 32]

Relevance at the word embeddings, e_i . g~_i summed over every position (special tokens
included), against the explained logit y: the table shows the mean of |sum R - y| / |y| over
texts. Three kinds of model:
- `tiny, bias-free`: the test suite's 2-layer random configs of each family with large weights
  and every additive term zeroed (biases, LayerNorm betas, position and token-type
  embeddings), where `cp_id` should be exact;
- `tiny, with biases`: the same with N(0, 0.3) biases and position embeddings left in;
- the four bundled checkpoints, where biases and position embeddings take their share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import FAMILIES, TOKENIZER_DIR, tiny_config

import layersal
from layersal.datasets import read_labelled
from layersal.encoding import encode, model_input_names
from layersal.families import family_for
from layersal.passes import forward_backward
from layersal.rules import RULE_SETS

DATA = ROOT.parent / "shared" / "data"
SENTENCES = [
    "a gripping, beautifully acted film about nothing much",
    "dull and far too long, with a cast that deserved better",
    "Stocks fell sharply after the central bank raised rates again",
    "the team won its third title in a row on Sunday",
]


def tiny(family: str, biases: bool) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(family)
    config.initializer_range = 0.3
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.3) if biases else parameter.zero_()
            elif not biases and ("position_embeddings" in name or "token_type" in name):
                parameter.zero_()
    return model


def errors(model: torch.nn.Module, tokenizer, texts: list[str]) -> dict[str, float]:
    """Mean relative conservation error of each rule set over ``texts`` (one at a time)."""
    out = {}
    for rule in RULE_SETS:
        values = []
        for text in texts:
            encoded = encode(tokenizer, [text], 128, model_input_names(model))
            result = forward_backward(model, encoded, family=family_for(model.config), rule=rule)
            relevance = float((result.embedded * result.embedded_grad).sum())
            logit = float(result.logits[0, result.targets[0]])
            values.append(abs(relevance - logit) / max(abs(logit), 1e-6))
        out[rule] = float(np.mean(values))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=32, help="texts per bundled checkpoint")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    rows = []
    for biases in (False, True):
        for family in FAMILIES:
            kind = "tiny, with biases" if biases else "tiny, bias-free"
            rows.append((f"{family} ({kind})", errors(tiny(family, biases), tokenizer, SENTENCES)))
    for name, data in (
        ("sst2-tiny", "sst2/test.tsv"),
        ("sst2-minilm", "sst2/test.tsv"),
        ("agnews-tiny", "agnews/test.tsv"),
        ("agnews-minilm", "agnews/test.tsv"),
    ):
        lm = layersal.load(name)
        texts = read_labelled(DATA / data).sample(args.texts, 0).texts
        rows.append(
            (f"{name} (checkpoint, {len(texts)} texts)", errors(lm.model, lm.tokenizer, texts))
        )
    print("| model | " + " | ".join(RULE_SETS) + " |")
    print("|---|" + "---|" * len(RULE_SETS))
    for label, values in rows:
        print(f"| {label} | " + " | ".join(f"{values[r]:.2g}" for r in RULE_SETS) + " |")


if __name__ == "__main__":
    main()
