"""The randomisation sanity check, metric agreement and seed agreement (``bench --sanity``,
the agreement tables, ``bench --seeds``), and the maths under them."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from layersal.agreement import metric_agreement, run_seed_agreement, seeded_specs
from layersal.benchmark import Benchmark, MethodRun, parse_spec, row_batches
from layersal.datasets import LabelledTexts
from layersal.errors import InputError, ModelLoadError
from layersal.job import Explainer
from layersal.metrics import Faithfulness
from layersal.randomise import Stage, cascade, parameter_groups, randomised
from layersal.rows import PlannedRow
from layersal.saliency.auto_store import card_table, model_digest
from layersal.saliency.dls import DLSOptions
from layersal.sanity import run_sanity
from layersal.similarity import map_similarity, mean_pairwise, ranking_agreement, spearman

from .conftest import FAMILIES

TEXTS = [
    "a gripping, beautifully acted film",
    "dull and far too long",
    "the plot meanders but the cast shines",
    "not bad at all, funny and wise",
]
DATA = LabelledTexts(TEXTS, ["1", "0", "1", "1"], "fixture")


# -- the maths ------------------------------------------------------------------------------


def test_spearman_by_hand_with_and_without_ties():
    # ranks 0 1 2 3 against 0 2 1 3: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    # tied ranks 0.5 0.5 2 against 0 1 2: covariance 1.5 over sqrt(1.5 * 2)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert spearman([3, 1, 2], [3, 1, 2]) == 1.0
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])), "a constant map has no ranking"
    assert math.isnan(spearman([1.0], [2.0]))


def test_map_similarity_signed_and_absolute():
    signed, absolute = map_similarity([1.0, -2.0, 3.0], [-1.0, 2.0, -3.0])
    assert signed == pytest.approx(-1.0) and absolute == 1.0


def test_mean_pairwise_is_exactly_one_for_identical_maps_and_averages_pairs():
    maps = [np.array([0.3, -0.1, 0.7, 0.2])] * 3
    assert mean_pairwise(maps) == 1.0 and mean_pairwise(maps, absolute=True) == 1.0
    a, b, c = [1, 2, 3, 4], [1, 3, 2, 4], [4, 3, 2, 1]
    expected = (spearman(a, b) + spearman(a, c) + spearman(b, c)) / 3
    assert mean_pairwise([a, b, c]) == pytest.approx(expected)
    assert math.isnan(mean_pairwise([[1, 1], [2, 2]]))


def test_ranking_agreement_by_hand():
    # comprehensiveness (higher better) orders A > B > C; sufficiency (lower better) A > C > B:
    # pairs AB and AC concordant, BC discordant: tau = (2 - 1) / 3
    matrix = ranking_agreement(
        {"comp": [0.3, 0.2, 0.1], "suff": [0.1, 0.3, 0.2], "same": [3.0, 2.0, 1.0]},
        {"comp": True, "suff": False, "same": True},
    )
    assert matrix["comp"]["suff"] == pytest.approx(1 / 3)
    assert matrix["comp"]["same"] == 1.0
    for a in matrix:
        assert matrix[a][a] == 1.0
        for b in matrix:
            assert matrix[a][b] == matrix[b][a]


# -- metric agreement from a benchmark --------------------------------------------------------


def result(comp: float, suff: float, deletion: float) -> Faithfulness:
    """A text's result with the chosen headline values (the rest undefined)."""
    return Faithfulness(
        target=0, probability=0.9, n_units=4, comprehensiveness={}, sufficiency={},
        aopc_comprehensiveness=comp, aopc_sufficiency=suff, deletion_curve=[],
        insertion_curve=[], deletion_accuracy=None, insertion_accuracy=None,
        deletion_area=deletion, insertion_area=math.nan, log_odds_20=math.nan,
        kendall_loo=None, loo_importance=None, forward_passes=1,
    )  # fmt: skip


def bench_of(values: dict[str, list[tuple[float, float, float]]]) -> Benchmark:
    runs = [
        MethodRun(parse_spec(label), [result(*v) for v in per_text], [], 0.0, 1.0, 1.0)
        for label, per_text in values.items()
    ]
    return Benchmark("m", "d", 2, None, runs, {}, {})


