"""Single-label results stay what they were: the four bundled models' explanations under four
methods, against ``tests/fixtures/single_label_outputs.json`` (made by :func:`outputs` at
commit 41b356b, before the Explainer and the Task seam; regenerate with
``python -m tests.test_single_label_fixture`` only when a change of results is intended)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import layersal

FIXTURE = Path(__file__).parent / "fixtures" / "single_label_outputs.json"
TEXTS = {
    "sst2": [
        "a gripping, beautifully acted film",
        "the plot is thin and the jokes fall flat, but the cast is charming",
        "not bad at all",
    ],
    "agnews": [
        "Stocks fell sharply as oil prices rose to a record high",
        "The striker scored twice in the final minutes to win the cup",
        "A new chip promises faster phones and longer battery life",
    ],
}
RUNS = [("dls", {}), ("gradient", {}), ("integrated_gradients", {"n_steps": 8}), ("occlusion", {})]
MODELS = ["sst2-tiny", "agnews-tiny", "sst2-minilm", "agnews-minilm"]


def outputs(model: str) -> dict[str, list[dict]]:
    """What the fixture records of ``model``: per method, each text's prediction, target,
    probabilities, word scores, layer, rule and decoding."""
    lm = layersal.load(model)
    texts = TEXTS[model.split("-")[0]]
    found = {}
    for method, options in RUNS:
        found[f"{model}/{method}"] = [
            {
                "prediction": e.prediction,
                "target": e.target,
                "probabilities": e.probabilities,
                "words": [[w.text, w.score] for w in e.words],
                "layer": e.layer,
                "rule": e.options.get("rule"),
                "decode": e.options.get("decode"),
            }
            for e in layersal.explain(texts, lm, method=method, options=options)
        ]
    return found


@pytest.mark.parametrize("model", MODELS)
def test_single_label_results_are_unchanged(model):
    if model not in layersal.bundled_models():
        pytest.skip(f"{model} is not in this installation (it lives in a checkout's models/)")
    expected = json.loads(FIXTURE.read_text())
    for key, now in outputs(model).items():
        for before, after in zip(expected[key], now, strict=True):
            for field in ("prediction", "target", "layer", "rule", "decode"):
                assert after[field] == before[field], (key, field)
            assert [w for w, _ in after["words"]] == [w for w, _ in before["words"]]
            scores = [s for _, s in after["words"]]
            assert scores == pytest.approx([s for _, s in before["words"]], abs=1e-6), key
            probabilities = after["probabilities"]
            assert probabilities == pytest.approx(before["probabilities"], abs=1e-6), key


if __name__ == "__main__":
    found: dict[str, list[dict]] = {}
    for name in MODELS:
        found.update(outputs(name))
    FIXTURE.write_text(json.dumps(found, indent=1))
    print(f"wrote {FIXTURE}", file=sys.stderr)
