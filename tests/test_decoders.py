"""Decoder-only classifiers (GPT-2, Llama, Qwen2, Mistral, Gemma) and ModernBERT: padding,
pooling, next-token decoding, and a text alone equal to the text in a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layersal
from layersal.decoding import LMHead, decode_layer
from layersal.encoding import encode, model_input_names
from layersal.errors import ModelLoadError
from layersal.passes import forward_backward
from layersal.rules import rule_names

from .conftest import CAUSAL_FAMILIES

TEXTS = [
    "An unexpectedly touching story.",
    "dull",
    "the film was not bad at all; fine work, dull plot, great cast!",
]


@pytest.fixture(scope="module")
def decoders(tiny_dirs):
    return {
        family: layersal.load(*tiny_dirs[family][:1], lm_head=tiny_dirs[family][1])
        for family in [*CAUSAL_FAMILIES, "modernbert"]
    }


@pytest.mark.parametrize("family", [*CAUSAL_FAMILIES, "modernbert"])
def test_a_text_alone_and_in_a_padded_batch_get_the_same_explanation(decoders, family):
    lm = decoders[family]
    settings = {"layer": 1, "layer_report": True}
    together = layersal.explain(TEXTS, lm, batch_size=len(TEXTS), **settings)
    for text, batched in zip(TEXTS, together):
        alone = layersal.explain(text, lm, batch_size=1, **settings)
        assert [t.text for t in alone.tokens] == [t.text for t in batched.tokens]
        np.testing.assert_allclose(alone.scores, batched.scores, atol=1e-6, rtol=1e-4)
        for a, b in zip(alone.layers, batched.layers):
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-6, rtol=1e-4)
            assert a.coherence == pytest.approx(b.coherence, abs=1e-6)
            assert a.own_rank == b.own_rank
        for label, p in alone.probabilities.items():
            assert batched.probabilities[label] == pytest.approx(p, abs=1e-5)


@pytest.mark.parametrize("family", CAUSAL_FAMILIES)
def test_right_padding_pooling_at_the_last_real_token_and_no_score_on_padding(
    tiny_dirs, decoders, family
):
    from transformers import AutoTokenizer

    lm = decoders[family]
    users = AutoTokenizer.from_pretrained(tiny_dirs[family][0])
    assert users.padding_side == "left"  # as saved: layersal pads its own copy on the right
    assert lm.tokenizer.padding_side == "right" and lm.tokenizer is not users
    encoded = encode(lm.tokenizer, TEXTS, lm.max_length, model_input_names(lm.model))
    lengths = encoded.attention_mask.sum(-1)
    assert (encoded.attention_mask[:, 0] == 1).all()  # padding is on the right
    result = forward_backward(lm.model, encoded, family=lm.family)
    for row, length in enumerate(lengths.tolist()):
        last = result.grads[-1][row]
        # the classifier reads the last real token: the last layer's gradient is there only
        assert last[length - 1].abs().max() > 0
        assert torch.count_nonzero(last[: length - 1]) == 0
        # the gradient reaches the positions before it through the layers below
        assert result.grads[1][row, : length - 1].abs().sum(-1).gt(0).all()
        # padding never gets a gradient, so never a score
        assert torch.count_nonzero(result.grads[0][row, length:]) == 0
    for explanation, text in zip(layersal.explain(TEXTS, lm, layer=1), TEXTS):
        assert "".join(t.text for t in explanation.tokens).replace(" ", "") == text.replace(" ", "")
        # a piece that is only a space has an empty span once offsets are trimmed
        assert all(0 <= t.start <= t.end <= len(text) for t in explanation.tokens)


def test_a_decoder_without_a_padding_token_is_refused_clearly(tiny_dirs, tmp_path):
    import shutil

    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_dirs["gpt2"][0], folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.config.pad_token_id = None
    model.save_pretrained(folder)
    with pytest.raises(ModelLoadError, match=r"no padding token .*pad_token_id"):
        layersal.load(folder)


def test_an_object_with_a_left_padding_tokenizer_is_explained_and_left_as_it_was(tiny_dirs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["llama"][0])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["llama"][0])
    from_folder = layersal.explain(TEXTS, layersal.load(tiny_dirs["llama"][0]), layer=1)
    in_memory = layersal.explain(TEXTS, layersal.load(model, tokenizer=tokenizer), layer=1)
    for a, b in zip(from_folder, in_memory):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6, rtol=1e-4)
    assert tokenizer.padding_side == "left"


def _next_token_head(vocab: int = 6) -> LMHead:
    return LMHead(decoder=torch.eye(vocab) * 8.0, kind="lm_head", next_token=True)


def test_next_token_decoding_credits_seen_tokens_and_the_predicted_one_only():
    """Position i's state is set to predict t_(i+1); its decoded mass may go to t_0..t_(i+1)
    and never to a later token, and its own rank is the rank of t_(i+1)."""
    head = _next_token_head()
    ids = torch.tensor([[1, 2, 3, 4, 0]])
    content = torch.tensor([[True, True, True, True, False]])
    hidden = torch.zeros(1, 5, 6)
    for i, nxt in enumerate([2, 3, 4, 4]):
        hidden[0, i, nxt] = 1.0  # position 3 has no next token; it predicts its own
    decoded = decode_layer(head, hidden, ids, content, tau=None, ranks=True)
    transfer = decoded.transfer[0]
    for i in range(4):
        assert torch.count_nonzero(transfer[i, i + 2 :]) == 0, i  # nothing after t_(i+1)
        if i < 3:
            assert int(transfer[i, : i + 2].argmax()) == i + 1  # the predicted token wins
    assert decoded.own_rank is not None
    assert decoded.own_rank[0, :3].tolist() == [0, 0, 0]
    assert decoded.own_rank[0, 3].item() == -1  # the last position predicts no input token
    masked = LMHead(decoder=head.decoder, kind="mlm_head")
    plain = decode_layer(masked, hidden, ids, content, tau=None, ranks=True)
    assert plain.own_rank is not None and plain.own_rank[0, :3].tolist() != [0, 0, 0]
    assert torch.count_nonzero(plain.transfer[0, 0, 2:4]) > 0  # a masked head sees every token


def test_next_token_decoding_shares_duplicates_among_the_tokens_seen():
    """A token seen twice by position i splits its probability over both occurrences; an
    occurrence position i has not reached yet gets none (and takes no share)."""
    head = _next_token_head()
    ids = torch.tensor([[1, 2, 1, 3, 1]])
    content = torch.ones(1, 5, dtype=torch.bool)
    hidden = torch.zeros(1, 5, 6)
    hidden[0, :, 1] = 1.0  # every position predicts token 1
    transfer = decode_layer(head, hidden, ids, content, tau=None).transfer[0]
    # position 1 sees t_0..t_2: token 1 at 0 and 2, halves; the one at 4 is beyond it
    assert transfer[1, 0] == pytest.approx(float(transfer[1, 2]))
    assert transfer[1, 4] == 0
    # position 3 sees all five: token 1 three times, thirds
    assert transfer[3, 0] == pytest.approx(float(transfer[3, 4]))
    assert float(transfer[3, 0]) * 3 == pytest.approx(float(transfer[1, 0]) * 2, rel=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_auto_chooses_a_configuration_for_a_decoder(decoders, family, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path))
    lm = decoders[family]
    explanations = layersal.explain(TEXTS, lm, layer="auto")
    chosen = explanations[0].options["auto"]
    assert chosen["source"] == "calibrated" and chosen["n_texts"] == len(TEXTS)
    assert chosen["layer"] is None or 0 <= chosen["layer"] <= lm.num_layers  # None: input
    assert isinstance(chosen["decode"], bool) and chosen["rule"] in rule_names()
    assert all(e.options["auto"] == chosen for e in explanations)


def test_a_decoder_family_without_an_adapter_is_refused_clearly(tiny_dirs):
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForSequenceClassification

    config = Qwen3Config(
        vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, num_labels=2, pad_token_id=0,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["llama"][0])
    with pytest.raises(ModelLoadError, match=r"'qwen3' is a decoder-only model .* no adapter"):
        layersal.load(Qwen3ForSequenceClassification(config), tokenizer=tokenizer)


def test_a_padding_id_the_tokenizer_lacks_is_refused_clearly(tiny_dirs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["llama"][0])
    model.config.pad_token_id = 29999  # an embedding row the 400-token tokenizer never emits
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["llama"][0])
    with pytest.raises(ModelLoadError, match="token id 29999"):
        layersal.load(model, tokenizer=tokenizer)
