"""Evaluation glue, layer="auto", labelled data readers and the benchmark runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import layersal
from layersal.benchmark import expand_specs, layer_analysis, parse_spec, run_benchmark
from layersal.datasets import LabelledTexts, clean_agnews, label_indices, read_labelled
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.evaluate import hide_ids, predictor
from layersal.report.bench import markdown, write
from layersal.saliency.auto_configs import Measured, choose, parse_key
from layersal.saliency.auto_race import calibrate, race
from layersal.saliency.auto_store import cache_file
from layersal.saliency.dls import DLSOptions
from layersal.targets import target_index

TEXTS = [
    "a gripping, beautifully acted film",
    "dull and far too long",
    "the plot meanders but the cast shines",
    "not bad at all",
    "an utter waste of a fine premise",
    "warm , funny and wise",
]


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_predictor_gives_the_models_probabilities(bert_tiny):
    encoded = encode(
        bert_tiny.tokenizer, TEXTS[:3], bert_tiny.max_length, model_input_names(bert_tiny.model)
    )
    probs = predictor(bert_tiny)(encoded.input_ids, encoded.attention_mask)
    with torch.no_grad():
        expected = torch.softmax(bert_tiny.model(**encoded.inputs).logits, -1)
    torch.testing.assert_close(probs, expected)
    assert hide_ids(bert_tiny) == (
        bert_tiny.tokenizer.mask_token_id,
        bert_tiny.tokenizer.pad_token_id,
    )


def test_auto_picks_the_configuration_with_the_best_criterion(bert_tiny, cache_dir):
    table, n_texts = calibrate(bert_tiny, TEXTS, DLSOptions())
    assert n_texts == len(TEXTS)
    configs = [parse_key(key) for key in table]
    assert {rule for rule, _, _ in configs} == {"gradient", "cp", "cp_id", "attnlrp"}
    assert all(layer != 2 for _, layer, _ in configs), (
        "the [CLS]-only last layer is never a candidate"
    )
    for value in table.values():
        assert value.score == pytest.approx(value.comprehensiveness - value.sufficiency)
        assert value.n_texts == len(TEXTS)
    choice = choose(table, DLSOptions(), n_texts, "calibrated")
    best = max(table, key=lambda key: table[key].score)
    assert (choice.rule, choice.layer, choice.decode) == parse_key(best) and best in choice.reason
    assert "sufficiency" in choice.reason


def test_a_restricted_auto_searches_only_what_it_allows(bert_tiny, cache_dir):
    free, _ = calibrate(bert_tiny, TEXTS, DLSOptions(), screen=len(TEXTS), keep=100)
    fixed_options = DLSOptions(rule="cp", decode=False)
    fixed, n_texts = calibrate(bert_tiny, TEXTS, fixed_options, screen=len(TEXTS), keep=100)
    assert fixed and {(parse_key(k)[0], parse_key(k)[2]) for k in fixed} == {("cp", False)}
    assert set(fixed) == {k for k in free if k.startswith("cp/") and k.endswith("/plain")}
    for key, value in fixed.items():
        assert value == free[key], "the same configuration scores the same in either search"
    choice = choose(fixed, fixed_options, n_texts, "calibrated")
    assert (choice.rule, choice.decode) == ("cp", False)
    key = f"cp/{'input' if choice.layer is None else choice.layer}/plain"
    assert fixed[key].score == max(v.score for v in fixed.values())


def test_calibration_screens_then_scores_the_finalists_on_every_text(bert_tiny, cache_dir):
    many = [f"{t} , take {i}" for i, t in enumerate(TEXTS * 3)]
    table, n_texts = calibrate(bert_tiny, many, DLSOptions(), screen=4, keep=1)
    full, _ = calibrate(bert_tiny, many, DLSOptions(), screen=len(many), keep=100)
    assert n_texts == len(many) and set(table) < set(full)
    finished = {key for key, value in table.items() if value.n_texts == len(many)}
    assert finished, "the race's survivors are measured on every text"
    for key in finished:
        assert table[key].comprehensiveness == pytest.approx(full[key].comprehensiveness)
        assert table[key].sufficiency == pytest.approx(full[key].sufficiency)
    assert all(
        4 <= value.n_texts < len(many) for key, value in table.items() if key not in finished
    )
    no_race, _ = calibrate(bert_tiny, many, DLSOptions(), screen=4, keep=1, race_z=float("inf"))
    assert set(no_race) == set(table) and all(v.n_texts == len(many) for v in no_race.values())
    assert sorted(parse_key(k)[0] for k in table) == ["attnlrp", "cp", "cp_id", "gradient"]


def test_the_race_drops_only_finalists_clearly_worse_than_the_leader():
    rng = np.random.default_rng(0)
    base = rng.normal(0.4, 0.1, size=40)
    per_config = {
        "cp/0/plain": {"comprehensiveness": list(base), "sufficiency": [0.0] * 40},
        "cp/input/plain": {
            "comprehensiveness": list(base - 0.002 + rng.normal(0, 0.05, 40)),
            "sufficiency": [0.0] * 40,
        },
        "gradient/1/plain": {"comprehensiveness": list(base - 0.2), "sufficiency": [0.0] * 40},
        "cp_id/0/plain": {"comprehensiveness": list(base), "sufficiency": list(base * 0 + 0.1)},
    }
    assert race(per_config, set(per_config), 2.0) == {"cp/0/plain", "cp/input/plain"}
    assert race(per_config, {"gradient/1/plain"}, 2.0) == {"gradient/1/plain"}
    table = {
        "cp/0/plain": Measured(0.40, 0.00, 64),
        "cp/input/plain": Measured(0.39, 0.00, 64),
        "gradient/1/plain": Measured(0.45, 0.00, 16),  # out of the race early: not chosen
    }
    choice = choose(table, DLSOptions(), 64, "calibrated")
    assert (choice.rule, choice.layer) == ("cp", 0)
    assert "gradient/1/plain 0.450 (out after 16)" in choice.reason


def test_auto_layer_is_recorded_and_cached(bert_tiny, cache_dir):
    many = TEXTS * 3
    first = layersal.explain(many, bert_tiny, layer="auto")
    auto = first[0].options["auto"]
    assert first[0].options["layer"] == "auto"
    assert auto["source"] == "calibrated" and first[0].layer == auto["layer"]
    assert first[0].options["rule"] == auto["rule"] and first[0].options["decode"] == auto["decode"]
    assert cache_file().is_file()
    again = layersal.explain(TEXTS[0], bert_tiny, layer="auto")
    assert again.options["auto"]["source"] == "cache" and again.layer == auto["layer"]
    other = layersal.explain(TEXTS[0], bert_tiny, layer="auto", saliency="grad_norm")
    assert other.options["auto"]["source"] == "calibrated", "settings are part of the cache key"


def test_small_calibrations_are_not_cached(bert_tiny, cache_dir):
    layersal.explain(TEXTS[:3], bert_tiny, layer="auto")
    assert not cache_file().exists()


def test_read_sst2_and_agnews_layouts(tmp_path):
    sst = tmp_path / "sst.tsv"
    sst.write_text('sentence\tlabel\nit \'s a "charming" film\t1\nbad\t0\n', encoding="utf-8")
    data = read_labelled(sst)
    assert data.texts == ['it \'s a "charming" film', "bad"] and data.labels == ["1", "0"]
    assert label_indices(data.labels, ["negative", "positive"]) == [1, 0]
    ag = tmp_path / "ag.tsv"
    ag.write_text(
        "Oil hits #36;50 a barrel\\Markets fall\tBusiness\nGoal!\tSports\n", encoding="utf-8"
    )
    news = read_labelled(ag)
    assert news.texts == ["Oil hits $50 a barrel Markets fall", "Goal!"]
    assert label_indices(news.labels, ["World", "Sports", "Business", "Sci/Tech"]) == [2, 1]
    with pytest.raises(InputError, match="unknown gold label 'Weather'"):
        label_indices(["Weather"], ["World", "Sports"])
    assert clean_agnews("AT&amp;T #39;s deal") == "AT&T 's deal"
    assert clean_agnews('"He said ""no"" today"') == 'He said "no" today'


def test_a_label_name_wins_over_an_index_for_targets_and_gold_labels():
    stars = ["1", "2", "3", "4", "5"]
    assert label_indices(["1", "5"], stars) == [0, 4]
    assert target_index("1", stars) == 0 and target_index(1, stars) == 1
    assert target_index("4", ["negative", "positive", "x", "y", "z"]) == 4
    with pytest.raises(InputError, match="gold label 7 is out of range"):
        label_indices(["7"], stars)


def test_seeded_sample_is_stable_and_in_file_order():
    data = LabelledTexts([str(i) for i in range(100)], [None] * 100, "x")
    a, b = data.sample(10, seed=3), data.sample(10, seed=3)
    assert a.texts == b.texts and a.texts == sorted(a.texts, key=int)
    assert data.sample(10, seed=4).texts != a.texts


def test_method_specs():
    spec = parse_spec("dls:layer=1,saliency=grad_x_act,relu=false,tau=none")
    assert spec.options == {"layer": 1, "saliency": "grad_x_act", "relu": False, "tau": None}
    with pytest.raises(InputError):
        parse_spec("dls:depth=3")
    with pytest.raises(InputError):
        parse_spec("nope")
    labels = [s.label for s in expand_specs(["all"], num_layers=2)]
    assert {"dls:layer=0", "dls:layer=2", "dls:layer=coherent", "dls:layer=auto", "random"} <= set(
        labels
    )
    assert len(labels) == len(set(labels))


AUTO = "dls:layer=auto,rule=gradient,decode=true"  # auto's layer choice among the fixed-layer runs


def test_benchmark_run_scores_every_text_and_writes_outputs(sst2_tiny, tmp_path, cache_dir):
    bert_tiny = sst2_tiny
    data = LabelledTexts(TEXTS, ["1", "0", "1", "1", "0", "1"], "fixture")
    specs = expand_specs(
        ["dls:layer=1", "dls:layer=0", AUTO, "dls:layer=coherent", "random", "deeplift_shap"],
        bert_tiny.num_layers,
    )
    seen = []
    bench = run_benchmark(
        bert_tiny,
        data,
        specs,
        batch_size=4,
        metric_options={"loo": False},
        on_progress=lambda label, n: seen.append((label, n)),
        calibration=TEXTS,
    )
    assert [r.spec.label for r in bench.runs] == [s.label for s in specs]
    assert sum(n for _, n in seen) == len(specs) * len(TEXTS)
    dls = bench.runs[0]
    assert len(dls.results) == len(TEXTS) and dls.layers == [1] * len(TEXTS)
    assert (dls.forward_passes, dls.backward_passes) == (1.0, 1.0)
    assert set(dls.coherence) <= {1}, "a fixed-layer run decodes only its own layer"
    assert set(bench.runs[3].coherence) == {0, 1, 2}  # coherent decodes every layer
    rows_by_layer = {row["label"]: row for row in layer_analysis(bench)}
    assert rows_by_layer["dls:layer=1"]["coherence"] == pytest.approx(bench.runs[3].coherence[1])
    assert 0.0 <= bench.accuracy <= 1.0
    direct = layersal.explain(TEXTS[2], bert_tiny, layer=1)
    from layersal.evaluate import score_batch

    encoded = encode(
        bert_tiny.tokenizer, [TEXTS[2]], bert_tiny.max_length, model_input_names(bert_tiny.model)
    )
    scores = torch.zeros(encoded.input_ids.shape)
    scores[0, encoded.content[0]] = torch.tensor(direct.scores)
    expected = score_batch(
        bert_tiny, encoded, scores, torch.tensor([bert_tiny.labels.index(direct.target)]), loo=False
    )
    assert dls.results[2].aopc_comprehensiveness == pytest.approx(
        expected[0].aopc_comprehensiveness, abs=1e-5
    )
    rows = {row["label"]: row for row in layer_analysis(bench)}
    assert rows[AUTO]["layers_used"] in ([0], [1])
    assert (
        "highest comprehensiveness" in rows[AUTO]["note"]
        and "calibrated on the given texts" in rows[AUTO]["note"]
    )
    best = max(
        rows["dls:layer=0"]["aopc_comprehensiveness"], rows["dls:layer=1"]["aopc_comprehensiveness"]
    )
    assert rows["dls:layer=1"]["gap_to_best"] == pytest.approx(
        rows["dls:layer=1"]["aopc_comprehensiveness"] - best
    )
    assert rows[AUTO]["gap_to_best"] <= 1e-12, "calibrated on these texts, auto is the best layer"
    table = markdown(bench)
    assert all(f"| {s.label} |" in table for s in specs[:-1])
    assert bench.runs[-1].results == [] and bench.runs[-1].note.startswith("not run:")
    assert "deeplift_shap: not run:" in table
    paths = write(bench, tmp_path / "out")
    assert {p.name for p in paths} == {
        "results.json",
        "results.md",
        "deletion_curves.png",
        "layers.png",
        "frontier.png",
    }
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["methods"][0]["per_text"]) == len(TEXTS)
    assert (tmp_path / "out" / "deletion_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite(saved["methods"][0]["summary"]["aopc_comprehensiveness"][0])


def test_calibration_texts_are_read_and_cleaned_like_the_benchmark_data(tmp_path):
    from layersal.cli.bench import _calibration_texts

    agnews = tmp_path / "dev.tsv"
    agnews.write_text(
        "It #39;s over\\ for now\tSci/Tech\nStocks fell &amp; rose\tBusiness\n", encoding="utf-8"
    )
    assert _calibration_texts(agnews) == ["It 's over for now", "Stocks fell & rose"]
    plain = tmp_path / "texts.txt"
    plain.write_text("\n".join(f"text {i}" for i in range(100)), encoding="utf-8")
    assert _calibration_texts(plain) == [f"text {i}" for i in range(64)]
    assert _calibration_texts(None) is None


def test_auto_compares_only_the_plain_gradient_for_a_family_without_rules(bert_tiny, cache_dir):
    import dataclasses

    unmapped = dataclasses.replace(bert_tiny, family=None)
    explanation = layersal.explain(TEXTS[0], unmapped)
    assert (
        explanation.options["rule"] == "gradient"
        and explanation.options["auto"]["source"] == "calibrated"
    )
    with pytest.raises(InputError, match="no propagation map"):
        layersal.explain(TEXTS[0], unmapped, layer=1, rule="cp")


def test_cli_bench_prints_whole_markdown_table_lines(tmp_path, monkeypatch):
    """Piped (80 columns, or fewer) the tables still come out one row per line."""
    from typer.testing import CliRunner

    from layersal.cli import app

    monkeypatch.setenv("COLUMNS", "40")
    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t1\n" for t in TEXTS), encoding="utf-8")
    args = ["bench", "--data", str(data), "--out", str(tmp_path / "b"), "--no-loo"]
    result = CliRunner().invoke(app, [*args, "--methods", "gradient,occlusion"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(rows) >= 4 and all(line.rstrip().endswith("|") for line in rows)
    assert max(len(line) for line in rows) > 200  # wider than any terminal default


def test_the_frontier_marks_what_nothing_cheaper_beats_and_plots_a_budget_sweep(
    sst2_tiny, tmp_path
):
    from layersal.benchmark import frontier
    from layersal.report.bench import frontier_markdown

    data = LabelledTexts(TEXTS, ["1", "0", "1", "1", "0", "1"], "fixture")
    specs = [
        parse_spec(s)
        for s in (
            "gradient",
            "random",
            "shapley_control_variate:budget=4",
            "shapley_control_variate:budget=12",
        )
    ]
    bench = run_benchmark(sst2_tiny, data, specs, batch_size=3, metric_options={"loo": False})
    points = frontier(bench)
    assert [p.passes for p in points] == sorted(p.passes for p in points)
    by_label = {p.label: p for p in points}
    for run in bench.runs:
        assert by_label[run.spec.label].passes == run.forward_passes + run.backward_passes

    def value(q):
        return q.comprehensiveness[0] - q.sufficiency[0]

    for p in points:  # on the frontier exactly when no point as cheap is better
        beaten = any(
            (q.passes <= p.passes and value(q) > value(p))
            or (q.passes < p.passes and value(q) >= value(p))
            for q in points
            if q is not p
        )
        assert p.on_frontier == (not beaten)
    cheapest = points[0]
    assert cheapest.on_frontier
    table = frontier_markdown(bench)
    assert all(p.label in table for p in points)
    paths = write(bench, tmp_path / "out")
    assert (tmp_path / "out" / "frontier.png") in paths
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 5000
