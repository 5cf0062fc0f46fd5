"""Decoded Layer Saliency: maths on hand-made fixtures, and behaviour on a tiny model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import layersal
from layersal.decoding import LMHead, carry_saliency, decode_layer
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.passes import forward_backward
from layersal.saliency.dls import position_saliency

TEXTS = [
    "a gripping, beautifully acted film",
    "dull",
    "the plot meanders for two hours and the dialogue is unbelievably clumsy , yet the cast shines",
    "not bad",
]


def _one_hot_head(vocab: int = 6, scale: float = 10.0) -> LMHead:
    return LMHead(decoder=torch.eye(vocab) * scale, kind="embeddings")


def test_decoding_matrix_is_identity_when_each_position_decodes_to_itself():
    ids = torch.tensor([[0, 2, 3, 4, 1]])
    content = torch.tensor([[False, True, True, True, False]])
    hidden = torch.eye(6)[ids]
    out = decode_layer(_one_hot_head(), hidden, ids, content, tau=1, ranks=True)
    p_self = float(torch.softmax(torch.eye(6)[2] * 10, -1)[2])
    expected = torch.zeros(5, 5)
    expected[1, 1] = expected[2, 2] = expected[3, 3] = p_self
    torch.testing.assert_close(out.transfer[0], expected)
    assert float(out.coherence[0]) == pytest.approx(p_self)
    assert out.own_rank[0, 1:4].tolist() == [0, 0, 0]


def test_decoding_splits_repeated_tokens_and_applies_the_tau_cut():
    ids = torch.tensor([[2, 3, 2]])
    content = torch.ones(1, 3, dtype=torch.bool)
    hidden = torch.zeros(1, 3, 6)
    hidden[0, :, 2] = 2.0
    hidden[0, :, 3] = 1.0
    logits = hidden[0, 0] * 10
    p = torch.softmax(logits, -1)
    wide = decode_layer(_one_hot_head(), hidden, ids, content, tau=None)
    row = wide.transfer[0, 0]
    torch.testing.assert_close(row, torch.stack([p[2] / 2, p[3], p[2] / 2]))
    assert float(wide.coherence[0]) == pytest.approx(float(p[2] + p[3]), rel=1e-6)
    cut = decode_layer(_one_hot_head(), hidden, ids, content, tau=1)
    torch.testing.assert_close(
        cut.transfer[0, 0], torch.stack([p[2] / 2, torch.tensor(0.0), p[2] / 2])
    )
    uniform = decode_layer(_one_hot_head(), hidden, ids, content, tau=2, weights="uniform")
    torch.testing.assert_close(uniform.transfer[0, 0], torch.tensor([0.5, 1.0, 0.5]))


def test_decoding_in_chunks_equals_decoding_at_once():
    torch.manual_seed(0)
    head = LMHead(decoder=torch.randn(50, 8), bias=torch.randn(50), kind="mlm_head")
    ids = torch.randint(0, 50, (5, 7))
    content = torch.rand(5, 7) > 0.2
    hidden = torch.randn(5, 7, 8)
    whole = decode_layer(head, hidden, ids, content, tau=10, top_k=3, ranks=True)
    chunked = decode_layer(
        head, hidden, ids, content, tau=10, top_k=3, ranks=True, max_elements=50 * 3
    )
    for name in ("transfer", "coherence", "own_rank", "top_ids", "top_probs"):
        torch.testing.assert_close(getattr(whole, name), getattr(chunked, name))


def test_input_columns_only_decoding_carries_the_same_saliency():
    torch.manual_seed(1)
    head = LMHead(
        decoder=torch.randn(40, 6),
        bias=torch.randn(40),
        dense_weight=torch.randn(6, 6),
        dense_bias=torch.randn(6),
        activation="gelu",
        norm_weight=torch.rand(6) + 0.5,
        norm_bias=torch.randn(6),
        kind="mlm_head",
    )
    ids = torch.tensor([[0, 5, 7, 5, 9, 1, 0], [0, 3, 4, 1, 0, 0, 0]])
    content = torch.tensor([[0, 1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    hidden = torch.randn(2, 7, 6)
    s = torch.rand(2, 7) * content
    full = decode_layer(head, hidden, ids, content, tau=None)
    fast = decode_layer(head, hidden, ids, content, tau=None, coherence=False)
    assert fast.coherence is None and full.coherence is not None
    torch.testing.assert_close(carry_saliency(s, fast.transfer), carry_saliency(s, full.transfer))
    rows = fast.transfer.sum(-1)[content]
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_carry_saliency_renormalises_rows_by_hand():
    s = torch.tensor([[1.0, 2.0, 3.0]])
    transfer = torch.tensor([[[0.2, 0.2, 0.0], [0.0, 0.1, 0.3], [0.0, 0.0, 0.0]]])
    expected = torch.tensor([[0.5, 0.5 + 0.5, 1.5]])
    torch.testing.assert_close(carry_saliency(s, transfer), expected)


def test_position_saliency_variants_by_hand():
    grad = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    hidden = torch.tensor([[[1.0, 1.0], [-3.0, 1.0], [9.0, 9.0]]])
    real = torch.tensor([[True, True, False]])
    alpha = torch.tensor([0.5, 1.0])
    gradcam = hidden[0] @ alpha
    torch.testing.assert_close(
        position_saliency(grad, hidden, real, "gradcam", relu=False)[0],
        gradcam * torch.tensor([1.0, 1.0, 0.0]),
    )
    torch.testing.assert_close(
        position_saliency(grad, hidden, real, "gradcam", relu=True)[0],
        torch.tensor([1.5, 0.0, 0.0]),
    )
    torch.testing.assert_close(
        position_saliency(grad, hidden, real, "grad_x_act", relu=False)[0],
        torch.tensor([1.0, 2.0, 0.0]),
    )
    torch.testing.assert_close(
        position_saliency(grad, hidden, real, "grad_norm", relu=False)[0],
        torch.tensor([1.0, 2.0, 0.0]),
    )


def test_a_text_alone_and_in_a_padded_batch_get_the_same_scores(bert_tiny):
    settings = {"layer": "coherent", "layer_report": True}
    together = layersal.explain(TEXTS, bert_tiny, batch_size=len(TEXTS), **settings)
    for text, batched in zip(TEXTS, together):
        alone = layersal.explain(text, bert_tiny, batch_size=1, **settings)
        assert alone.layer == batched.layer
        assert [t.text for t in alone.tokens] == [t.text for t in batched.tokens]
        np.testing.assert_allclose(alone.scores, batched.scores, atol=1e-5, rtol=1e-4)
        for a, b in zip(alone.layers, batched.layers):
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=1e-4)
            assert a.coherence == pytest.approx(b.coherence, abs=1e-5)
        for label in alone.probabilities:
            assert alone.probabilities[label] == pytest.approx(
                batched.probabilities[label], abs=1e-5
            )


@pytest.mark.parametrize("rule", ["cp", "attnlrp"])
def test_rules_give_a_text_the_same_scores_alone_and_in_a_padded_batch(bert_tiny, rule):
    for layer in ("input", 1):
        together = layersal.explain(TEXTS, bert_tiny, batch_size=len(TEXTS), layer=layer, rule=rule)
        for text, batched in zip(TEXTS, together):
            alone = layersal.explain(text, bert_tiny, batch_size=1, layer=layer, rule=rule)
            np.testing.assert_allclose(alone.scores, batched.scores, atol=1e-5, rtol=1e-4)


def test_dls_costs_one_forward_and_one_backward_pass(bert_tiny):
    explanation = layersal.explain(TEXTS[0], bert_tiny)
    assert (explanation.forward_passes, explanation.backward_passes) == (1, 1)
    assert explanation.options["tau"] is None and explanation.options["saliency"] == "grad_x_act"
    assert explanation.options["relu"] is False
    assert "dls" in layersal.methods()


def test_explanations_are_deterministic(bert_tiny):
    first = layersal.explain(TEXTS, bert_tiny, layer=1)
    second = layersal.explain(TEXTS, bert_tiny, layer=1)
    assert [e.to_dict() for e in first] == [e.to_dict() for e in second]


def test_special_tokens_are_never_reported_and_offsets_point_into_the_text(bert_tiny):
    for explanation in layersal.explain(TEXTS, bert_tiny):
        pieces = bert_tiny.tokenizer.tokenize(explanation.text)
        assert [t.text for t in explanation.tokens] == pieces
        for token in explanation.tokens:
            assert explanation.text[token.start : token.end].lower() == token.text.removeprefix(
                "##"
            )
        for report in explanation.layers:
            assert len(report.scores) == len(pieces)


@pytest.mark.parametrize("rule", ["gradient", None])
def test_undecoded_scores_are_the_position_saliency(bert_tiny, rule):
    """Under the named rule set; a layer fixed without one gets ``cp_id``, not the plain
    gradient (which can flip a word's sign at a layer where the rules do not)."""
    text = TEXTS[2]
    explanation = layersal.explain(
        text, bert_tiny, layer=1, decode=False, saliency="grad_x_act", rule=rule
    )
    assert explanation.options["rule"] == (rule or "cp_id")
    encoded = encode(
        bert_tiny.tokenizer, [text], bert_tiny.max_length, model_input_names(bert_tiny.model)
    )
    result = forward_backward(
        bert_tiny.model, encoded, family=bert_tiny.family, rule=rule or "cp_id"
    )
    s = (result.grads[1][0] * result.hidden[1][0]).sum(-1)
    np.testing.assert_allclose(explanation.scores, s[1:-1].numpy(), rtol=1e-5, atol=1e-7)
    assert min(explanation.scores) < 0 < max(explanation.scores)


def test_decoded_scores_redistribute_the_position_saliency(bert_tiny):
    explanation = layersal.explain(TEXTS[0], bert_tiny, layer=0, tau=None, saliency="grad_norm")
    undecoded = layersal.explain(
        TEXTS[0], bert_tiny, layer=0, tau=None, saliency="grad_norm", decode=False
    )
    assert sum(explanation.scores) == pytest.approx(sum(undecoded.scores), rel=1e-4)
    assert explanation.scores != undecoded.scores


def test_coherent_layer_is_the_deepest_that_passes_the_rule(bert_tiny):
    for rho in (0.1, 0.5, 0.9, 1.0):
        for explanation in layersal.explain(
            TEXTS, bert_tiny, layer="coherent", rho=rho, layer_report=True
        ):
            base = explanation.layers[0].coherence
            passing = [
                r.layer
                for r in explanation.layers
                if r.has_position_gradient and r.coherence >= rho * base
            ]
            assert explanation.layer == passing[-1]


def test_negative_layers_count_from_the_top(bert_tiny):
    a = layersal.explain(TEXTS[0], bert_tiny, layer=-2)
    b = layersal.explain(TEXTS[0], bert_tiny, layer=bert_tiny.num_layers - 1)
    assert a.layer == b.layer == bert_tiny.num_layers - 1
    assert a.scores == b.scores


def test_last_layer_of_a_cls_classifier_is_reported_without_saliency(bert_tiny):
    explanation = layersal.explain(TEXTS[0], bert_tiny, layer=-1, layer_report=True)
    last = explanation.layers[-1]
    assert not last.has_position_gradient
    assert "no gradient" in last.note
    assert all(s == 0.0 for s in explanation.scores)
    assert explanation.layers[0].has_position_gradient


def test_target_by_name_or_index(bert_tiny):
    by_name = layersal.explain(TEXTS[0], bert_tiny, target="pos", layer=1, relu=False, decode=False)
    by_index = layersal.explain(TEXTS[0], bert_tiny, target=2, layer=1, relu=False, decode=False)
    other = layersal.explain(TEXTS[0], bert_tiny, target="neg", layer=1, relu=False, decode=False)
    assert by_name.target == by_index.target == "pos"
    assert by_name.scores == by_index.scores
    assert other.target == "neg" and other.scores != by_name.scores


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer": 7}, "out of range"),
        ({"layer": -9}, "out of range"),
        ({"layer": "deepest"}, "layer must be"),
        ({"target": 3}, "out of range"),
        ({"target": "happy"}, "unknown target"),
        ({"saliency": "lrp"}, "unknown saliency"),
        ({"method": "magic"}, "unknown method"),
        ({"n_steps": 50}, "has no option 'n_steps'"),
        ({"tau": 0}, "tau"),
        ({"word_aggregation": "median"}, "word aggregation"),
    ],
)
def test_bad_options_raise_clear_errors(bert_tiny, kwargs, message):
    with pytest.raises(InputError, match=message):
        layersal.explain(TEXTS[0], bert_tiny, **kwargs)


@pytest.mark.parametrize("bad", ["", "   \n\t", None])
def test_empty_texts_are_refused(bert_tiny, bad):
    with pytest.raises(InputError):
        layersal.explain(["fine", bad], bert_tiny)


def test_long_texts_are_truncated_with_a_warning_when_asked(bert_tiny):
    long_text = " ".join(["wonderful"] * 300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explanation = layersal.explain(long_text, bert_tiny, long_texts="truncate")
    assert explanation.truncated
    assert any(issubclass(w.category, layersal.TruncationWarning) for w in caught)
    assert len(explanation.tokens) == bert_tiny.max_length - 2
    assert not layersal.explain("short", bert_tiny).truncated


def test_a_fixed_layer_agrees_with_hiding_the_word():
    """README's example: at layer -2 of agnews-tiny, "Stocks" is the evidence for Business
    (hiding it takes Business from 0.81 to 0.04); the plain gradient scored it against."""
    model = layersal.load("agnews-tiny")
    e = layersal.explain("Stocks fell sharply", model, target="Business", layer=-2)
    scores = {w.text: w.score for w in e.words}
    assert max(scores, key=scores.get) == "Stocks" and scores["Stocks"] > 0
    assert e.options["rule"] == "cp_id"
