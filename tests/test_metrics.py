"""Faithfulness and plausibility metrics, checked against numbers worked out by hand.

The fake model: p(class 1 | x) = sigmoid(sum of the weights of the attended ids), with
[CLS]/[SEP]/[MASK]/[PAD] weighing 0, so every perturbed input has a logit we can add up.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from layersal.errors import InputError
from layersal.metrics import (
    bootstrap_ci,
    budget_size,
    erasure_aopc_many,
    faithfulness,
    kendall_tau_b,
    perturb,
    rank_units,
    summarise,
    trapezoid_area,
)
from layersal.rationales import (
    auprc,
    iou_f1,
    plausibility,
    read_rationales,
    runs,
    token_f1,
    word_scores,
)

FIXTURES = Path(__file__).parent / "fixtures"
PAD, CLS, SEP, MASK = 0, 1, 2, 3
A, B, C, D, E = 4, 5, 6, 7, 8  # weights 2, -1, 0.5, 1, 3
WEIGHTS = {A: 2.0, B: -1.0, C: 0.5, D: 1.0, E: 3.0}


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


class FakeModel:
    """Records every (input_ids, attention_mask) call."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.table = torch.zeros(16, dtype=torch.float64)
        for token, weight in WEIGHTS.items():
            self.table[token] = weight

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.calls.append((ids.clone(), mask.clone()))
        p1 = torch.sigmoid((self.table[ids] * mask).sum(-1))
        return torch.stack([1 - p1, p1], dim=-1)

    @property
    def rows(self) -> list[tuple[list[int], list[int]]]:
        return [(i.tolist(), m.tolist()) for ids, mask in self.calls for i, m in zip(ids, mask)]


def batch(*texts: list[int]) -> dict[str, torch.Tensor]:
    """[CLS] text [SEP], right-padded; content = the text's own positions."""
    n = max(len(t) for t in texts) + 2
    ids = torch.full((len(texts), n), PAD)
    content = torch.zeros(len(texts), n, dtype=torch.bool)
    for row, text in enumerate(texts):
        ids[row, : len(text) + 2] = torch.tensor([CLS, *text, SEP])
        content[row, 1 : len(text) + 1] = True
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "content": content}


def padded_scores(*rows: list[float]) -> torch.Tensor:
    """Scores at content positions; special and padding positions get a huge decoy value."""
    n = max(len(r) for r in rows) + 2
    out = torch.full((len(rows), n), 99.0, dtype=torch.float64)
    for i, r in enumerate(rows):
        out[i, 1 : len(r) + 1] = torch.tensor(r)
    return out


def run(model, texts, scores, targets, **options):
    options.setdefault("mask_id", MASK)
    options.setdefault("pad_id", PAD)
    return faithfulness(
        model,
        **batch(*texts),
        scores=padded_scores(*scores),
        targets=torch.tensor(targets),
        **options,
    )


# Text A B C D: logit 2 - 1 + 0.5 + 1 = 2.5. Scores rank A (0.9), D (0.4), C (0.1), B (-0.5).
TEXT = [A, B, C, D]
SCORES = [0.9, -0.5, 0.1, 0.4]
P0 = sig(2.5)


def test_budget_sizes_round_halves_up_with_at_least_one():
    assert [budget_size(b, 4) for b in (0.01, 0.05, 0.10, 0.20, 0.50)] == [1, 1, 1, 1, 2]
    assert [budget_size(b, 5) for b in (0.01, 0.10, 0.50, 1.0)] == [1, 1, 3, 5]
    assert budget_size(0.15, 10) == 2  # 1.4999999999999998 in floating point


