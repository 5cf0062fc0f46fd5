"""Each supported family loads, resolves its LM head, and explains, on a tiny random config."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import layersal
from layersal.encoding import encode, model_input_names

from .conftest import CAUSAL_FAMILIES, FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_lm_head_from_base_checkpoint_reproduces_language_model_logits(tiny_dirs, family):
    """The head built from the *ForMaskedLM / *ForCausalLM checkpoint gives that model's own
    logits from the last layer's residual stream (a pre-norm model's final norm included)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    classifier_dir, lm_dir = tiny_dirs[family]
    lm = layersal.load(classifier_dir, lm_head=lm_dir)
    assert lm.decoder == ("lm_head" if family in CAUSAL_FAMILIES else "mlm_head")
    assert lm.family is not None and lm.family.name == family
    kind = AutoModelForCausalLM if family in CAUSAL_FAMILIES else AutoModelForMaskedLM
    language_model = kind.from_pretrained(lm_dir).eval()
    encoded = encode(
        lm.tokenizer, ["decode me, please"], lm.max_length, model_input_names(language_model)
    )
    streams: list[torch.Tensor] = []
    if lm.family.final_norm is not None:
        language_model.get_submodule(lm.family.final_norm).register_forward_pre_hook(
            lambda module, args: streams.append(args[0])
        )
    with torch.no_grad():
        out = language_model(**encoded.inputs, output_hidden_states=True)
        ours = lm.lm_head.logits(streams[-1] if streams else out.hidden_states[-1])
    torch.testing.assert_close(ours, out.logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_explain_every_family(tiny_dirs, family):
    classifier_dir, mlm_dir = tiny_dirs[family]
    lm = layersal.load(classifier_dir, lm_head=mlm_dir)
    text = "An unexpectedly touching story."
    explanation = layersal.explain(text, lm, layer=1, layer_report=True)
    assert [w.text for w in explanation.words] == ["An", "unexpectedly", "touching", "story", "."]
    assert all(math.isfinite(t.score) for t in explanation.tokens)
    assert explanation.prediction in ("neg", "neutral", "pos")
    assert sum(explanation.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(explanation.layers) == lm.num_layers + 1
    assert all(0.0 <= r.coherence <= 1.0 + 1e-6 for r in explanation.layers)
    for rule in ("cp", "cp_id", "attnlrp"):
        ruled = layersal.explain(text, lm, layer="input", rule=rule)
        assert ruled.options["rule"] == rule and all(math.isfinite(s) for s in ruled.scores)
        assert ruled.prediction == explanation.prediction


def test_without_any_head_decodes_through_embeddings(tiny_dirs):
    classifier_dir, _ = tiny_dirs["bert"]
    lm = layersal.load(classifier_dir)
    assert lm.decoder == "embeddings"
    explanation = layersal.explain("fine", lm)
    assert explanation.decoder == "embeddings"
    embeddings = lm.model.get_input_embeddings().weight
    h = torch.randn(3, embeddings.shape[1])
    torch.testing.assert_close(lm.lm_head.logits(h), h @ embeddings.T.detach())


def test_head_inside_the_classifier_checkpoint_is_found(tiny_dirs, tmp_path):
    import shutil

    classifier_dir, mlm_dir = tiny_dirs["bert"]
    combined = tmp_path / "with-head"
    shutil.copytree(classifier_dir, combined)
    weights = load_file(str(combined / "model.safetensors"))
    head = {
        k: v
        for k, v in load_file(str(mlm_dir / "model.safetensors")).items()
        if k.startswith("cls.")
    }
    assert head, "the masked-LM checkpoint should hold cls.* tensors"
    save_file(
        {**weights, **{k: v.clone() for k, v in head.items()}}, str(combined / "model.safetensors")
    )
    own = layersal.load(combined)
    explicit = layersal.load(classifier_dir, lm_head=mlm_dir)
    assert own.decoder == "mlm_head"
    h = torch.randn(2, 32)
    torch.testing.assert_close(own.lm_head.logits(h), explicit.lm_head.logits(h))


def test_old_gamma_beta_layer_norm_names_are_read(tiny_dirs, tmp_path):
    import shutil

    classifier_dir, mlm_dir = tiny_dirs["bert"]
    old = tmp_path / "old-names"
    shutil.copytree(mlm_dir, old)
    weights = load_file(str(old / "model.safetensors"))
    renamed = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in weights.items()
    }
    save_file(renamed, str(old / "model.safetensors"))
    a = layersal.load(classifier_dir, lm_head=old)
    b = layersal.load(classifier_dir, lm_head=mlm_dir)
    h = torch.randn(2, 32)
    torch.testing.assert_close(a.lm_head.logits(h), b.lm_head.logits(h))
