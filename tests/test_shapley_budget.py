"""Shapley values at a budget (``shapley_control_variate``, :mod:`layersal.shapley`): exact
values by hand, unbiasedness against every coalition, budget 0, passes, batches, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.errors import LayersalError
from layersal.evaluate import hide_ids, predictor
from layersal.saliency import run_method
from layersal.shapley import (
    adjusted_shapley,
    all_coalitions,
    exact_shapley,
    logistic_game_shapley,
    logistic_shapley,
    regression_shapley,
    sample_coalitions,
    size_distribution,
)

SHORT = "a gripping , beautifully acted film"
METHOD = "shapley_control_variate"


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(lm, texts):
    return encode(lm.tokenizer, list(texts), lm.max_length, model_input_names(lm.model))


def shapley_by_hand(lm, encoded, row, target):
    """Every coalition of the text's content tokens through the model, one at a time, and
    the textbook sum over orders' marginal contributions (factorial weights)."""
    positions = encoded.content[row].nonzero().flatten().tolist()
    n = len(positions)
    mask_id, _ = hide_ids(lm)
    predict = predictor(lm)
    ids, attention = encoded.input_ids[row : row + 1], encoded.attention_mask[row : row + 1]

    def value(kept: frozenset[int]) -> float:
        hidden = ids.clone()
        for i, p in enumerate(positions):
            if i not in kept:
                hidden[0, p] = mask_id
        return float(predict(hidden, attention)[0, target])

    values = {
        frozenset(c): value(frozenset(c))
        for size in range(n + 1)
        for c in itertools.combinations(range(n), size)
    }
    phi = []
    for i in range(n):
        total = 0.0
        for s, v in values.items():
            if i not in s:
                weight = math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
                total += weight * (values[s | {i}] - v)
        phi.append(total)
    return np.array(phi), positions


# ------------------------------------------------------------------------------ the maths


def test_exact_shapley_of_games_whose_values_are_known():
    masks = all_coalitions(4)
    weights = np.array([1.0, -2.0, 0.5, 3.0])
    additive = masks @ weights + 7.0  # a constant does not count
    assert np.allclose(exact_shapley(masks, additive), weights)
    unanimity = masks[:, [0, 2]].all(axis=1).astype(float)  # worth 1 when 0 and 2 both play
    assert np.allclose(exact_shapley(masks, unanimity), [0.5, 0, 0.5, 0])
    order = np.random.default_rng(0).permutation(len(masks))  # any order of the table
    assert np.allclose(exact_shapley(masks[order], unanimity[order]), [0.5, 0, 0.5, 0])


def test_coalitions_come_in_complementary_pairs_of_sampled_sizes():
    rng = np.random.default_rng(0)
    drawn = sample_coalitions(9, 4001, rng)
    assert drawn.shape == (4001, 9)
    assert (drawn[0:-1:2] == ~drawn[1::2]).all()
    sizes = drawn[::2].sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 8  # never the empty or the full coalition
    observed = np.bincount(sizes, minlength=10) / len(sizes)
    assert np.allclose(observed, size_distribution(9), atol=0.03)