def test_metric_agreement_matrix_matches_a_hand_computation():
    bench = bench_of(
        {  # per text (comp, suff, deletion area); means: comp .3 .2 .1, suff .1 .3 .2
            "gradient": [(0.4, 0.0, 0.1), (0.2, 0.2, 0.3)],
            "random": [(0.3, 0.4, 0.25), (0.1, 0.2, 0.75)],
            "occlusion": [(0.1, 0.2, 0.5), (0.1, 0.2, 0.5)],
        }
    )
    agreement = metric_agreement(bench)
    assert agreement is not None
    # insertion area, log-odds and LOO are undefined for these results: left out
    assert agreement.metrics == ["aopc_comprehensiveness", "aopc_sufficiency", "deletion_area"]
    assert agreement.methods == ["gradient", "random", "occlusion"]
    comp, suff, deletion = agreement.metrics
    assert agreement.overall[comp][suff] == pytest.approx(1 / 3)
    # deletion area means .2 .5 .5 (lower better): gradient first, the other two tied
    # tau-b of comp (.3 .2 .1) with -deletion (-.2 -.5 -.5): 2 concordant, 1 tie in one side
    assert agreement.overall[comp][deletion] == pytest.approx(2 / math.sqrt(3 * 2))
    for a in agreement.metrics:
        assert agreement.overall[a][a] == 1.0
        for b in agreement.metrics:
            assert agreement.overall[a][b] == agreement.overall[b][a]
            assert agreement.per_text[a][b] == agreement.per_text[b][a]
    # text 0: comp .4 .3 .1, suff (lower first) .0 .4 .2: concordant AB, AC, discordant BC
    # text 1: comp .2 .1 .1 (tie BC), suff .2 .2 .2: constant, no ranking (NaN, dropped)
    assert agreement.per_text[comp][suff][0] == pytest.approx(1 / 3)
    assert (
        metric_agreement(bench_of({"gradient": [(0.1, 0.1, 0.1)], "random": [(0.2, 0.2, 0.2)]}))
        is None
    )


# -- randomised copies ----------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_splits_into_embeddings_blocks_and_head(tiny_dirs, family):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_dirs[family][0])
    groups = parameter_groups(model)
    names = [name for name, _ in model.named_parameters()]
    listed = [*groups.embeddings, *(n for b in groups.blocks for n in b), *groups.head]
    assert sorted(listed) == sorted(names), "every parameter in exactly one group"
    assert len(groups.blocks) == model.config.num_hidden_layers and all(groups.blocks)
    assert groups.embeddings and groups.head
    stages = cascade(model)
    assert [s.name for s in stages] == ["head", "head+block 2", "head+blocks 1..2", "all"]
    assert set(stages[-1].parameters) == set(names)
    for earlier, later in itertools.pairwise(stages):
        assert set(earlier.parameters) < set(later.parameters), "cumulative, from the top"
    assert set(stages[1].parameters) - set(stages[0].parameters) == set(groups.blocks[-1])


def test_a_randomised_copy_leaves_the_original_untouched(sst2_tiny):
    lm = sst2_tiny
    stages = cascade(lm.model)
    head, everything = stages[0], stages[-1]
    assert any(name.startswith("classifier.") for name in head.parameters)
    assert not any(name.startswith("bert.encoder.") for name in head.parameters)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    digest = model_digest(lm)
    lm.model.train()  # a user's model mid-training keeps its mode
    rng = torch.random.get_rng_state()
    try:
        copy = randomised(lm, head, seed=3)
        whole = randomised(lm, everything, seed=3)
        assert all(module.training for module in lm.model.modules())
    finally:
        lm.model.eval()
    assert torch.equal(torch.random.get_rng_state(), rng), "the global stream is left as it was"
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the original is untouched"
    assert model_digest(lm) == digest and lm.path is not None
    changed = {
        k for k, v in copy.model.named_parameters() if not torch.equal(v, before[k].to(v.dtype))
    }
    constant = {k for k in head.parameters if bool((before[k] == before[k].flatten()[0]).all())}
    assert changed == set(head.parameters) - constant, "exactly the stage's parameters change"
    again = randomised(lm, head, seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(copy.model.parameters(), again.model.parameters())
    ), "seeded"
    # nothing stored for the trained weights applies to a copy: the card's auto calibration
    # is refused (no folder, its own weights hash), so auto would calibrate on the copy
    assert card_table(lm, DLSOptions()) is not None
    assert card_table(whole, DLSOptions()) is None and whole.path is None
    assert model_digest(whole) != digest
    assert copy.tokenizer is lm.tokenizer and copy.lm_head is lm.lm_head
    with pytest.raises(ModelLoadError, match="no parameter"):
        randomised(lm, Stage("x", "x", ("no.such.weight",)))


# -- the sanity check -------------------------------------------------------------------------