def test_comprehensiveness_sufficiency_and_aopc_by_hand():
    (r,) = run(FakeModel(), [TEXT], [SCORES], [1], loo=False)
    # budgets 1/5/10/20% of 4 tokens hide or keep 1 token (A); 50% hides or keeps 2 (A, D)
    without_a, without_ad = sig(0.5), sig(-0.5)
    only_a, only_ad = sig(2.0), sig(3.0)
    assert r.probability == pytest.approx(P0)
    assert r.comprehensiveness[0.01] == pytest.approx(P0 - without_a)
    assert r.comprehensiveness[0.2] == pytest.approx(P0 - without_a)
    assert r.comprehensiveness[0.5] == pytest.approx(P0 - without_ad)
    assert r.sufficiency[0.1] == pytest.approx(P0 - only_a)
    assert r.sufficiency[0.5] == pytest.approx(P0 - only_ad)
    assert r.aopc_comprehensiveness == pytest.approx((4 * (P0 - without_a) + P0 - without_ad) / 5)
    assert r.aopc_sufficiency == pytest.approx((4 * (P0 - only_a) + P0 - only_ad) / 5)


def test_deletion_and_insertion_curves_areas_and_accuracy_by_hand():
    (r,) = run(FakeModel(), [TEXT], [SCORES], [1], labels=torch.tensor([1]), steps=4, loo=False)
    # steps=4 over 4 tokens: hide / reveal A, then D, then C, then B
    deletion = [sig(2.5), sig(0.5), sig(-0.5), sig(-1.0), sig(0.0)]
    insertion = [sig(0.0), sig(2.0), sig(3.0), sig(3.5), sig(2.5)]
    assert r.deletion_curve == pytest.approx(deletion)
    assert r.insertion_curve == pytest.approx(insertion)
    assert r.deletion_area == pytest.approx(
        0.25 * (deletion[0] / 2 + deletion[1] + deletion[2] + deletion[3] + deletion[4] / 2)
    )
    assert r.insertion_area == pytest.approx(
        0.25 * (insertion[0] / 2 + insertion[1] + insertion[2] + insertion[3] + insertion[4] / 2)
    )
    # gold class 1 is the argmax while the logit is positive; a 0.5/0.5 tie goes to class 0
    assert r.deletion_accuracy == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert r.insertion_accuracy == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_log_odds_hides_the_top_fifth():
    (r,) = run(FakeModel(), [TEXT], [SCORES], [1], loo=False)
    assert r.log_odds_20 == pytest.approx(math.log(sig(0.5)) - math.log(sig(2.5)))
    # explaining class 0 instead: its probability rises when A is hidden
    (r0,) = run(FakeModel(), [TEXT], [SCORES], [0], loo=False)
    assert r0.log_odds_20 == pytest.approx(math.log(1 - sig(0.5)) - math.log(1 - sig(2.5)))
    assert r0.log_odds_20 > 0


def test_log_odds_clamps_zero_probabilities():
    def certain(ids, mask):
        p1 = (ids == A).any(-1).double()  # 1 with A, exactly 0 without
        return torch.stack([1 - p1, p1], -1)

    (r,) = run(certain, [TEXT], [SCORES], [1], loo=False)
    assert r.log_odds_20 == pytest.approx(math.log(1e-12))


def test_leave_one_out_importance_and_kendall_tau():
    (r,) = run(FakeModel(), [TEXT], [SCORES], [1])
    # dropping A, B, C, D leaves logits 0.5, 3.5, 2.0, 1.5
    loo = [P0 - sig(0.5), P0 - sig(3.5), P0 - sig(2.0), P0 - sig(1.5)]
    assert r.loo_importance == pytest.approx(loo)
    assert r.kendall_loo == pytest.approx(1.0)  # A > D > C > B in both
    # swap C and D in the scores: 1 discordant pair of 6
    (swapped,) = run(FakeModel(), [TEXT], [[0.9, -0.5, 0.4, 0.1]], [1])
    assert swapped.kendall_loo == pytest.approx((5 - 1) / 6)


def test_kendall_with_abs_ranking_compares_magnitudes():
    (r,) = run(FakeModel(), [TEXT], [SCORES], [1], rank_by="abs")
    # |scores|: A .9 > B .5 > D .4 > C .1 ; |LOO|: A .302 > D .106 > B .047 > C .043
    # pairs: only (B, D) disagrees -> (5 - 1) / 6
    assert r.kendall_loo == pytest.approx(4 / 6)


