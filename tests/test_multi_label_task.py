"""A multi-label head (independent sigmoids) explained as what it is: each label it predicts,
one explanation each, its probability the label's sigmoid, on every face."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import layersal
from layersal.encoding import encode, model_input_names
from layersal.evaluate import score_batch

from .conftest import tiny_head

TEXTS = ["a gripping, beautifully acted film", "dull and far too long"]
LABELS = ["sports", "film", "money", "praise"]
ON = {"film", "praise"}  # the head's biases put these two on, whatever the text


@pytest.fixture(scope="module")
def multi_dir(tiny_dirs, tmp_path_factory):
    folder, mlm_dir = tiny_head(
        tiny_dirs,
        tmp_path_factory.mktemp("multi") / "multi",
        LABELS,
        5,
        problem_type="multi_label_classification",
    )
    model = layersal.load(folder, lm_head=mlm_dir).model
    with torch.no_grad():  # the head's biases put two labels on, whatever the text
        model.classifier.bias.copy_(torch.tensor([-6.0, 6.0, -6.0, 6.0]))
    model.save_pretrained(folder)
    return folder, mlm_dir


@pytest.fixture(scope="module")
def multi(multi_dir):
    folder, mlm_dir = multi_dir
    return layersal.load(folder, lm_head=mlm_dir)


def _sigmoids(lm, texts):
    encoded = encode(lm.tokenizer, texts, lm.max_length, model_input_names(lm.model))
    with torch.no_grad():
        return torch.sigmoid(lm.model(**encoded.inputs).logits), encoded


def test_each_predicted_label_gets_its_own_explanation(multi):
    assert multi.task.name == "multi_label"
    one = layersal.explain(TEXTS[0], multi, layer="input")
    assert isinstance(one, list) and [e.target for e in one] == ["film", "praise"]
    sigmoids, _ = _sigmoids(multi, TEXTS[:1])
    for e in one:
        assert e.task == "multi_label" and e.prediction == "film, praise"
        assert list(e.probabilities.values()) == pytest.approx(sigmoids[0].tolist(), abs=1e-5)
    named = layersal.explain(TEXTS[0], multi, layer="input", target="praise")
    assert named.target == "praise" and named.scores == pytest.approx(one[1].scores, abs=1e-6)
    many = layersal.explain(TEXTS, multi, layer="input")
    assert [(e.text, e.target) for e in many] == [
        (t, label) for t in TEXTS for label in ("film", "praise")
    ]


def test_a_label_is_explained_by_its_own_logit_and_scored_by_its_sigmoid(multi):
    """The gradient is of the label's logit (input x gradient by hand); comprehensiveness at
    100% is the label's sigmoid minus its sigmoid with every word hidden."""
    e = layersal.explain(TEXTS[0], multi, method="input_x_gradient", target="money")
    sigmoids, encoded = _sigmoids(multi, TEXTS[:1])
    embeddings = multi.model.get_input_embeddings()(encoded.input_ids).detach().requires_grad_()
    first = []

    def swap(module, args, output):
        first.append(1)
        return embeddings if len(first) == 1 else output

    handle = multi.model.get_input_embeddings().register_forward_hook(swap)
    try:
        logit = multi.model(**encoded.inputs).logits[0, LABELS.index("money")]
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logit, embeddings)
    by_hand = (grad * embeddings).sum(-1)[0, encoded.content[0]].tolist()
    assert e.scores == pytest.approx(by_hand, abs=1e-5)
    scores = torch.zeros(encoded.input_ids.shape)
    scores[0, encoded.content[0]] = torch.tensor(e.scores)
    (result,) = score_batch(multi, encoded, scores, torch.tensor([2]), budgets=(1.0,), loo=False)
    hidden = encoded.input_ids.clone()
    hidden[0, encoded.content[0]] = multi.tokenizer.mask_token_id
    with torch.no_grad():
        masked = multi.model(input_ids=hidden, attention_mask=encoded.attention_mask).logits
    assert result.probability == pytest.approx(sigmoids[0, 2].item(), abs=1e-5)
    expected = sigmoids[0, 2].item() - torch.sigmoid(masked[0, 2]).item()
    assert result.comprehensiveness[1.0] == pytest.approx(expected, abs=1e-5)


def test_every_face_lists_each_label(multi, multi_dir, tmp_path):
    from layersal.cli import app

    folder, mlm_dir = multi_dir
    runner = CliRunner()
    common = ["--model", str(folder), "--lm-head", str(mlm_dir), "--layer", "input"]
    shown = runner.invoke(app, ["explain", TEXTS[0], *common])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("prediction: film, praise") == 2
    assert "explaining: film" in shown.output and "explaining: praise" in shown.output
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    ran = runner.invoke(
        app, ["explain-dataset", str(source), "--out", str(out), *common, "--no-progress"]
    )
    assert ran.exit_code == 0, ran.output
    rows = pq.read_table(out).to_pylist()
    assert [(r["id"], r["target"]) for r in rows] == [
        (0, "film"),
        (0, "praise"),
        (1, "film"),
        (1, "praise"),
    ]
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from layersal.serve import create_app

    with TestClient(create_app(multi)) as client:
        assert client.get("/api/info").json()["task"] == "multi_label"
        body = client.post("/api/explain", json={"texts": TEXTS, "layer": "input"}).json()
    assert [(e["text"], e["target"]) for e in body["explanations"]] == [
        (t, label) for t in TEXTS for label in ("film", "praise")
    ]
