"""Sequential Integrated Gradients: completeness per word, a hand-computed path integral, batch
equal to single, internal batches, passes and errors, on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import layersal
from layersal.errors import InputError
from layersal.saliency import method_cost, run_method
from layersal.saliency.sequential_ig import word_rows

from .test_baselines import TEXTS, assert_rel_close, batch, logits_of

NAME = "sequential_integrated_gradients"


pytestmark = pytest.mark.usefixtures("one_thread")


def _word_drops(lm, encoded, targets, token):
    """y_c(x) - y_c(x with the word replaced by ``token``), for every word of the batch, by
    plain forwards (no gradient anywhere)."""
    owners, positions = word_rows(encoded)
    full = logits_of(lm, encoded)
    drops = []
    for row, where in zip(owners, positions):
        ids = encoded.input_ids.clone()
        ids[row, where] = token
        drops.append(
            float(full[row, targets[row]] - logits_of(lm, encoded, ids)[row, targets[row]])
        )
    return owners, positions, drops


def test_words_are_the_metrics_words_and_cover_every_content_token(sharp_bert):
    encoded = batch(sharp_bert)
    owners, positions = word_rows(encoded)
    for row in range(len(TEXTS)):
        mine = [p for o, ps in zip(owners, positions) if o == row for p in ps]
        assert sorted(mine) == encoded.content[row].nonzero().flatten().tolist()
        words = {encoded.word_ids[row][p] for p in mine}
        assert len(words) == sum(o == row for o in owners)  # one path per word
    assert any(len(p) > 1 for p in positions)  # a word of several tokens ("meanders")


@pytest.mark.parametrize("baseline", ["mask", "pad"])
def test_each_words_tokens_add_up_to_the_drop_of_its_own_replacement(sharp_bert, baseline):
    """Completeness per word: the path moves one word only, so its tokens' scores sum to
    y_c(x) - y_c(x with that word at the baseline), up to the quadrature error (a finite
    difference of the model, set against the integral of its gradient)."""
    encoded = batch(sharp_bert)
    attribution = run_method(NAME, sharp_bert, encoded, None, {"n_steps": 50, "baseline": baseline})
    token = getattr(sharp_bert.tokenizer, f"{baseline}_token_id")
    owners, positions, drops = _word_drops(sharp_bert, encoded, attribution.targets, token)
    sums = [float(attribution.scores[r, p].sum()) for r, p in zip(owners, positions)]
    assert max(abs(d) for d in drops) > 0.1  # the test can see a wrong sum
    for total, drop in zip(sums, drops):
        assert abs(total - drop) <= 0.02 * abs(drop) + 1e-4, (total, drop)
    # and it is not plain IG: the sum over the text is not y_c(x) - y_c(all replaced)
    ig = run_method("integrated_gradients", sharp_bert, encoded, None, {"baseline": baseline})
    assert not torch.allclose(attribution.scores, ig.scores, rtol=0.05, atol=1e-3)


def test_tokens_equal_the_path_integral_by_autograd(sharp_bert):
    """Each token's score, token by token, against Gauss-Legendre quadrature of the path's
    gradient computed with plain autograd through ``inputs_embeds`` (no Captum)."""
    encoded = batch(sharp_bert, [TEXTS[2]])
    n_steps = 12
    attribution = run_method(NAME, sharp_bert, encoded, None, {"n_steps": n_steps})
    target = int(attribution.targets[0])
    embed = sharp_bert.model.get_input_embeddings()
    with torch.no_grad():
        x = embed(encoded.input_ids)
        mask = embed(torch.tensor([[sharp_bert.tokenizer.mask_token_id]]))[0, 0]
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas, steps = (nodes + 1) / 2, weights / 2
    inputs = {k: v for k, v in encoded.inputs.items() if k != "input_ids"}
    expected = torch.zeros(encoded.input_ids.shape[1])
    for _, where in zip(*word_rows(encoded)):
        base = x.clone()
        base[0, where] = mask
        total = torch.zeros_like(x)
        for alpha, step in zip(alphas, steps):
            point = (base + float(alpha) * (x - base)).requires_grad_()
            logit = sharp_bert.model(inputs_embeds=point, **inputs).logits[0, target]
            (grad,) = torch.autograd.grad(logit, point)
            total += float(step) * grad
        expected[where] = ((x - base) * total)[0, where].sum(-1)
    assert_rel_close(attribution.scores[0], expected, rel=1e-4)


def test_batch_equals_one_text_at_a_time(sharp_bert):
    together = layersal.explain(TEXTS, sharp_bert, method=NAME, n_steps=6)
    for text, e in zip(TEXTS, together):
        alone = layersal.explain(text, sharp_bert, method=NAME, n_steps=6)
        assert_rel_close([t.score for t in e.tokens], [t.score for t in alone.tokens])


def test_internal_batches_are_bounded_and_change_nothing(sharp_bert, monkeypatch):
    from layersal.saliency import sequential_ig

    encoded = batch(sharp_bert)
    whole = run_method(NAME, sharp_bert, encoded, None, {"n_steps": 5})
    width = encoded.input_ids.shape[1]
    monkeypatch.setattr(sequential_ig, "IG_TOKEN_BUDGET", 4 * width)
    rows_seen: list[int] = []
    layer = sharp_bert.model.bert.encoder.layer[0]
    hook = layer.register_forward_hook(lambda module, args, out: rows_seen.append(args[0].shape[0]))
    try:
        bounded = run_method(NAME, sharp_bert, encoded, None, {"n_steps": 5})
    finally:
        hook.remove()
    n_words = len(word_rows(encoded)[0])
    assert max(rows_seen[1:]) <= 4  # after the prediction, at most 4 rows per model pass
    assert sum(rows_seen) == len(TEXTS) + 5 * n_words  # the prediction, then 5 steps a word
    assert_rel_close(bounded.scores, whole.scores)
    explicit = run_method(NAME, sharp_bert, encoded, None, {"n_steps": 5, "internal_batch_size": 3})
    assert_rel_close(explicit.scores, whole.scores)


def test_passes_are_steps_per_word_and_the_declared_cost_bounds_them(bert_tiny):
    encoded = batch(bert_tiny)
    attribution = run_method(NAME, bert_tiny, encoded, None, {"n_steps": 4})
    n_words = len(word_rows(encoded)[0])
    assert attribution.forward_passes == 1 + math.ceil(4 * n_words / len(TEXTS))
    assert attribution.backward_passes == math.ceil(4 * n_words / len(TEXTS))
    for row in range(len(TEXTS)):
        k = int(encoded.content[row].sum())
        words = sum(o == row for o in word_rows(encoded)[0])
        assert 1 + 4 * words <= method_cost(NAME, {"n_steps": 4}, k) == 1 + 4 * k


def test_an_explicit_target_is_explained(sharp_bert):
    encoded = batch(sharp_bert)
    predicted = run_method(NAME, sharp_bert, encoded, None, {"n_steps": 8})
    other = (predicted.targets + 1) % 3
    explicit = run_method(NAME, sharp_bert, encoded, other, {"n_steps": 8})
    assert explicit.targets.tolist() == other.tolist()
    owners, positions, drops = _word_drops(
        sharp_bert, encoded, other, sharp_bert.tokenizer.mask_token_id
    )
    sums = [float(explicit.scores[r, p].sum()) for r, p in zip(owners, positions)]
    np.testing.assert_allclose(sums, drops, rtol=0.05, atol=2e-3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_steps": 0}, "n_steps must be an integer >= 1"),
        ({"baseline": "zero"}, "baseline must be one of"),
        ({"internal_batch_size": 0}, "internal_batch_size must be an integer >= 1"),
    ],
)
def test_bad_options_are_one_clear_error(bert_tiny, options, message):
    with pytest.raises(InputError, match=message):
        layersal.explain(TEXTS[0], bert_tiny, method=NAME, **options)
