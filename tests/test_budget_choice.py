"""``explain(..., budget=N)``: the most faithful method measured within N passes per text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import layersal
from layersal.budget_choice import card_frontier, choose, choose_for
from layersal.errors import LayersalError
from layersal.saliency.auto_store import model_digest

POINTS = [
    {"method": "dls", "options": {}, "passes_per_text": 2.0,
     "aopc_comprehensiveness": 0.40, "aopc_sufficiency": 0.02},
    {"method": "integrated_gradients", "options": {"n_steps": 50}, "passes_per_text": 101.0,
     "aopc_comprehensiveness": 0.41, "aopc_sufficiency": 0.01},
    {"method": "shapley_control_variate", "options": {"budget": 14}, "passes_per_text": 16.0,
     "aopc_comprehensiveness": 0.45, "aopc_sufficiency": 0.00},
    {"method": "shapley_control_variate", "options": {"budget": 30}, "passes_per_text": 32.0,
     "aopc_comprehensiveness": 0.47, "aopc_sufficiency": 0.00},
    {"method": "lime", "options": {}, "passes_per_text": 26.0,
     "aopc_comprehensiveness": 0.45, "aopc_sufficiency": 0.00},
]  # fmt: skip


def test_the_best_measured_point_within_the_budget_is_chosen():
    assert choose(POINTS, 2).method == "dls"
    assert choose(POINTS, 15).method == "dls"
    sixteen = choose(POINTS, 16)
    assert (sixteen.method, sixteen.options) == ("shapley_control_variate", {"budget": 14})
    # lime (26 passes) ties the 16-pass point on the criterion: fewer passes win
    assert choose(POINTS, 31).options == {"budget": 14}
    assert choose(POINTS, 32).options == {"budget": 30}
    assert choose(POINTS, 1000).options == {"budget": 30}  # IG is measured less faithful
    assert "within 32 passes" in choose(POINTS, 32).reason
    nothing = choose(POINTS[1:2], 50)
    assert nothing.method == "dls" and "no measured method fits" in nothing.reason


def test_without_a_frontier_the_default_is_kept_and_says_why():
    for budget in (3, 32, 10_000):
        chosen = choose(None, budget)
        assert (chosen.method, chosen.source) == ("dls", "default")
        assert "no measured frontier" in chosen.reason


@pytest.mark.parametrize("budget", [0, -3, 2.5, True, "8"])
def test_a_budget_is_a_whole_number_of_passes(budget):
    with pytest.raises(LayersalError, match="budget must be a whole number"):
        choose(POINTS, budget)


def test_the_card_frontier_counts_only_for_the_weights_it_was_measured_on(tiny_dirs, tmp_path):
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    folder = tmp_path / "model"
    shutil.copytree(classifier_dir, folder)
    lm = layersal.load(folder, lm_head=mlm_dir)
    assert card_frontier(lm) is None and choose_for(lm, 32).source == "default"
    card_path = folder / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card["frontier"] = {"weights_sha256": "0" * 64, "points": POINTS}
    card_path.write_text(json.dumps(card))
    assert card_frontier(layersal.load(folder, lm_head=mlm_dir)) is None
    card["frontier"]["weights_sha256"] = model_digest(lm)
    stale = {"method": "lime", "options": {"no_such_option": 1}, "passes_per_text": 3.0,
             "aopc_comprehensiveness": 0.9, "aopc_sufficiency": 0.0}  # fmt: skip
    card["frontier"]["points"] = [*POINTS, stale]  # a point this version cannot run: skipped
    card_path.write_text(json.dumps(card))
    lm = layersal.load(folder, lm_head=mlm_dir)
    assert card_frontier(lm) == POINTS
    chosen = choose_for(lm, 20)
    assert (chosen.method, chosen.source) == ("shapley_control_variate", "model card")


def test_explain_runs_and_records_what_the_budget_chose(sst2_tiny):
    text = "a gripping, beautifully acted film"
    default = layersal.explain(text, sst2_tiny)
    assert "budget" not in default.options
    budgeted = layersal.explain(text, sst2_tiny, budget=10)
    record = budgeted.options["budget"]
    assert record["passes"] == 10 and budgeted.method == record["method"]
    expected = choose_for(sst2_tiny, 10)
    assert (record["method"], record["options"]) == (expected.method, expected.options)
    one = layersal.explain(text, sst2_tiny, budget=1)
    assert one.method == "dls" and [w.score for w in one.words] == [w.score for w in default.words]


def test_a_method_and_a_budget_together_are_refused(sst2_tiny):
    with pytest.raises(LayersalError, match="not both"):
        layersal.explain("fine", sst2_tiny, method="gradient", budget=8)
    with pytest.raises(LayersalError, match="not both"):
        layersal.explain("fine", sst2_tiny, budget=8, options={"layer": 1})
    with pytest.raises(LayersalError, match="budget must be a whole number"):
        layersal.explain("fine", sst2_tiny, budget=0)


def test_the_command_line_takes_a_budget_instead_of_a_method():
    from typer.testing import CliRunner

    from layersal.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["explain", "--budget", "12", "--json", "a gripping film"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.splitlines()[0])
    assert row["options"]["budget"]["passes"] == 12
    assert row["method"] == row["options"]["budget"]["method"]
    both = runner.invoke(app, ["explain", "--budget", "12", "--method", "gradient", "fine"])
    assert both.exit_code == 2 and "not both" in both.output
    zero = runner.invoke(app, ["explain", "--budget", "0", "fine"])
    assert zero.exit_code == 2 and "budget must be a whole number" in zero.output


def test_the_web_api_takes_a_budget_and_records_its_choice(sst2_tiny):
    from fastapi.testclient import TestClient

    from layersal.serve.app import create_app

    client = TestClient(create_app(sst2_tiny, max_chars=200, max_batch=3, timeout_s=30))
    response = client.post("/api/explain", json={"text": "a gripping film", "budget": 12})
    assert response.status_code == 200, response.text
    body = response.json()
    explained = body["explanations"][0] if "explanations" in body else body
    expected = choose_for(sst2_tiny, 12)
    assert explained["method"] == expected.method
    assert explained["options"]["budget"]["passes"] == 12
    refused = client.post("/api/explain", json={"text": "fine", "budget": 12, "method": "gradient"})
    assert refused.status_code in (400, 422) and "not both" in refused.text


def _run(label: str, method: str, options: dict, comp: float) -> dict:
    return {"label": label, "method": method, "options": options,
            "forward_passes_per_text": 15.0, "backward_passes_per_text": 1.0,
            "summary": {"aopc_comprehensiveness": [comp, 0, 0],
                        "aopc_sufficiency": [0.01, 0, 0]}}  # fmt: skip


def test_card_frontier_script_writes_and_adds_points(tiny_dirs, tmp_path, monkeypatch):
    """scripts/card_frontier.py: a run's points onto the card, for these weights; --add keeps
    the card's points and replaces those of the same label; another model's card refuses."""
    import runpy
    import sys

    classifier_dir, _ = tiny_dirs["bert"]
    folder = tmp_path / "model"
    shutil.copytree(classifier_dir, folder)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"data": "d", "n_texts": 9, "methods": [
        _run("dls", "dls", {}, 0.40), _run("budget=14", "shapley_control_variate",
                                           {"budget": 14}, 0.30)]}))  # fmt: skip
    second.write_text(json.dumps({"data": "e", "n_texts": 9, "methods": [
        _run("budget=14", "shapley_control_variate", {"budget": 14}, 0.50)]}))  # fmt: skip
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "card_frontier.py")

    def run(*args: str) -> dict:
        monkeypatch.setattr(sys, "argv", [script, "--model", str(folder), *args])
        runpy.run_path(script, run_name="__main__")
        return json.loads((folder / "model_card.json").read_text())["frontier"]

    written = run(str(first))
    assert [p["aopc_comprehensiveness"] for p in written["points"]] == [0.40, 0.30]
    replaced = run(str(second))  # without --add: only the new run's points
    assert [p["label"] for p in replaced["points"]] == ["budget=14"]
    run(str(first))
    added = run("--add", str(second))
    assert {p["label"]: p["aopc_comprehensiveness"] for p in added["points"]} == {
        "dls": 0.40, "budget=14": 0.50}  # fmt: skip
    assert added["measured_on"] == ["d, 9 texts", "e, 9 texts"]
    card = json.loads((folder / "model_card.json").read_text())
    card["frontier"]["weights_sha256"] = "0" * 64
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(SystemExit, match="other weights"):
        run("--add", str(second))
