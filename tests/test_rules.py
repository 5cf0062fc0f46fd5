"""Propagation rules: conservation per family, forward untouched, hooks scoped to one pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.families import family_for
from layersal.passes import forward_backward
from layersal.rules import RULE_SETS, propagation_rules
from layersal.saliency import run_method

from .conftest import FAMILIES, TOKENIZER_DIR, tiny_config

TEXT = "a gripping, beautifully acted film about nothing much"


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def bias_free(family: str, attn: str | None = None, **changes):
    """A tiny classifier of ``family`` with large random weights (so every non-linearity is
    far from linear) and every additive term zeroed: biases, LayerNorm betas, position and
    token-type embeddings. Relevance can then only go to the word embeddings."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(family)
    config.initializer_range = 0.3
    for key, value in changes.items():
        setattr(config, key, value)
    extra = {} if attn is None else {"attn_implementation": attn}
    model = AutoModelForSequenceClassification.from_config(config, **extra).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            additive = ("position_embeddings", "token_type", "wpe")
            if name.endswith("bias") or any(part in name for part in additive):
                parameter.zero_()
    return model


def _inputs(model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    names = model_input_names(model)
    if family_for(model.config).causal:  # GPT-2 would embed BERT's token types as words
        names -= {"token_type_ids"}
    return encode(tokenizer, [TEXT], 64, names)


def _input_relevance(model, rule: str) -> tuple[float, float]:
    """(sum of word-embedding relevance e . g~ over all positions, the explained logit)."""
    result = forward_backward(model, _inputs(model), family=family_for(model.config), rule=rule)
    relevance = float((result.embedded * result.embedded_grad).sum())
    return relevance, float(result.logits[0, result.targets[0]])


@pytest.mark.parametrize("family", FAMILIES)
def test_cp_id_is_exactly_conservative_without_additive_terms(family):
    """With no biases, LayerNorm's std constant, attention constant and f(x)/x on the
    activations make the network linear in its word embeddings along the backward path, so
    e . g~ summed over positions is the logit (float32 rounding: a relative 1e-4 is ample)."""
    model = bias_free(family)
    relevance, logit = _input_relevance(model, "cp_id")
    assert abs(logit) > 0.05, "the test model should produce a non-trivial logit"
    assert relevance == pytest.approx(logit, rel=1e-4, abs=1e-5)
    plain, _ = _input_relevance(model, "gradient")
    assert abs(plain - logit) > 1e-3, "plain gradient x input should not be conservative here"


@pytest.mark.parametrize("family", FAMILIES)
def test_attnlrp_loses_relevance_only_in_the_softmax(family, monkeypatch):
    """AttnLRP is not conservative by design: its softmax rule R_x = x * J^T g (AttnLRP,
    Prop. 3.1) leaves a bias term out. Every other step (std-constant LayerNorm, identity
    rule, the uniform 1/2 splits of QK^T and AV) is. So, with no additive terms, the input
    relevance plus what each softmax drops, 1/2 (s . g_s - x . g_x), is exactly the logit.

    DeBERTa's relative-position scores are linear in the query or the key: they get A.V's 1/2
    only, not the 1/4 of q.k (with 1/4 the equality failed there by 8% of the logit).
    """
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    softmax = torch.nn.functional.softmax

    def recording(x, *args, **kwargs):
        s = softmax(x, *args, **kwargs)
        seen.append((x, s))
        return s

    monkeypatch.setattr(torch.nn.functional, "softmax", recording)
    model = bias_free(family, attn="eager")
    embedded: list[torch.Tensor] = []
    handle = model.get_input_embeddings().register_forward_hook(
        lambda m, a, out: embedded.append(out.detach().requires_grad_()) or embedded[-1]
    )
    encoded = _inputs(model)
    try:
        with propagation_rules(model, family_for(model.config), "attnlrp"):
            logits = model(**encoded.inputs).logits
    finally:
        handle.remove()
    assert len(seen) == 2, "one softmax per layer of the 2-layer model"
    target = logits[0].argmax()
    xs, ss = [x for x, _ in seen], [s for _, s in seen]
    grads = torch.autograd.grad(logits[0, target], [embedded[0], *xs, *ss])
    relevance = float((embedded[0].detach() * grads[0]).sum())
    g_x, g_s = grads[1 : 1 + len(xs)], grads[1 + len(xs) :]
    dropped = sum(
        0.5 * float((s.detach() * gs).sum() - (x.detach() * gx).sum())
        for x, s, gx, gs in zip(xs, ss, g_x, g_s)
    )
    logit = float(logits[0, target].detach())
    assert abs(dropped) > 1e-3, "the softmaxes should drop some relevance in this model"
    assert relevance + dropped == pytest.approx(logit, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_rules_leave_the_forward_and_the_model_untouched(family):
    model = bias_free(family)
    encoded = _inputs(model)
    with torch.no_grad():
        plain = model(**encoded.inputs).logits
    model(**encoded.inputs, output_hidden_states=True)  # transformers adds its own hooks once
    before = _hooks(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for rule in RULE_SETS:
        result = forward_backward(model, encoded, family=family_for(model.config), rule=rule)
        assert torch.equal(result.logits, plain.float()), rule
        assert _hooks(model) == before, f"{rule} left hooks behind"
    assert not model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_hooks_are_removed_after_an_exception_inside_the_pass():
    model = bias_free("bert")
    before = _hooks(model)
    with (
        pytest.raises(RuntimeError, match="boom"),
        propagation_rules(model, family_for(model.config), "attnlrp"),
    ):
        assert _hooks(model) > before
        raise RuntimeError("boom")
    assert _hooks(model) == before


def _patched(model: torch.nn.Module) -> int:
    """Attention modules with a score method of their own (patched by the rules)."""
    return sum("disentangled_attention_bias" in vars(m) for m in model.modules())


def test_deberta_relative_position_scores_get_half_the_gradient_under_attnlrp(monkeypatch):
    """DeBERTa adds to q.k/s the terms q . k_pos(r) and k . q_pos(r), linear in q or in k; under
    AttnLRP they get A.V's 1/2 and no split of their own. Reference, built apart from the
    rules' code: the rules without the patch, and the class's score method returning
    ``2 f - f.detach()`` (the same values, twice the gradient into q and k through those
    terms, so 1/4 x 2 = 1/2). Before, those terms got 1/4 like q.k."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.deberta_v2 import modeling_deberta_v2 as deberta

    torch.manual_seed(0)
    config = tiny_config("deberta-v2")
    config.initializer_range = 0.3  # with biases: the general case
    model = AutoModelForSequenceClassification.from_config(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    encoded = encode(tokenizer, [TEXT, "dull and long"], 64, model_input_names(model))
    family = family_for(model.config)
    assert family is not None and family.propagation is not None
    unpatched = dataclasses.replace(
        family, propagation=dataclasses.replace(family.propagation, linear_scores=None)
    )

    def relevance(which) -> torch.Tensor:
        result = forward_backward(model, encoded, family=which, rule="attnlrp")
        return (result.embedded * result.embedded_grad).sum(-1) * encoded.attention_mask

    ours, without = relevance(family), relevance(unpatched)
    assert _patched(model) == 0, "the patch is undone after the pass"
    original = deberta.DisentangledSelfAttention.disentangled_attention_bias

    def doubled(self, *args, **kwargs):
        score = original(self, *args, **kwargs)
        return 2 * score - score.detach()

    monkeypatch.setattr(deberta.DisentangledSelfAttention, "disentangled_attention_bias", doubled)
    reference = relevance(unpatched)
    largest = float(reference.abs().max())
    assert float((without - reference).abs().max()) > 0.01 * largest, "the terms should matter"
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6 * largest)


def test_deberta_score_patch_is_scoped_to_the_pass():
    """The patched score method lives on the attention modules inside the block only, and is
    undone after an exception; rule sets that leave q and k alone, or freeze them, patch
    nothing."""
    from transformers.models.deberta_v2 import modeling_deberta_v2 as deberta

    original = deberta.DisentangledSelfAttention.disentangled_attention_bias
    model = bias_free("deberta-v2")
    family = family_for(model.config)
    for rule, patched in (("attnlrp", 2), ("cp_id", 0), ("ln", 0)):
        with propagation_rules(model, family, rule):
            assert _patched(model) == patched, rule
        assert _patched(model) == 0, rule
    with (
        pytest.raises(RuntimeError, match="boom"),
        propagation_rules(model, family, "attnlrp"),
    ):
        model(**_inputs(model).inputs)
        raise RuntimeError("boom")
    assert _patched(model) == 0 and _hooks(model) == _hooks(bias_free("deberta-v2"))
    assert deberta.DisentangledSelfAttention.disentangled_attention_bias is original


def test_gradient_rule_is_the_plain_gradient(bert_tiny):
    """``rule="gradient"`` installs nothing: the same numbers as autograd on the bare model."""
    encoded = encode(
        bert_tiny.tokenizer,
        [TEXT, "dull"],
        bert_tiny.max_length,
        model_input_names(bert_tiny.model),
    )
    result = forward_backward(bert_tiny.model, encoded, family=bert_tiny.family, rule="gradient")
    out = bert_tiny.model(**encoded.inputs, output_hidden_states=True)
    target = out.logits.gather(1, result.targets.unsqueeze(1)).sum()
    grads = torch.autograd.grad(target, list(out.hidden_states))
    for ours, theirs in zip(result.grads, grads):
        assert torch.equal(ours, theirs)
    # a layer fixed without a rule runs under cp_id, not the plain gradient
    default = layersal.explain(TEXT, bert_tiny, layer=1)
    explicit = layersal.explain(TEXT, bert_tiny, layer=1, rule="cp_id", decode=True)
    plain = layersal.explain(TEXT, bert_tiny, layer=1, rule="gradient", decode=True)
    assert default.scores == explicit.scores and default.options["rule"] == "cp_id"
    assert plain.scores != default.scores and plain.options["rule"] == "gradient"


def test_lrp_is_input_relevance_under_attnlrp_by_every_route(bert_tiny):
    encoded = encode(
        bert_tiny.tokenizer,
        [TEXT, "dull and long"],
        bert_tiny.max_length,
        model_input_names(bert_tiny.model),
    )
    lrp = run_method("lrp", bert_tiny, encoded, None, {})
    ixg = run_method("input_x_gradient", bert_tiny, encoded, None, {"rule": "attnlrp"})
    dls = run_method("dls", bert_tiny, encoded, None, {"layer": "input", "rule": "attnlrp"})
    plain = run_method("input_x_gradient", bert_tiny, encoded, None, {})
    torch.testing.assert_close(lrp.scores, ixg.scores)
    torch.testing.assert_close(lrp.scores, dls.scores, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(lrp.scores, plain.scores), "the rules should change the scores"
    assert dls.layers == [None, None] and (lrp.forward_passes, lrp.backward_passes) == (1, 1)


def test_a_family_without_a_propagation_map_is_refused_clearly(bert_tiny):
    with (
        pytest.raises(InputError, match="no propagation map for model type"),
        propagation_rules(bert_tiny.model, None, "cp"),
    ):
        pass
    with propagation_rules(bert_tiny.model, None, "gradient"):
        pass  # the plain gradient needs no map
    with pytest.raises(InputError, match="unknown rule"):
        layersal.explain(TEXT, bert_tiny, layer=1, rule="lrp-epsilon")


def test_a_part_the_rules_do_not_cover_is_refused():
    model = bias_free("deberta-v2", conv_kernel_size=3)
    with pytest.raises(InputError, match=r"encoder\.conv"):
        forward_backward(model, _inputs(model), family=family_for(model.config), rule="cp")


def test_rules_run_under_bf16_autocast(tiny_dirs):
    classifier_dir, mlm_dir = tiny_dirs["roberta"]
    lm = layersal.load(classifier_dir, lm_head=mlm_dir, precision="bf16")
    encoded = encode(lm.tokenizer, [TEXT], lm.max_length, model_input_names(lm.model))
    plain = run_method("dls", lm, encoded, None, {"layer": 1, "rule": "gradient"})
    ruled = run_method("dls", lm, encoded, None, {"layer": 1, "rule": "attnlrp"})
    torch.testing.assert_close(ruled.logits, plain.logits)
    assert torch.isfinite(ruled.scores).all() and not torch.equal(ruled.scores, plain.scores)