def _game(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A nonlinear game on ``n`` players (a tanh of weights from ``rng`` and two
    interactions), at every coalition."""
    masks = all_coalitions(n)
    w = rng.normal(size=n)
    pairs = 2.0 * (masks[:, 0] & masks[:, 1]) - 1.5 * masks[:, 2:5].all(1)
    return masks, np.tanh(masks @ w + pairs)


@pytest.mark.parametrize("ridge", [None, 1.0])
def test_the_estimator_is_unbiased_and_its_error_falls_with_the_budget(ridge):
    rng = np.random.default_rng(3)
    n = 6
    masks, game = _game(n, rng)
    exact = exact_shapley(masks, game)
    table = {row.tobytes(): v for row, v in zip(masks, game)}
    surrogate = exact + rng.normal(scale=0.5, size=n)  # a poor surrogate still gives no bias
    errors = {}
    for count in (3, 9, 30):
        runs = []
        for seed in range(3000):
            drawn = sample_coalitions(n, count, np.random.default_rng([seed, count]))
            values = np.array([table[row.tobytes()] for row in drawn])
            estimate = adjusted_shapley(surrogate, game[0], game[-1], drawn, values, ridge=ridge)
            runs.append(estimate.values)
        runs = np.array(runs)
        standard_error = runs.std(axis=0) / math.sqrt(len(runs))
        assert (np.abs(runs.mean(axis=0) - exact) <= 4 * standard_error + 1e-12).all(), count
        errors[count] = float(((runs - exact) ** 2).sum(axis=1).mean())
    assert errors[30] < errors[9] < errors[3]


def test_the_regression_estimate_tends_to_the_shapley_values_and_keeps_efficiency():
    """Without a correction the fitted game's values are biased at a small budget, but they
    add up to v(full) - v(empty) at any budget, and tend to the exact values as the budget
    grows (KernelSHAP's limit), while a strong ridge keeps them at the rescaled surrogate."""
    n = 6
    masks, game = _game(n, np.random.default_rng(3))
    exact = exact_shapley(masks, game)
    table = {row.tobytes(): v for row, v in zip(masks, game)}
    surrogate = exact + np.random.default_rng(4).normal(scale=0.5, size=n)
    gain = game[-1] - game[0]
    errors = {}
    for count in (8, 64, 4096):
        runs = []
        for seed in range(40):
            drawn = sample_coalitions(n, count, np.random.default_rng([seed, count]))
            values = np.array([table[row.tobytes()] for row in drawn])
            estimate = regression_shapley(surrogate, game[0], game[-1], drawn, values, ridge=1.0)
            assert estimate.values.sum() == pytest.approx(gain, abs=1e-9)
            runs.append(estimate.values)
        errors[count] = float(((np.array(runs) - exact) ** 2).sum(axis=1).mean())
    assert errors[4096] < errors[64] < errors[8]
    assert errors[4096] < 1e-3 * float((exact**2).sum())
    drawn = sample_coalitions(n, 30, np.random.default_rng(0))
    values = np.array([table[row.tobytes()] for row in drawn])
    stiff = regression_shapley(surrogate, game[0], game[-1], drawn, values, ridge=1e9).values
    basis = np.stack([surrogate, np.ones(n)], axis=1)  # a multiple of it, plus an even share
    fit, *_ = np.linalg.lstsq(basis, stiff, rcond=None)
    assert np.allclose(basis @ fit, stiff, atol=1e-6) and fit[0] > 0


def test_the_regression_estimate_of_a_linear_game_from_its_own_values_is_exact():
    masks = all_coalitions(7)
    weights = np.random.default_rng(1).normal(size=7)
    game = masks @ weights + 0.3
    drawn = sample_coalitions(7, 10, np.random.default_rng(2))
    values = drawn @ weights + 0.3
    for surrogate in (weights, 2.5 * weights):  # any scale: the fit rescales it
        got = regression_shapley(surrogate, game[0], game[-1], drawn, values, ridge=4.0)
        assert np.allclose(got.values, weights)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("n", [7, 14])  # enumerated, and from permutations past 12 players
def test_the_logistic_games_shapley_values(n):
    rng = np.random.default_rng(n)
    logits = np.concatenate([[-0.5], rng.normal(scale=1.5, size=n)])
    masks = all_coalitions(n)
    exact = exact_shapley(masks, _sigmoid(logits[0] + masks @ logits[1:]))
    got = logistic_game_shapley(logits, 256, np.random.default_rng(0))
    assert got.sum() == pytest.approx(exact.sum(), abs=1e-9)  # efficiency, every order
    tolerance = 1e-12 if n <= 12 else 0.1 * np.abs(exact).max()
    assert np.abs(got - exact).max() <= tolerance
    if n > 12:
        closer = logistic_game_shapley(logits, 4096, np.random.default_rng(0))
        assert np.abs(closer - exact).max() < np.abs(got - exact).max()


def test_the_logistic_estimate_of_a_logistic_game_from_its_own_log_odds_is_exact():
    """A game that is linear in log-odds, with its own log-odds as surrogate: the fit leaves
    no residual, and the estimate is the game's exact Shapley values at a small budget."""
    n = 8
    masks = all_coalitions(n)
    weights = np.random.default_rng(5).normal(scale=1.2, size=n)
    game = _sigmoid(0.4 + masks @ weights)
    exact = exact_shapley(masks, game)
    drawn = sample_coalitions(n, 9, np.random.default_rng(6))
    values = _sigmoid(0.4 + drawn @ weights)
    rng = np.random.default_rng(0)
    got = logistic_shapley(weights, game[0], game[-1], drawn, values, ridge=4.0, rng=rng)
    assert np.allclose(got.values, exact, atol=1e-9)
    fitted_linearly = regression_shapley(weights, game[0], game[-1], drawn, values, ridge=4.0)
    assert np.abs(fitted_linearly.values - exact).max() > 1e-3  # the linear fit cannot
    with pytest.raises(ValueError, match="probabilities"):
        logistic_shapley(weights, 0.0, 2.0, drawn, values, ridge=4.0, rng=rng)


# ------------------------------------------------------------------------------ the method


def test_the_method_is_unbiased_for_the_exact_shapley_values_on_a_tiny_model(sharp_bert):
    encoded = batch(sharp_bert, [SHORT])
    target = int(predictor(sharp_bert)(encoded.input_ids, encoded.attention_mask)[0].argmax())
    exact, positions = shapley_by_hand(sharp_bert, encoded, 0, target)
    assert 5 <= len(positions) <= 8 and np.abs(exact).max() > 1e-3
    errors = {}
    for budget in (10, 30):  # below 2^n - 1: sampled, not enumerated
        runs = np.array(
            [
                run_method(METHOD, sharp_bert, encoded, None, {
                    "budget": budget, "surrogate": "input_x_gradient", "seed": seed,
                }).scores[0, positions].numpy()
                for seed in range(150)
            ]
        )  # fmt: skip
        standard_error = runs.std(axis=0) / math.sqrt(len(runs))
        assert (np.abs(runs.mean(axis=0) - exact) <= 4 * standard_error + 1e-5).all(), budget
        errors[budget] = float(((runs - exact) ** 2).sum(axis=1).mean())
    assert errors[30] < errors[10]


def test_every_coalition_that_fits_in_the_budget_gives_the_exact_values(sharp_bert):
    encoded = batch(sharp_bert, [SHORT])
    target = int(predictor(sharp_bert)(encoded.input_ids, encoded.attention_mask)[0].argmax())
    exact, positions = shapley_by_hand(sharp_bert, encoded, 0, target)
    budget = 2 ** len(positions) - 1
    for seed in (0, 1):
        got = run_method(
            METHOD, sharp_bert, encoded, None, {"budget": budget, "surrogate": "gradient",
                                                 "seed": seed}
        ).scores[0, positions]  # fmt: skip
        assert np.allclose(got.numpy(), exact, atol=1e-5)


def test_budget_zero_is_the_one_pass_default(sst2_tiny):
    texts = ["a gripping, beautifully acted film", "the plot is thin and the acting is wooden"]
    default = layersal.explain(texts, sst2_tiny)
    zero = layersal.explain(texts, sst2_tiny, method=METHOD, options={"budget": 0})
    for d, z in zip(default, zero):
        assert [w.score for w in d.words] == [w.score for w in z.words]
    sampled = layersal.explain(texts, sst2_tiny, method=METHOD, options={"budget": 8})
    assert [w.score for w in sampled[1].words] != [w.score for w in default[1].words]
    # the surrogate is settled once for the job, as the default is: its layer is concrete
    settled = sampled[0].options["surrogate_options"]
    assert (
        settled["layer"] not in ("auto", None)
        and settled["layer"] == zero[0].options.get("surrogate_options", settled)["layer"]
    )


LONG = "the plot meanders for two hours , the dialogue is clumsy and nobody in it ever seems awake"


@pytest.mark.parametrize(
    "variant", [{}, {"correction": False}, {"correction": False, "link": "logit"}]
)
def test_a_batch_gives_what_each_text_alone_gives(sharp_bert, variant):
    texts = [SHORT, "dull", "the plot meanders for two hours and the dialogue is clumsy", LONG]
    options = {"budget": 9, "surrogate": "input_x_gradient", "seed": 4, **variant}
    together = run_method(METHOD, sharp_bert, batch(sharp_bert, texts), None, options)
    for row, text in enumerate(texts):
        alone = run_method(METHOD, sharp_bert, batch(sharp_bert, [text]), None, options)
        n = alone.scores.shape[1]
        assert torch.allclose(together.scores[row, :n], alone.scores[0], atol=1e-5)


def test_passes_are_the_surrogate_and_the_masked_rows(sharp_bert):
    texts = [SHORT, "dull", "the plot meanders for two hours and the dialogue is clumsy"]
    encoded = batch(sharp_bert, texts)
    k = encoded.content.sum(-1).tolist()
    rows = []
    handle = sharp_bert.model.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(int(kwargs["input_ids"].shape[0])),
        with_kwargs=True,
    )
    try:
        got = run_method(METHOD, sharp_bert, encoded, None, {"budget": 12, "surrogate": "gradient"})
    finally:
        handle.remove()
    masked = sum(min(12, 2**n - 1) for n in k)  # a one-token text: its empty coalition only
    assert sum(rows) == len(texts) + masked
    assert got.forward_passes == 1 + math.ceil(masked / len(texts))
    assert got.backward_passes == 1


def test_a_chosen_target_is_the_class_whose_probability_is_shared_out(sharp_bert):
    encoded = batch(sharp_bert, [SHORT])
    probs = predictor(sharp_bert)(encoded.input_ids, encoded.attention_mask)[0]
    other = int(probs.argmin())
    exact, positions = shapley_by_hand(sharp_bert, encoded, 0, other)
    got = run_method(
        METHOD, sharp_bert, encoded, torch.tensor([other]),
        {"budget": 2 ** len(positions) - 1, "surrogate": "gradient"},
    )  # fmt: skip
    assert int(got.targets[0]) == other
    assert np.allclose(got.scores[0, positions].numpy(), exact, atol=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"budget": -1}, "budget must be an integer >= 0"),
        ({"budget": 2.5}, "budget"),
        ({"surrogate": METHOD}, "must be another method"),
        ({"surrogate": "nonsense"}, "unknown method 'nonsense'"),
        ({"surrogate": "gradient", "surrogate_options": {"span": 3}}, "has no option 'span'"),
        ({"ridge": 0}, "ridge must be a number > 0"),
        ({"perturbations_per_eval": 0}, "perturbations_per_eval"),
        ({"correction": "no"}, "option 'correction' takes bool"),
        ({"correction": False, "shrink": True}, "no sampled correction to shrink"),
        ({"correction": False, "ridge": None}, "give a ridge"),
        ({"correction": False, "link": "probit"}, "link must be one of identity, logit"),
        ({"link": "logit"}, "set correction=false"),
    ],
)
def test_bad_options_are_clear_errors(sst2_tiny, options, message):
    with pytest.raises(LayersalError, match=message):
        layersal.explain("fine", sst2_tiny, method=METHOD, options=options)