def test_kendall_tau_b_by_hand():
    # pairs of [1,2,2,3] vs [1,2,3,3]: 4 concordant, one tie in each -> 4 / sqrt(5 * 5)
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1.0], [2.0]))
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_trapezoid_area():
    assert trapezoid_area([0, 1]) == pytest.approx(0.5)
    assert trapezoid_area([1, 1, 0]) == pytest.approx(0.75)


def test_rank_by_signed_and_abs_hide_different_tokens():
    scores = [0.9, -2.0, 0.1, 0.4]  # B has the largest magnitude but a negative sign
    model = FakeModel()
    (signed,) = run(model, [TEXT], [scores], [1], budgets=[0.2], steps=1, loo=False)
    assert signed.comprehensiveness[0.2] == pytest.approx(P0 - sig(0.5))  # A hidden
    (absolute,) = run(
        FakeModel(), [TEXT], [scores], [1], budgets=[0.2], steps=1, loo=False, rank_by="abs"
    )
    assert absolute.comprehensiveness[0.2] == pytest.approx(P0 - sig(3.5))  # B hidden
    assert ([CLS, MASK, B, C, D, SEP], [1] * 6) in model.rows


def test_ties_are_broken_by_position():
    (r,) = run(FakeModel(), [TEXT], [[0.5] * 4], [1], budgets=[0.2, 0.5], loo=False)
    assert r.comprehensiveness[0.2] == pytest.approx(P0 - sig(0.5))  # first token A
    assert r.comprehensiveness[0.5] == pytest.approx(P0 - sig(1.5))  # A and B


def test_ties_keep_position_order_in_long_texts():
    # 40 tokens, scores 0.5 0.2 0.5 0.9 repeated: the ten 0.9s rank first, in position order
    scores = [0.5, 0.2, 0.5, 0.9] * 10
    first = rank_units(np.array(scores), "signed")[:12].tolist()
    assert first == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 0, 2]
    model = FakeModel()
    run(model, [[C] * 40], [scores], [1], budgets=[0.2], steps=1, loo=False)
    # 20% of 40 = 8 tokens: the first eight 0.9s, at text positions 3, 7, ..., 31
    hidden = {tuple(i for i, t in enumerate(ids[1:-1]) if t == MASK) for ids, _ in model.rows}
    assert tuple(range(3, 32, 4)) in hidden