def test_gradient_changes_and_a_random_explanation_does_not(bert_tiny):
    before = {k: v.clone() for k, v in bert_tiny.model.state_dict().items()}
    specs = [parse_spec("gradient"), parse_spec("random")]
    seen: list[int] = []
    sanity = run_sanity(
        bert_tiny, DATA, specs, batch_size=3, on_progress=lambda label, n: seen.append(n)
    )
    after = bert_tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the user's model is untouched"
    assert [s.name for s in sanity.stages] == [s.name for s in cascade(bert_tiny.model)]
    assert sum(seen) == len(specs) * len(TEXTS) * (1 + len(sanity.stages))
    gradient, random = sanity.methods
    assert [r.stage for r in gradient.stages] == [s.name for s in sanity.stages]
    assert all(len(r.signed) == len(TEXTS) for r in gradient.stages)
    assert all(v == 1.0 for r in random.stages for v in r.signed + r.absolute)
    assert random.ignores_weights and not gradient.ignores_weights
    full = gradient.stages[-1].summary()
    assert full["signed"][0] < 0.9 and full["absolute"][0] < 0.9
    assert set(sanity.same_prediction) == {s.name for s in sanity.stages}
    assert all(0.0 <= v <= 1.0 for v in sanity.same_prediction.values())


def test_auto_keeps_the_trained_models_configuration(sst2_tiny, monkeypatch):
    job = Explainer(sst2_tiny, "dls")
    trained = job.settle(lambda: TEXTS).options
    assert trained["layer"] != "auto", "the card settles auto on the trained model"

    def no_calibration(*args, **kwargs):
        raise AssertionError("auto calibrated again (on a randomised copy)")

    monkeypatch.setattr("layersal.saliency.layer_choice.calibrate", no_calibration)
    stage = cascade(sst2_tiny.model)[-1]
    sanity = run_sanity(sst2_tiny, DATA, [parse_spec("dls")], stages=[stage])
    assert sanity.methods[0].options == trained
    copy = randomised(sst2_tiny, stage)
    moved = job.with_model(copy)
    encoded = row_batches(sst2_tiny, [PlannedRow(t, None) for t in TEXTS], 4).encoded[0]
    expected = job.attribute(encoded).layers
    assert moved.attribute(encoded).layers == expected, "the same layer on random weights"
    with pytest.raises(InputError, match="settle"):
        Explainer(sst2_tiny, "dls").with_model(copy)


# -- seed agreement ---------------------------------------------------------------------------


def test_sampling_methods_are_found_by_their_seed_option():
    names = ["dls", "gradient", "integrated_gradients", "lime", "kernel_shap"]
    names += ["shapley_sampling", "gradient_shap"]
    found = {spec.method for spec in seeded_specs([parse_spec(n) for n in names])}
    assert found == {"lime", "kernel_shap", "shapley_sampling", "gradient_shap"}


def test_lime_with_few_samples_disagrees_with_itself_across_seeds(bert_tiny):
    specs = [parse_spec("gradient"), parse_spec("lime:n_samples=10,seed=5")]
    results = run_seed_agreement(bert_tiny, DATA, specs, n_seeds=3, batch_size=4)
    assert [r.label for r in results] == ["lime:n_samples=10,seed=5"], "only sampling methods"
    lime = results[0]
    assert lime.seeds == [5, 6, 7] and len(lime.signed) == len(TEXTS)
    assert lime.summary()["signed"][0] < 1.0
    with pytest.raises(InputError, match="at least 2 seeds"):
        run_seed_agreement(bert_tiny, DATA, specs, n_seeds=1)


# -- the command line -----------------------------------------------------------------------


def test_cli_bench_sanity_and_seeds_end_to_end(tmp_path):
    from layersal.cli import app

    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t1\n" for t in TEXTS), encoding="utf-8")
    out = tmp_path / "b"
    args = ["bench", "--model", "sst2-tiny", "--data", str(data), "--out", str(out), "--no-loo"]
    methods = ["--methods", "dls,gradient,random,lime:n_samples=10"]
    result = CliRunner().invoke(app, [*args, *methods, "--sanity", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    for title in ("Metric agreement", "Randomisation sanity check", "Seed agreement"):
        assert title in result.stdout
    assert "| random (unchanged: ignores the weights) |" in result.stdout
    sanity = json.loads((out / "sanity.json").read_text())
    assert [s["name"] for s in sanity["stages"]] == [
        "head",
        "head+block 2",
        "head+blocks 1..2",
        "all",
    ]
    by_label = {m["label"]: m for m in sanity["methods"]}
    assert by_label["random"]["ignores_weights"] and not by_label["gradient"]["ignores_weights"]
    assert by_label["dls"]["options"]["layer"] != "auto"
    seeds = json.loads((out / "seed_agreement.json").read_text())
    assert [s["label"] for s in seeds] == ["random", "lime:n_samples=10"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["metric_agreement"]["methods"] == [
        "dls",
        "gradient",
        "random",
        "lime:n_samples=10",
    ]
    refused = CliRunner().invoke(app, [*args, *methods, "--seeds", "1"])
    assert refused.exit_code == 2 and "--seeds takes 0 (off) or at least 2" in refused.output
