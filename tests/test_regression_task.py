"""A regression head (one output: reward models, similarity scorers) explained as what it is:
the score and the words that raised or lowered it, on every face, with erasure metrics that
measure the change of the score."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import layersal
from layersal.encoding import encode, model_input_names
from layersal.evaluate import score_batch
from layersal.report.html import render_card

from .conftest import tiny_head

TEXTS = ["a gripping, beautifully acted film", "dull and far too long", "fine"]


@pytest.fixture(scope="module")
def regression_dir(tiny_dirs, tmp_path_factory):
    return tiny_head(tiny_dirs, tmp_path_factory.mktemp("regression") / "reward", ["score"], 3)


@pytest.fixture(scope="module")
def reward(regression_dir):
    folder, mlm_dir = regression_dir
    return layersal.load(folder, lm_head=mlm_dir)


def _own_scores(lm, texts):
    encoded = encode(lm.tokenizer, texts, lm.max_length, model_input_names(lm.model))
    with torch.no_grad():
        return lm.model(**encoded.inputs).logits[:, 0].tolist(), encoded


def test_the_explanation_is_of_the_score(reward):
    assert reward.task.name == "regression"
    explained = layersal.explain(TEXTS, reward, layer="input", rule="gradient")
    own, _ = _own_scores(reward, TEXTS)
    for e, value in zip(explained, own):
        assert e.task == "regression" and e.score == pytest.approx(value, abs=1e-5)
        assert e.probabilities == {} and e.prediction == f"{value:.4g}" and e.target == "score"
    again = layersal.Explanation.from_json(explained[0].to_json())
    assert again.score == explained[0].score and again.task == "regression"


def test_input_x_gradient_differentiates_the_score(reward):
    """Hand computation: d score / d word embedding, times the embedding, summed per token."""
    text = TEXTS[0]
    e = layersal.explain(text, reward, method="input_x_gradient")
    encoded = encode(reward.tokenizer, [text], reward.max_length, model_input_names(reward.model))
    embeddings = reward.model.get_input_embeddings()(encoded.input_ids).detach()
    embeddings.requires_grad_()
    calls = {"n": 0}

    def swap(module, args, output):
        calls["n"] += 1
        return embeddings if calls["n"] == 1 else output

    handle = reward.model.get_input_embeddings().register_forward_hook(swap)
    try:
        score = reward.model(**encoded.inputs).logits[0, 0]
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score, embeddings)
    by_hand = (grad * embeddings).sum(-1)[0, encoded.content[0]].tolist()
    assert [t.score for t in e.tokens] == pytest.approx(by_hand, abs=1e-5)


def test_erasure_metrics_measure_the_change_of_the_score(reward):
    """Comprehensiveness at 50%: the score, minus the score with the top half hidden."""
    _, encoded = _own_scores(reward, TEXTS[:1])
    n = int(encoded.content[0].sum())
    scores = torch.zeros(encoded.input_ids.shape)
    positions = encoded.content[0].nonzero().flatten()
    scores[0, positions] = torch.arange(n, 0, -1, dtype=torch.float32)  # first tokens on top
    (result,) = score_batch(reward, encoded, scores, torch.tensor([0]), budgets=(0.5,), loo=False)
    hidden = encoded.input_ids.clone()
    k = max(1, round(0.5 * n + 1e-9))
    hidden[0, positions[:k]] = reward.tokenizer.mask_token_id
    with torch.no_grad():
        original = reward.model(**encoded.inputs).logits[0, 0].item()
        masked = reward.model(input_ids=hidden, attention_mask=encoded.attention_mask)
    assert result.probability == pytest.approx(original, abs=1e-5)
    assert result.comprehensiveness[0.5] == pytest.approx(
        original - masked.logits[0, 0].item(), abs=1e-5
    )
    assert result.log_odds_20 != result.log_odds_20  # NaN: log-odds need probabilities


def test_every_face_says_score(reward, regression_dir, tmp_path):
    from layersal.cli import app

    folder, mlm_dir = regression_dir
    runner = CliRunner()
    shown = runner.invoke(
        app,
        [
            "explain",
            TEXTS[0],
            "--model",
            str(folder),
            "--lm-head",
            str(mlm_dir),
            "--layer",
            "input",
        ],
    )
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("score: ") and "prediction" not in shown.output
    from layersal.evaluate import faithfulness_of

    explained = layersal.explain(TEXTS[0], reward, layer="input")
    (scored,) = faithfulness_of(reward, [explained])
    card = render_card(explained, metrics=[scored])
    assert "score: <b>" in card and "prediction:" not in card
    assert "p(explained class)" not in card  # the deletion plot's axis is the score's range
    assert f"{max(scored.deletion_curve):.3g}</text>" in card
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    ran = runner.invoke(
        app,
        ["explain-dataset", str(source), "--out", str(out), "--model", str(folder),
         "--lm-head", str(mlm_dir), "--layer", "input", "--no-progress"],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    rows = pq.read_table(out).to_pylist()
    own, _ = _own_scores(reward, TEXTS)
    assert [r["score"] for r in rows] == pytest.approx(own, abs=1e-4)
    assert all(r["probabilities"] is None for r in rows)
    metadata = json.loads(pq.read_schema(out / "part-000000.parquet").metadata[b"layersal"])
    assert metadata["task"] == "regression"


def test_the_web_api_names_the_task_and_gives_the_score(reward):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from layersal.serve import create_app

    with TestClient(create_app(reward)) as client:
        assert client.get("/api/info").json()["task"] == "regression"
        body = client.post("/api/explain", json={"text": TEXTS[1], "layer": "input"}).json()
    (e,) = body["explanations"]
    own, _ = _own_scores(reward, TEXTS[1:2])
    assert e["score"] == pytest.approx(own[0], abs=1e-5) and e["probabilities"] == {}


def test_a_log_odds_fit_is_refused_for_a_score(reward):
    """shapley_control_variate's link='logit' reads probabilities; a score is refused, not
    squeezed into (0, 1)."""
    from layersal.errors import LayersalError

    options = {"budget": 8, "correction": False, "link": "logit"}
    with pytest.raises(LayersalError, match="needs a game of probabilities"):
        layersal.explain(TEXTS[0], reward, method="shapley_control_variate", options=options)
    options["link"] = "identity"
    assert layersal.explain(TEXTS[0], reward, method="shapley_control_variate", options=options)