def test_perturb_each_kind_directly():
    ids = torch.tensor([[CLS, A, B, C, SEP, PAD]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    hide = torch.tensor([[False, True, False, True, False, False]])
    masked = perturb(ids, mask, hide, "mask", mask_id=MASK, pad_id=PAD)
    assert masked[0].tolist() == [[CLS, MASK, B, MASK, SEP, PAD]]
    assert masked[1].tolist() == [[1, 1, 1, 1, 1, 0]]
    padded = perturb(ids, mask, hide, "pad", mask_id=MASK, pad_id=PAD)
    assert padded[0].tolist() == [[CLS, PAD, B, PAD, SEP, PAD]]
    assert padded[1].tolist() == [[1, 0, 1, 0, 1, 0]]
    deleted = perturb(ids, mask, hide, "delete", mask_id=MASK, pad_id=PAD)
    assert deleted[0].tolist() == [[CLS, B, SEP, PAD, PAD, PAD]]
    assert deleted[1].tolist() == [[1, 1, 1, 0, 0, 0]]


@pytest.mark.parametrize(
    "perturbation, hidden_a_and_d",
    [
        ("mask", ([CLS, MASK, B, C, MASK, SEP], [1, 1, 1, 1, 1, 1])),
        ("pad", ([CLS, PAD, B, C, PAD, SEP], [1, 0, 1, 1, 0, 1])),
        ("delete", ([CLS, B, C, SEP, PAD, PAD], [1, 1, 1, 1, 0, 0])),
    ],
)
def test_what_predict_receives_per_perturbation(perturbation, hidden_a_and_d):
    model = FakeModel()
    (r,) = run(model, [TEXT], [SCORES], [1], perturbation=perturbation, loo=False)
    assert hidden_a_and_d in model.rows  # the 50% comprehensiveness input
    # with this position-blind model every perturbation zeroes the same weights
    assert r.comprehensiveness[0.5] == pytest.approx(P0 - sig(-0.5))
    assert r.sufficiency[0.5] == pytest.approx(P0 - sig(3.0))


@pytest.mark.parametrize("perturbation", ["mask", "pad", "delete"])
def test_special_tokens_and_padding_are_never_perturbed(perturbation):
    model = FakeModel()
    # decoy scores of 99 sit on [CLS], [SEP] and padding: they must not be ranked
    run(model, [TEXT, [E]], [SCORES, [1.0]], [1, 1], perturbation=perturbation)
    for ids, mask in model.rows:
        assert ids[0] == CLS and SEP in ids
        kept = [t for t, m in zip(ids, mask) if m]
        assert kept[0] == CLS and kept[-1] == SEP
        if perturbation == "mask":
            assert mask in ([1] * 6, [1, 1, 1, 0, 0, 0])


def test_word_level_hides_whole_words_scored_by_their_sum():
    model = FakeModel()
    inputs = batch(TEXT)
    # words: {A, B}, {C}, {D}; word scores 0.3 + 0.3 = 0.6, 0.5, 0.4
    (r,) = faithfulness(
        model,
        **inputs,
        scores=padded_scores([0.3, 0.3, 0.5, 0.4]),
        targets=torch.tensor([1]),
        word_ids=[[None, 0, 0, 1, 2, None]],
        level="word",
        mask_id=MASK,
        steps=3,
    )
    assert r.n_units == 3
    # 20% of 3 words -> 1 word: {A, B} goes, logit 0.5 + 1 = 1.5
    assert r.comprehensiveness[0.2] == pytest.approx(P0 - sig(1.5))
    assert r.deletion_curve == pytest.approx([sig(2.5), sig(1.5), sig(1.0), sig(0.0)])
    # LOO per word: drop {A, B}, {C}, {D}
    assert r.loo_importance == pytest.approx([P0 - sig(1.5), P0 - sig(2.0), P0 - sig(1.5)])
    for ids, _ in model.rows:
        assert (ids[1] == MASK) == (ids[2] == MASK)  # A and B together


def test_a_multi_text_batch_equals_texts_one_by_one_and_chunking_does_not_matter():
    texts = [TEXT, [E, B], [C, D, A, B, E]]
    scores = [SCORES, [0.2, 0.7], [0.1, -0.3, 0.5, 0.0, 0.9]]
    labels = torch.tensor([1, 0, 1])
    together = run(FakeModel(), texts, scores, [1, 1, 0], labels=labels, batch_size=64)
    chunked = run(FakeModel(), texts, scores, [1, 1, 0], labels=labels, batch_size=1)
    assert [r.to_dict() for r in chunked] == [r.to_dict() for r in together]
    for i, (text, s, target) in enumerate(zip(texts, scores, [1, 1, 0])):
        (alone,) = run(FakeModel(), [text], [s], [target], labels=labels[i : i + 1])
        expected = together[i].to_dict()
        for key, value in alone.to_dict().items():
            assert value == pytest.approx(expected[key], nan_ok=True), key


def test_variants_of_all_texts_share_predict_calls_in_chunks():
    texts, scores = [TEXT, [E, B], [C, D, A]], [SCORES, [0.2, 0.7], [0.1, -0.3, 0.5]]
    model = FakeModel()
    results = run(model, texts, scores, [1, 1, 1], batch_size=5)
    total = sum(r.forward_passes for r in results)
    assert len(model.rows) == total
    chunks = [5] * (total // 5) + ([total % 5] if total % 5 else [])
    assert [len(ids) for ids, _ in model.calls] == chunks
    model = FakeModel()
    run(model, texts, scores, [1, 1, 1], batch_size=64)
    assert len(model.calls) == 1 and len(model.rows) == total


def test_each_predict_call_drops_the_padding_its_rows_do_not_need():
    texts, scores = (
        [[E, B], TEXT, [C, D, A, B, E]],
        [[0.2, 0.7], SCORES, [0.1, -0.3, 0.5, 0.0, 0.9]],
    )
    model = FakeModel()
    results = run(model, texts, scores, [1, 1, 1], batch_size=4)
    for _, mask in model.calls:
        assert mask[:, -1].any(), "no call ends in a column that is padding in every row"
    assert min(ids.shape[1] for ids, _ in model.calls) == len(texts[0]) + 2
    alone = [run(FakeModel(), [t], [s], [1])[0] for t, s in zip(texts, scores)]
    for together, single in zip(results, alone):
        assert together.aopc_comprehensiveness == pytest.approx(single.aopc_comprehensiveness)


def test_erasure_aopc_many_equals_faithfulness_per_map_and_shares_variants():
    texts = [TEXT, [E, B], [C, D, A, B, E]]
    maps = [
        [SCORES, [0.2, 0.7], [0.1, -0.3, 0.5, 0.0, 0.9]],
        [[0.9, -0.5, 0.2, 0.4], [0.2, 0.7], [0.9, 0.5, -0.3, 0.0, 0.1]],  # shares top tokens
        [[-1.0, 1.0, 0.0, 0.5], [0.7, 0.2], [0.0, 0.1, 0.2, 0.3, 0.4]],
    ]
    targets = [1, 0, 1]
    model = FakeModel()
    many = erasure_aopc_many(
        model,
        **batch(*texts),
        score_sets=[padded_scores(*m) for m in maps],
        targets=torch.tensor(targets),
        mask_id=MASK,
    )
    assert set(many) == {"comprehensiveness", "sufficiency"}
    separate = 0
    for s, scores in enumerate(maps):
        one = FakeModel()
        results = run(one, texts, scores, targets, perturbation="mask")
        for b, result in enumerate(results):
            assert many["comprehensiveness"][s, b] == pytest.approx(result.aopc_comprehensiveness)
            assert many["sufficiency"][s, b] == pytest.approx(result.aopc_sufficiency)
        separate += len(one.rows)
    assert len(model.rows) < separate, "a perturbed input several maps share runs once"
    only = erasure_aopc_many(
        FakeModel(),
        **batch(*texts),
        score_sets=[padded_scores(*maps[0])],
        targets=torch.tensor(targets),
        mask_id=MASK,
        sufficiency=False,
    )
    assert set(only) == {"comprehensiveness"}
    np.testing.assert_allclose(only["comprehensiveness"][0], many["comprehensiveness"][0])


def test_forward_pass_count_by_hand():
    # 5 tokens ranked r1..r5, default budgets, steps=10. Distinct hidden sets:
    # nothing; top-1..top-5 (comprehensiveness k=1,3, deletion k=0..5, log-odds k=1);
    # all but top-k for k=1..4 (sufficiency, insertion; k=0 is "all" = top-5 again);
    # LOO adds {r2}, {r3}, {r4} ({r1} = top-1, {r5} = all but top-4).
    text, scores = [A, B, C, D, E], [0.5, 0.4, 0.3, 0.2, 0.1]
    model = FakeModel()
    (with_loo,) = run(model, [text], [scores], [1])
    assert with_loo.forward_passes == 1 + 5 + 4 + 3 == len(model.rows)
    assert len({tuple(ids) for ids, _ in model.rows}) == len(model.rows)
    (without,) = run(FakeModel(), [text], [scores], [1], loo=False)
    assert without.forward_passes == 10
    assert without.kendall_loo is None and without.loo_importance is None
    assert without.deletion_accuracy is None and without.insertion_accuracy is None


def test_bad_inputs_are_refused():
    inputs = batch(TEXT)
    good = {"scores": padded_scores(SCORES), "targets": torch.tensor([1]), "mask_id": MASK}
    with pytest.raises(InputError, match="perturbation"):
        faithfulness(FakeModel(), **inputs, **good, perturbation="blur")
    with pytest.raises(InputError, match="mask_id"):
        faithfulness(FakeModel(), **inputs, **{**good, "mask_id": None})
    with pytest.raises(InputError, match="pad_id"):
        faithfulness(FakeModel(), **inputs, **good, perturbation="delete")
    with pytest.raises(InputError, match="word_ids"):
        faithfulness(FakeModel(), **inputs, **good, level="word")
    with pytest.raises(InputError, match="no content"):
        no_content = {**inputs, "content": torch.zeros_like(inputs["content"])}
        faithfulness(FakeModel(), **no_content, **good)
    with pytest.raises(InputError, match="attention_mask is 0"):
        unattended = {**inputs, "attention_mask": torch.zeros_like(inputs["attention_mask"])}
        faithfulness(FakeModel(), **unattended, **good)
    with pytest.raises(InputError, match="targets"):
        faithfulness(FakeModel(), **inputs, **{**good, "targets": torch.tensor([2])})


def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    values = [0.1, 0.4, 0.35, 0.8, 0.2, 0.5, 0.45, 0.3]
    mean, low, high = bootstrap_ci(values, seed=7)
    assert mean == pytest.approx(sum(values) / len(values))
    assert low < mean < high
    assert min(values) <= low and high <= max(values)
    assert bootstrap_ci(values, seed=7) == (mean, low, high)
    assert bootstrap_ci(values, seed=8) != (mean, low, high)
    assert bootstrap_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))
    assert bootstrap_ci([1.0, float("nan"), 3.0], resamples=50)[0] == pytest.approx(2.0)


def test_summarise_means_over_texts():
    texts, scores = [TEXT, [E, B], [C, D, A]], [SCORES, [0.2, 0.7], [0.1, -0.3, 0.5]]
    results = run(FakeModel(), texts, scores, [1, 1, 1])
    summary = summarise(results, seed=3)
    assert summary == summarise(results, seed=3)
    mean, low, high = summary["aopc_comprehensiveness"]
    assert mean == pytest.approx(np.mean([r.aopc_comprehensiveness for r in results]))
    assert low <= mean <= high
    assert summary["comprehensiveness@0.5"][0] == pytest.approx(
        np.mean([r.comprehensiveness[0.5] for r in results])
    )
    assert {"deletion_area", "insertion_area", "log_odds_20", "kendall_loo"} <= set(summary)
    assert "forward_passes" not in summary and "deletion_curve" not in summary


# ---- plausibility ---------------------------------------------------------------------------

GOLD_SPANS = [(1, 4), (6, 8)]  # 10 words, gold words 1 2 3 6 7
GOLD = np.isin(np.arange(10), [1, 2, 3, 6, 7])
# top-5 words are 2 3 4 7 9 -> predicted spans (2,5), (7,8), (9,10)
PRED_SCORES = [0.0, 0.1, 0.9, 0.8, 0.7, 0.2, 0.3, 0.6, 0.05, 0.5]


def test_token_f1_by_hand():
    # top-5 hits 2, 3, 7 of 5 gold words: precision = recall = 3/5
    assert token_f1(PRED_SCORES, GOLD) == pytest.approx(0.6)
    # k = 2 -> words 2, 3, both gold: P = 1, R = 2/5 -> F1 = 2 * 0.4 / 1.4
    assert token_f1(PRED_SCORES, GOLD, k=2) == pytest.approx(0.8 / 1.4)
    assert math.isnan(token_f1(PRED_SCORES, np.zeros(10, dtype=bool)))


def test_iou_f1_by_hand():
    # (2,5) vs (1,4): IOU 2/4 = 0.5 -> match; (7,8) vs (6,8): 1/2 -> match; (9,10): 0
    # P = 2/3, R = 2/2 -> F1 = 2 * (2/3) / (5/3) = 0.8
    assert runs(np.isin(np.arange(10), [2, 3, 4, 7, 9])) == [(2, 5), (7, 8), (9, 10)]
    assert iou_f1(PRED_SCORES, GOLD_SPANS) == pytest.approx(0.8)
    # a stricter threshold drops both matches
    assert iou_f1(PRED_SCORES, GOLD_SPANS, threshold=0.6) == 0.0
    assert math.isnan(iou_f1(PRED_SCORES, []))


def test_auprc_by_hand():
    # ranked: gold, miss, gold -> precision 1 at recall 1/2, 2/3 at recall 1
    assert auprc([0.9, 0.8, 0.7, 0.6], [True, False, True, False]) == pytest.approx((1 + 2 / 3) / 2)
    # tied top pair (gold + miss) enters together: P 1/2 at R 1/2, then P 2/3 at R 1
    assert auprc([0.5, 0.5, 0.1], [True, False, True]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert auprc([0.3, 0.2, 0.1], [True, True, False]) == pytest.approx(1.0)


def test_simple_jsonl_fixture_maps_character_spans_to_words():
    examples = read_rationales(FIXTURES / "rationales.jsonl")
    assert len(examples) == 5
    first = examples[0]
    assert first.words == ["A", "gripping", "story", "with", "beautifully", "acted", "scenes."]
    assert first.label == "positive"
    assert first.spans == [(1, 2), (4, 6)]
    assert first.mask.tolist() == [False, True, False, False, True, True, False]
    # "fell flat" ends before the full stop but marks the word "flat."
    second = examples[1]
    assert [second.words[i] for i in np.flatnonzero(second.mask)] == ["dull", "fell", "flat."]


def test_eraser_fixture_reads_documents_and_evidence_tokens():
    examples = read_rationales(FIXTURES / "eraser_mini", split="val")
    assert [e.id for e in examples] == ["posR_900.txt", "negR_901.txt", "posR_902.txt"]
    first = examples[0]
    assert first.label == "POS"
    assert first.text.startswith("this film is a small miracle . the cast")
    gold_words = [first.words[i] for i in np.flatnonzero(first.mask)]
    assert gold_words == ["small", "miracle", "superb", "made", "me", "smile"]
    assert first.spans == [(4, 6), (10, 11), (14, 17)]


def test_word_scores_follow_character_spans_and_plausibility_combines():
    (example,) = [e for e in read_rationales(FIXTURES / "rationales.jsonl") if e.id == "toy-2"]
    # "The plot was dull and the jokes fell flat." with sub-word-like pieces
    text = example.text
    pieces = [
        (text.index("dull"), text.index("dull") + 4, 0.9),
        (text.index("fell"), text.index("fell") + 4, 0.5),
        (text.index("flat"), text.index("flat") + 4, 0.3),
        (text.index("flat") + 4, text.index("flat") + 5, 0.1),  # the full stop
        (text.index("plot"), text.index("plot") + 4, 0.2),
    ]
    scores = word_scores(example, pieces)
    assert scores.tolist() == pytest.approx([0, 0.2, 0, 0.9, 0, 0, 0, 0.5, 0.4])
    result = plausibility(scores, example)
    # gold = dull, fell, flat. (3 words, spans (3,4) and (7,9)); top-3 is exactly those
    assert result.k == 3
    assert result.token_f1 == pytest.approx(1.0)
    assert result.iou_f1 == pytest.approx(1.0)
    assert result.auprc == pytest.approx(1.0)
    with pytest.raises(InputError):
        plausibility(scores[:-1], example)


def test_bad_rationale_files_are_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "short text", "rationale": [[3, 99]]}\n')
    with pytest.raises(InputError, match="outside"):
        read_rationales(bad)
    with pytest.raises(InputError, match="no rationale file"):
        read_rationales(tmp_path / "missing.jsonl")
