"""Each supported family loads, resolves its LM head, and explains, on a tiny random config."""

from __future__ import annotations

import dataclasses
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


# Every method, with cheap options; each is explained on the model's own forward.
METHODS = [
    ("gradient", {}),
    ("input_x_gradient", {}),
    ("lrp", {}),
    ("integrated_gradients", {"n_steps": 4}),
    ("gradient_shap", {"n_samples": 3, "stdevs": 0.1}),
    ("dls", {"layer": "input", "rule": "attnlrp"}),
    ("dls", {"layer": 1}),
    ("occlusion", {}),
    ("lime", {"n_samples": 4}),
    ("kernel_shap", {"n_samples": 4}),
    ("shapley_sampling", {"n_permutations": 1}),
    ("attention", {}),
    ("rollout", {}),
    ("gradcam", {}),
    ("random", {}),
]
# The families whose classifier takes token_type_ids (GPT-2's embeds them through wte, the
# word-embedding module, so that module runs twice per forward).
TOKEN_TYPE_FAMILIES = ["bert", "roberta", "electra", "deberta-v2", "gpt2"]


@pytest.mark.parametrize(
    ("family", "token_types"),
    [(f, False) for f in FAMILIES] + [(f, True) for f in TOKEN_TYPE_FAMILIES],
)
def test_the_forward_under_every_method_is_the_models_own(tiny_dirs, family, token_types):
    """Each method reports the model's own logits, and every forward the Captum methods
    differentiate (the word embeddings of the content tokens swapped for the given ones) is the
    model's own forward at those word embeddings, computed here through ``inputs_embeds``.

    With token types on GPT-2 this failed: the swap also replaced ``wte(token_type_ids)``.
    Token types are set by hand (0 then 1), since the decoder families' tokenizer returns none.
    """
    from layersal.saliency import _common, run_method

    classifier_dir, mlm_dir = tiny_dirs[family]
    lm = layersal.load(classifier_dir, lm_head=mlm_dir)
    model = lm.model
    encoded = encode(
        lm.tokenizer,
        ["a gripping, beautifully acted film"],
        lm.max_length,
        model_input_names(model),
    )
    assert ("token_type_ids" in model_input_names(model)) == (family in TOKEN_TYPE_FAMILIES)
    if token_types:
        n = encoded.input_ids.shape[1]
        types = (torch.arange(n) >= n // 2).long().unsqueeze(0)
        encoded = dataclasses.replace(encoded, inputs={**encoded.inputs, "token_type_ids": types})
    else:
        encoded.inputs.pop("token_type_ids", None)
    with torch.no_grad():
        own = model(**encoded.inputs).logits.float()

    calls: list[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]] = []
    swapped = _common.EmbeddingForward.forward

    def spy(self, embeddings, *tensors):
        logits = swapped(self, embeddings, *tensors)
        inputs = dict(zip(self.names, tensors[:-1]))
        calls.append((embeddings.detach(), inputs, tensors[-1], logits.detach()))
        return logits

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_common.EmbeddingForward, "forward", spy)
        for method, options in METHODS:
            result = run_method(method, lm, encoded, None, options)
            torch.testing.assert_close(result.logits, own, msg=lambda m, n=method: f"{n}: {m}")
    assert len(calls) >= 5, "each Captum method ran its swapped forward"
    with torch.no_grad():
        for embeddings, inputs, content, logits in calls:
            ids = inputs.pop("input_ids")
            words = model.get_input_embeddings()(ids.expand(len(embeddings), -1))
            words = torch.where(content.unsqueeze(-1), embeddings, words)
            expected = model(inputs_embeds=words, **inputs).logits.float()
            torch.testing.assert_close(logits, expected)


def test_a_pass_captures_the_word_embeddings_of_the_input_ids_only(tiny_dirs):
    """GPT-2 embeds token types through ``wte`` too: the pass takes the call on the batch's
    ``input_ids`` (GPT-2 embeds a ``.view`` of them) as its leaf and leaves the token-type call
    in the graph (it was a detached leaf too); ``embedded`` and its gradient are the word
    embeddings' own. A block whose forward never embeds the given ids raises."""
    from layersal.passes import forward_backward, on_input_ids

    classifier_dir, mlm_dir = tiny_dirs["gpt2"]
    lm = layersal.load(classifier_dir, lm_head=mlm_dir)
    model, wte = lm.model, lm.model.get_input_embeddings()
    encoded = encode(lm.tokenizer, ["a gripping film"], lm.max_length, model_input_names(model))
    n = encoded.input_ids.shape[1]
    types = (torch.arange(n) >= n // 2).long().unsqueeze(0)
    encoded = dataclasses.replace(encoded, inputs={**encoded.inputs, "token_type_ids": types})

    outputs: list[torch.Tensor] = []  # what wte's calls return once every hook has run

    def record_after_the_pass_hooks(module, args):
        handles.append(wte.register_forward_hook(lambda m, a, out: outputs.append(out)))

    handles = [model.register_forward_pre_hook(record_after_the_pass_hooks)]
    try:
        result = forward_backward(model, encoded, family=lm.family, rule="attnlrp")
    finally:
        for handle in handles:
            handle.remove()
    assert len(outputs) == 2, "wte runs on the ids, then on the token types"
    assert outputs[0].grad_fn is None and outputs[0].requires_grad, "the pass's leaf"
    assert outputs[1].grad_fn is not None, "the token-type embeddings keep their graph"
    ids = encoded.input_ids
    torch.testing.assert_close(result.embedded, wte(ids).detach())
    words = wte(ids).detach().requires_grad_()
    logits = model(inputs_embeds=words, token_type_ids=types).logits
    (grad,) = torch.autograd.grad(logits[0, result.targets[0]], words)
    plain = forward_backward(model, encoded, family=lm.family, rule="gradient")
    torch.testing.assert_close(plain.embedded_grad, grad)
    with (
        pytest.raises(RuntimeError, match="never embedded"),
        on_input_ids(model, ids + 1, lambda out: out),
    ):
        model(**encoded.inputs)
