"""Ceilings of comprehensiveness and sufficiency AOPC: the beam search against exhaustive
search, against every method, its pass count, and the maths that reads methods against it."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import layersal
from layersal.benchmark import bench_rows, ceiling_table, parse_spec, run_benchmark
from layersal.ceilings import (
    BOUNDS,
    Ceiling,
    Normalised,
    beam_bounds,
    ceiling_fraction,
    normalised,
    widened,
)
from layersal.cli import app
from layersal.datasets import LabelledTexts
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.evaluate import bounds_batch, hide_ids, predictor, score_batch
from layersal.job import Explainer
from layersal.metrics import faithfulness_many

from .test_metrics import MASK, A, B, C, D, E, FakeModel, batch, padded_scores

SHORT = ["dull and far too long", "not a bad film at all"]  # 5 and 6 tokens


def exhaustive(predict, encoded, targets, mask_id, row):
    """Every ordering of one text's units scored by the metrics themselves: the exact range
    of its comprehensiveness and sufficiency AOPC."""
    ids, mask, content = encoded["input_ids"], encoded["attention_mask"], encoded["content"]
    positions = np.flatnonzero(content[row].numpy())
    maps = []
    for order in itertools.permutations(range(len(positions))):
        scores = torch.zeros(ids.shape, dtype=torch.float64)
        for rank, unit in enumerate(order):
            scores[row, positions[unit]] = len(order) - rank
        maps.append(scores)
    out = faithfulness_many(
        predict, ids, mask, content, maps, targets, mask_id=mask_id, loo=False,
        parts=("comprehensiveness", "sufficiency"),
    )  # fmt: skip
    comp = [o[row].aopc_comprehensiveness for o in out]
    suff = [o[row].aopc_sufficiency for o in out]
    return {
        "comprehensiveness_upper": max(comp),
        "comprehensiveness_lower": min(comp),
        "sufficiency_upper": max(suff),
        "sufficiency_lower": min(suff),
    }


def test_a_wide_beam_is_exhaustive_on_the_fake_model():
    texts = [[A, B, C, D, E], [D, B, A]]
    encoded = batch(*texts)
    targets = torch.tensor([1, 0])
    found = beam_bounds(FakeModel(), **encoded, targets=targets, beam=10, mask_id=MASK)
    for row, ceiling in enumerate(found):
        expected = exhaustive(FakeModel(), encoded, targets, MASK, row)
        for name in BOUNDS:
            assert getattr(ceiling, name) == pytest.approx(expected[name]), name
    # additive logits: hiding the heaviest words (E 3, A 2, D 1) first is the best ordering
    assert found[0].chains["comprehensiveness_upper"] == [4, 0, 3]  # 5 units: 1 or 3 hidden
    assert found[0].n_units == 5 and found[1].target == 0


@pytest.fixture(scope="module")
def short_batch(sst2_tiny):
    encoded = encode(
        sst2_tiny.tokenizer, SHORT, sst2_tiny.max_length, model_input_names(sst2_tiny.model)
    )
    with torch.no_grad():
        targets = predictor(sst2_tiny)(encoded.input_ids, encoded.attention_mask).argmax(-1)
    return encoded, targets


def test_the_beam_equals_exhaustive_search_and_bounds_every_method_on_a_tiny_model(
    sst2_tiny, short_batch
):
    encoded, targets = short_batch
    mask_id, _ = hide_ids(sst2_tiny)
    predict = predictor(sst2_tiny)
    # 6 units: at most C(6, 3) = 20 sets of a size, so a beam of 20 keeps every one
    found = bounds_batch(sst2_tiny, encoded, targets, beam=20)
    plain = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
    plain["content"] = encoded.content
    methods = ["gradient", "input_x_gradient", "occlusion", "dls", "lime", "shapley_sampling"]
    scored = []
    for name in methods:
        attribution = layersal.explainer(sst2_tiny, name).attribute(encoded, targets)
        scored.append(score_batch(sst2_tiny, encoded, attribution.scores, targets, loo=False))
    for row, ceiling in enumerate(found):
        expected = exhaustive(predict, plain, targets, mask_id, row)
        for name in BOUNDS:
            assert getattr(ceiling, name) == pytest.approx(expected[name], abs=1e-9), name
        for results in scored:
            r = results[row]
            assert ceiling.comprehensiveness_lower <= r.aopc_comprehensiveness + 1e-9
            assert r.aopc_comprehensiveness <= ceiling.comprehensiveness_upper + 1e-9
            assert ceiling.sufficiency_lower <= r.aopc_sufficiency + 1e-9
            assert r.aopc_sufficiency <= ceiling.sufficiency_upper + 1e-9
    assert found[1].comprehensiveness_upper > found[1].comprehensiveness_lower


def test_ranking_by_a_chain_gives_its_bound(sst2_tiny):
    text = ["it 's a charming and often affecting journey , though the ending drags on"]
    encoded = encode(
        sst2_tiny.tokenizer, text, sst2_tiny.max_length, model_input_names(sst2_tiny.model)
    )
    targets = torch.tensor([1])
    (ceiling,) = bounds_batch(sst2_tiny, encoded, targets, beam=2)
    positions = np.flatnonzero(encoded.content[0].numpy())
    for name in BOUNDS:
        chain = ceiling.chains[name]
        scores = torch.full(encoded.input_ids.shape, -1.0)
        for rank, unit in enumerate(chain):
            scores[0, positions[unit]] = len(positions) - rank
        (r,) = score_batch(sst2_tiny, encoded, scores, targets, loo=False)
        kind = name.split("_")[0]
        assert getattr(r, f"aopc_{kind}") == pytest.approx(getattr(ceiling, name), abs=1e-9)


def test_every_distinct_input_goes_through_the_model_once_and_is_counted():
    model = FakeModel()
    texts = [[A, B, C, D, E, A, B], [C, D]]
    found = beam_bounds(model, **batch(*texts), targets=torch.tensor([1, 1]), beam=3, mask_id=MASK)
    rows = model.rows
    assert len(rows) == len({(tuple(i), tuple(m)) for i, m in rows}), "a row went twice"
    assert sum(c.forward_passes for c in found) == len(rows)
    # the longer text: 7 units, sizes up to 4; every search starts from the 7 singletons
    assert found[1].forward_passes < found[0].forward_passes
    assert found[0].forward_passes <= 1 + 4 * 3 * 7 * 4


def test_one_unit_leaves_nothing_to_search():
    (ceiling,) = beam_bounds(FakeModel(), **batch([A]), targets=torch.tensor([1]), mask_id=MASK)
    assert ceiling.comprehensiveness_upper == ceiling.comprehensiveness_lower
    assert ceiling.sufficiency_upper == ceiling.sufficiency_lower == 0.0  # keeps everything
    assert math.isnan(normalised(_result(0.2, 0.0), ceiling).naopc_comprehensiveness)


def test_beam_errors():
    with pytest.raises(InputError, match="beam width"):
        beam_bounds(FakeModel(), **batch([A, B]), targets=torch.tensor([1]), beam=0, mask_id=MASK)
    with pytest.raises(InputError, match="mask_id"):
        beam_bounds(FakeModel(), **batch([A, B]), targets=torch.tensor([1]))


def _result(comp: float, suff: float):
    (r,) = faithfulness_many(
        FakeModel(), **batch([A, B]), score_sets=[padded_scores([1.0, 0.0])],
        targets=torch.tensor([1]), mask_id=MASK, parts=("comprehensiveness",), loo=False,
    )[0]  # fmt: skip
    r.aopc_comprehensiveness, r.aopc_sufficiency = comp, suff
    return r


def _ceiling(**bounds: float) -> Ceiling:
    return Ceiling(target=1, n_units=4, beam=4, forward_passes=10, **bounds)


def test_normalised_aopc_widened_bounds_and_the_fraction_by_hand():
    ceiling = _ceiling(
        comprehensiveness_upper=0.5,
        comprehensiveness_lower=-0.1,
        sufficiency_upper=0.6,
        sufficiency_lower=0.0,
    )
    value = normalised(_result(0.35, 0.15), ceiling)
    assert value.naopc_comprehensiveness == pytest.approx(0.75)
    assert value.naopc_sufficiency == pytest.approx(0.25)
    wider = widened(ceiling, [_result(0.7, 0.15), _result(0.2, -0.2)])
    assert (wider.comprehensiveness_upper, wider.comprehensiveness_lower) == (0.7, -0.1)
    assert (wider.sufficiency_upper, wider.sufficiency_lower) == (0.6, -0.2)
    values = [
        Normalised(0.5, 0.5, 0.2, 0.4),
        Normalised(0.5, 0.5, 0.1, 0.1),
        Normalised(0.5, 0.5, 0.0, 0.5),
    ]
    mean, low, high = ceiling_fraction(values, seed=1)
    assert mean == pytest.approx(0.3 / 1.0)  # a ratio of sums, not a mean of ratios
    assert low <= mean <= high
    assert ceiling_fraction(values, seed=1) == (mean, low, high)
    assert all(math.isnan(v) for v in ceiling_fraction([Normalised(0, 0, 0.1, 0.0)]))


def test_run_benchmark_reads_every_method_against_its_ceilings(sst2_tiny):
    texts = [
        "a gripping, beautifully acted film",
        "dull and far too long",
        "the plot meanders but the cast shines",
        "not bad at all",
        "an utter waste of a fine premise",
    ]
    data = LabelledTexts(texts, ["1", "0", "1", "1", "0"], "test")
    specs = [parse_spec(m) for m in ("gradient", "occlusion", "dls")]
    bench = run_benchmark(
        sst2_tiny, data, specs, batch_size=2, metric_options={"loo": False, "soft": True},
        ceilings=3, beam=2, seed=1,
    )  # fmt: skip
    ceilings = bench.ceilings
    assert ceilings is not None and len(ceilings.rows) == 3 and ceilings.beam == 2
    assert ceilings.rows == sorted(ceilings.rows) and len(set(ceilings.rows)) == 3
    for run in bench.runs:
        for row, bound in zip(ceilings.rows, ceilings.bounds):
            r = run.results[row]
            assert bound.comprehensiveness_lower <= r.aopc_comprehensiveness
            assert r.aopc_comprehensiveness <= bound.comprehensiveness_upper
            assert bound.sufficiency_lower <= r.aopc_sufficiency <= bound.sufficiency_upper
        assert all(math.isfinite(r.soft_comprehensiveness) for r in run.results)
    table = {row["label"]: row for row in ceiling_table(bench)}
    assert set(table) == {"gradient", "occlusion", "dls"}
    for row in table.values():
        assert 0.0 <= row["naopc_comprehensiveness"][0] <= 1.0
        assert 0.0 <= row["naopc_sufficiency"][0] <= 1.0
        assert row["n_texts"] == 3
    gradient = bench.runs[0]
    uppers = [bound.comprehensiveness_upper for bound in ceilings.bounds]
    aopcs = [gradient.results[row].aopc_comprehensiveness for row in ceilings.rows]
    assert table["gradient"]["ceiling_fraction"][0] == pytest.approx(sum(aopcs) / sum(uppers))
    again = run_benchmark(
        sst2_tiny, data, specs[:1], batch_size=2, metric_options={"loo": False},
        ceilings=3, beam=2, seed=1,
    )  # fmt: skip
    assert again.ceilings is not None and again.ceilings.rows == ceilings.rows
    assert [c.comprehensiveness_upper for c in again.ceilings.found] == [
        c.comprehensiveness_upper for c in ceilings.found
    ]


def test_cli_bench_ceilings_and_soft_metrics_end_to_end(tmp_path):
    data = tmp_path / "sst2.tsv"
    lines = ["sentence\tlabel", "a gripping film\t1", "dull and far too long\t0"]
    lines += ["not bad at all\t1", "an utter waste\t0"]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "b"
    args = ["bench", "--data", str(data), "--out", str(out), "--no-loo", "--methods"]
    result = CliRunner().invoke(app, [*args, "gradient,dls", "--ceilings", "2", "--beam", "3"])
    assert result.exit_code == 0, result.output
    assert "soft comp. (higher better)" in result.output
    assert "Ceilings: beam search of width 3 on 2 texts" in result.output
    assert "| gradient |" in result.output.split("Against the ceilings")[1]
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["ceilings"]["beam"] == 3 and len(saved["ceilings"]["per_text"]) == 2
    assert {m["label"] for m in saved["ceilings"]["methods"]} == {"gradient", "dls"}
    assert saved["settings"]["ceilings"] == 2
    assert (out / "frontier-ceiling.png").stat().st_size > 5000  # passes against the fraction
    assert np.isfinite(saved["methods"][0]["summary"]["soft_comprehensiveness"][0])
    plain = CliRunner().invoke(app, [*args, "gradient", "--no-soft", "--out", str(tmp_path / "c")])
    assert plain.exit_code == 0, plain.output
    assert "soft comp." not in plain.output and "Ceilings" not in plain.output
    assert not (tmp_path / "c" / "frontier-ceiling.png").exists()
    bad = CliRunner().invoke(app, [*args, "gradient", "--beam", "0", "--ceilings", "2"])
    assert bad.exit_code == 2 and "error:" in bad.output and "--beam" in bad.output


@pytest.mark.parametrize("task", ["entities", "regression"])
def test_ceilings_and_soft_metrics_of_other_heads(task, tiny_dirs, tmp_path):
    """Entities (a focus input travels with every perturbed row) and a score (no softmax)."""
    from .conftest import tiny_head
    from .test_entities import TEXT, token_classifier

    if task == "entities":
        folder = token_classifier(tmp_path, bias=[0.0, 0.3, 0.1, 0.9, 0.8, 0.2, 0.1])
        lm = layersal.load(folder, lm_head=tiny_dirs["bert"][1])
        data = LabelledTexts([TEXT], [None], "test")
    else:
        folder, mlm = tiny_head(tiny_dirs, tmp_path / "reward", ["score"], 3)
        lm = layersal.load(folder, lm_head=mlm)
        data = LabelledTexts(["a gripping film", "dull and far too long"], [None, None], "t")
    specs = [parse_spec("gradient"), parse_spec("occlusion")]
    bench = run_benchmark(
        lm, data, specs, metric_options={"loo": False, "soft": True}, ceilings=2, beam=2
    )
    ceilings = bench.ceilings
    assert ceilings is not None and len(ceilings.rows) == 2
    for run in bench.runs:
        assert all(math.isfinite(r.soft_sufficiency) for r in run.results)
    assert {row["label"] for row in ceiling_table(bench)} == {"gradient", "occlusion"}
    # each bound is an ordering the metrics score to the same AOPC, focus input and all
    rows = bench_rows(Explainer(lm, "gradient"), data.texts)
    for row, found in zip(ceilings.rows, ceilings.found):
        encoded = encode(lm.tokenizer, [rows[row].item], lm.max_length, model_input_names(lm.model))
        positions = np.flatnonzero(lm.task.hideable(encoded)[0].numpy())
        targets = torch.tensor([found.target])
        for name in BOUNDS:
            scores = torch.full(encoded.input_ids.shape, -1.0)
            for rank, unit in enumerate(found.chains[name]):
                scores[0, positions[unit]] = len(positions) - rank
            (r,) = score_batch(lm, encoded, scores, targets, loo=False)
            kind = name.split("_")[0]
            assert getattr(r, f"aopc_{kind}") == pytest.approx(getattr(found, name), abs=1e-6)
