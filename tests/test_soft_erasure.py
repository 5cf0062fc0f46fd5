"""Soft comprehensiveness and sufficiency: limits worked out by hand, seeding, and the
embedding-level predict of a real (tiny) model.

The fake model is the additive one of ``test_metrics``, seen at its word embeddings: token
``t``'s embedding is ``width`` copies of ``weight[t] / width``, so keeping a share ``k`` of its
elements adds ``k * weight[t]`` to the logit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.evaluate import embedding_predictor, predictor, score_batch
from layersal.metrics import faithfulness, faithfulness_many
from layersal.soft_erasure import (
    EmbeddingPredict,
    keep_probabilities,
    noise,
    soft_importance,
)

from .test_metrics import MASK, WEIGHTS, A, B, C, D, E, FakeModel, batch, padded_scores

TEXT = [A, B, C, D]  # weights 2, -1, 0.5, 1: logit 2.5


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


class FakeEmbeddingModel:
    """The fake additive model at its word embeddings; records the rows it is given."""

    def __init__(self, width: int = 8) -> None:
        self.width = width
        self.table = torch.zeros(16, dtype=torch.float64)
        for token, weight in WEIGHTS.items():
            self.table[token] = weight
        self.rows = 0

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        assert keep.shape == (*ids.shape, self.width)
        self.rows += len(ids)
        share = keep.double().mean(-1)  # the share of each token's elements kept
        p1 = torch.sigmoid((self.table[ids] * share * mask).sum(-1))
        return torch.stack([1 - p1, p1], dim=-1)


def soft_run(texts, scores, *, width=8, **options):
    fake = FakeEmbeddingModel(width)
    options.setdefault("mask_id", MASK)
    options.setdefault("parts", ("comprehensiveness", "soft"))
    results = faithfulness(
        FakeModel(),
        **batch(*texts),
        scores=padded_scores(*scores),
        targets=torch.tensor([1] * len(texts)),
        soft_predict=EmbeddingPredict(width, fake),
        **options,
    )
    return results, fake


def test_importance_is_the_score_over_the_largest_one():
    scores = np.array([2.0, -1.0, 0.5, 0.0])
    assert soft_importance(scores, "signed").tolist() == [1.0, 0.0, 0.25, 0.0]
    assert soft_importance(scores, "abs").tolist() == [1.0, 0.5, 0.25, 0.0]
    assert soft_importance(10 * scores, "signed").tolist() == [1.0, 0.0, 0.25, 0.0]
    assert soft_importance(np.array([-1.0, -2.0]), "signed").tolist() == [0.0, 0.0]
    assert soft_importance(np.zeros(3), "abs").tolist() == [0.0, 0.0, 0.0]
    units = [np.array([1]), np.array([2, 3])]
    importance = np.array([0.25, 1.0])
    assert keep_probabilities(5, units, importance, "comprehensiveness").tolist() == [
        1.0, 0.75, 0.0, 0.0, 1.0,
    ]  # fmt: skip
    assert keep_probabilities(5, units, importance, "sufficiency").tolist() == [
        1.0, 0.25, 1.0, 1.0, 1.0,
    ]  # fmt: skip


def test_an_importance_of_zero_or_one_hides_nothing_or_everything_by_hand():
    # A and D score highest (importance 1), B and C score at most 0 (importance 0)
    (r,), _ = soft_run([TEXT], [[1.0, -0.5, 0.0, 1.0]], parts=("soft",))
    p0 = sig(2.5)
    assert r.soft_comprehensiveness == pytest.approx(p0 - sig(-1 + 0.5))  # A and D dropped
    assert r.soft_sufficiency == pytest.approx(p0 - sig(2 + 1))  # only A and D left
    assert math.isnan(r.aopc_comprehensiveness)  # a part not asked for


def test_all_zero_importance_leaves_the_input_unchanged_for_comprehensiveness():
    for scores in ([0.0, 0.0, 0.0, 0.0], [-1.0, -0.5, -2.0, -0.1]):
        (r,), fake = soft_run([TEXT], [scores], parts=("soft",))
        assert r.soft_comprehensiveness == 0.0
        assert r.soft_sufficiency == pytest.approx(sig(2.5) - sig(0.0))  # every word dropped
        assert fake.rows == 1, "the unchanged input needs no soft pass; sufficiency one"
        assert r.forward_passes == 2  # the original, and sufficiency's input


def test_a_partial_importance_keeps_that_share_of_the_embedding_in_expectation():
    # importance: A 1, B 0 (negative), C 0.25, D 0.5; a very wide embedding averages the draws
    (r,), _ = soft_run([TEXT], [[2.0, -1.0, 0.5, 1.0]], width=200_000)
    p0 = sig(2.5)
    comp_logit = 0 * 2 + 1 * -1 + 0.75 * 0.5 + 0.5 * 1
    suff_logit = 1 * 2 + 0 * -1 + 0.25 * 0.5 + 0.5 * 1
    assert r.soft_comprehensiveness == pytest.approx(p0 - sig(comp_logit), abs=2e-3)
    assert r.soft_sufficiency == pytest.approx(p0 - sig(suff_logit), abs=2e-3)


def test_soft_metrics_are_seeded_and_do_not_depend_on_the_batch():
    scores = [0.3, 0.9, 0.5, 0.1]
    (alone,), _ = soft_run([TEXT], [scores])
    (again,), _ = soft_run([TEXT], [scores])
    assert again.soft_comprehensiveness == alone.soft_comprehensiveness
    assert again.soft_sufficiency == alone.soft_sufficiency
    # the same text behind a longer one: another row, more padding, the same draws
    (_, batched), _ = soft_run([[E, A, B, C, D, E], TEXT], [[1, 1, 1, 1, 1, 1], scores])
    assert batched.soft_comprehensiveness == pytest.approx(alone.soft_comprehensiveness)
    assert batched.soft_sufficiency == pytest.approx(alone.soft_sufficiency)
    (other,), _ = soft_run([TEXT], [scores], seed=1)
    assert (other.soft_comprehensiveness, other.soft_sufficiency) != (
        alone.soft_comprehensiveness,
        alone.soft_sufficiency,
    )


def test_samples_average_their_draws_and_count_their_passes():
    scores = [0.3, 0.9, 0.5, 0.1]
    (one,), _ = soft_run([TEXT], [scores], parts=("soft",))
    (three,), fake = soft_run([TEXT], [scores], parts=("soft",), soft_samples=3)
    assert fake.rows == 6 and three.forward_passes == 1 + 6
    ids = batch(TEXT)["input_ids"][0].numpy()
    draws = [noise(ids, 0, s, 8) for s in range(3)]
    importance = np.array([0.3, 0.9, 0.5, 0.1]) / 0.9
    weights = np.array([WEIGHTS[t] for t in TEXT])
    kept = [
        sig(float(((d[1:5] < (1 - importance)[:, None]).mean(1) * weights).sum())) for d in draws
    ]
    assert three.soft_comprehensiveness == pytest.approx(sig(2.5) - float(np.mean(kept)))
    assert draws[0].tolist() == noise(ids, 0, 0, 8).tolist()  # the first sample is one's draw
    kept_one = sig(float(((draws[0][1:5] < (1 - importance)[:, None]).mean(1) * weights).sum()))
    assert one.soft_comprehensiveness == pytest.approx(sig(2.5) - kept_one)


def test_maps_with_the_same_importance_share_their_soft_passes():
    fake = FakeEmbeddingModel()
    scores = padded_scores([0.3, 0.9, 0.5, 0.1])
    results = faithfulness_many(
        FakeModel(),
        **batch(TEXT),
        score_sets=[scores, 2 * scores],
        targets=torch.tensor([1]),
        mask_id=MASK,
        parts=("soft",),
        soft_predict=EmbeddingPredict(8, fake),
    )
    assert fake.rows == 2
    assert results[0][0].soft_comprehensiveness == results[1][0].soft_comprehensiveness


def test_soft_part_errors():
    with pytest.raises(InputError, match="soft_predict"):
        faithfulness(
            FakeModel(),
            **batch(TEXT),
            scores=padded_scores([1.0, 0.0, 0.0, 0.0]),
            targets=torch.tensor([1]),
            mask_id=MASK,
            parts=("soft",),
        )
    with pytest.raises(InputError, match="soft_samples"):
        soft_run([TEXT], [[1.0, 0.0, 0.0, 0.0]], soft_samples=0)


def test_the_embedding_predict_scales_the_word_embeddings_of_a_real_model(bert_tiny):
    texts = ["a gripping, beautifully acted film", "dull"]
    encoded = encode(
        bert_tiny.tokenizer, texts, bert_tiny.max_length, model_input_names(bert_tiny.model)
    )
    soft = embedding_predictor(bert_tiny)
    ids, mask = encoded.input_ids, encoded.attention_mask
    assert soft.width == bert_tiny.model.config.hidden_size
    ones = torch.ones(*ids.shape, soft.width)
    torch.testing.assert_close(soft.predict(ids, mask, ones), predictor(bert_tiny)(ids, mask))
    keep = ones.clone()
    keep[0, 2] = 0.0  # the second word of the first text gone
    keep[1, 1, ::2] = 0.0  # half of "dull"
    with torch.no_grad():
        embedded = bert_tiny.model.get_input_embeddings()(ids) * keep
        expected = torch.softmax(
            bert_tiny.model(inputs_embeds=embedded, attention_mask=mask).logits, -1
        )
    torch.testing.assert_close(soft.predict(ids, mask, keep), expected)


def test_score_batch_adds_the_soft_part(sst2_tiny):
    texts = ["not bad at all", "an utter waste of a fine premise"]
    encoded = encode(
        sst2_tiny.tokenizer, texts, sst2_tiny.max_length, model_input_names(sst2_tiny.model)
    )
    scores = torch.rand(encoded.input_ids.shape, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 0])
    plain = score_batch(sst2_tiny, encoded, scores, targets, loo=False)
    soft = score_batch(sst2_tiny, encoded, scores, targets, loo=False, soft=True)
    again = score_batch(sst2_tiny, encoded, scores, targets, loo=False, soft=True)
    assert all(math.isnan(r.soft_comprehensiveness) for r in plain)
    for p, s, a in zip(plain, soft, again):
        assert s.aopc_comprehensiveness == p.aopc_comprehensiveness
        assert s.forward_passes == p.forward_passes + 2
        assert (s.soft_comprehensiveness, s.soft_sufficiency) == (
            a.soft_comprehensiveness,
            a.soft_sufficiency,
        )
    zero = score_batch(sst2_tiny, encoded, torch.zeros_like(scores), targets, parts=("soft",))
    assert [r.soft_comprehensiveness for r in zero] == [0.0, 0.0]
