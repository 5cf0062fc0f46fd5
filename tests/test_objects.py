"""Models given as objects in memory: a classifier with its tokenizer, a pipeline, an LM-head
object. They give what loading their folder gives, and are left exactly as they were."""

from __future__ import annotations

import hashlib

import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

import layersal
import layersal.models
from layersal.errors import ModelLoadError
from layersal.saliency.auto_store import tensors_digest

TEXT = "a gripping, beautifully acted film"


def _objects(folder):
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(folder)


def _state(model) -> tuple:
    """Everything about a model object that explaining it must not change."""
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return (
        weights.hexdigest(),
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad is None for p in model.parameters()],
        {p.dtype for p in model.parameters()},
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        sum(len(m._backward_hooks) for m in model.modules()),
    )


@pytest.mark.parametrize("rule", ["gradient", "cp_id"])
def test_an_object_explains_as_its_folder_does(tiny_dirs, rule):
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    model, tokenizer = _objects(classifier_dir)
    head = AutoModelForMaskedLM.from_pretrained(mlm_dir, dtype=torch.float32)
    from_folder = layersal.load(classifier_dir, lm_head=mlm_dir)
    from_objects = layersal.load(model, lm_head=head, tokenizer=tokenizer)
    assert from_objects.model is model and from_objects.tokenizer is tokenizer
    assert from_objects.decoder == from_folder.decoder == "mlm_head"
    assert torch.equal(from_objects.lm_head.decoder, from_folder.lm_head.decoder)
    options = {"layer": 1, "rule": rule, "decode": True, "layer_report": True}
    a = layersal.explain(TEXT, from_folder, **options)
    b = layersal.explain(TEXT, from_objects, **options)
    assert [t.text for t in a.tokens] == [t.text for t in b.tokens]
    assert [t.score for t in b.tokens] == pytest.approx([t.score for t in a.tokens], abs=1e-5)
    assert [r.coherence for r in b.layers] == pytest.approx([r.coherence for r in a.layers])


def test_explaining_an_object_leaves_it_as_it_was(tiny_dirs):
    classifier_dir, _ = tiny_dirs["bert"]
    model, tokenizer = _objects(classifier_dir)
    model.train()
    model.bert.encoder.layer[0].eval()  # a mixed state, restored module by module
    model.classifier.weight.requires_grad_(False)
    with torch.no_grad():  # transformers adds its own output-recording hooks on first use
        model(**tokenizer([TEXT], return_tensors="pt"), output_hidden_states=True)
    before = _state(model)
    lm = layersal.load(model, tokenizer=tokenizer)
    for method in ("dls", "gradient", "integrated_gradients", "occlusion"):
        layersal.explain([TEXT, "dull"], lm, method=method)
    layersal.explain(TEXT, lm, layer=1, rule="attnlrp", layer_report=True)
    assert _state(model) == before


def test_a_pipeline_is_explained_directly(tiny_dirs):
    classifier_dir, _ = tiny_dirs["bert"]
    model, tokenizer = _objects(classifier_dir)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer)
    explanation = layersal.explain(TEXT, classify)
    assert explanation.prediction == classify(TEXT)[0]["label"]
    assert explanation.words and explanation.model == str(classifier_dir)
    assert explanation.decoder == "embeddings"  # its folder holds no masked-LM head
    bundled, bundled_tokenizer = _objects(layersal.checkpoints.named_models()["sst2-tiny"])
    classify = pipeline("text-classification", model=bundled, tokenizer=bundled_tokenizer)
    with_head = layersal.explain(TEXT, classify)
    assert with_head.decoder == "mlm_head"  # the head saved in the model's own folder


def test_an_fp16_object_keeps_its_dtype(tiny_dirs):
    classifier_dir, _ = tiny_dirs["bert"]
    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir, dtype=torch.float16)
    explanation = layersal.explain(TEXT, model, layer=1)  # tokenizer from its folder
    assert all(torch.isfinite(torch.tensor(t.score)) for t in explanation.tokens)
    assert model.dtype == torch.float16


def test_the_content_hash_follows_the_weights_in_memory(tiny_dirs):
    classifier_dir, _ = tiny_dirs["bert"]
    model, _ = _objects(classifier_dir)
    first = tensors_digest(model)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)  # fine-tuned in memory: another model
    assert tensors_digest(model) != first
    model.register_buffer("temperature", torch.tensor(1.5))  # a 0-d tensor hashes too
    assert tensors_digest(model) != first


def test_objects_that_cannot_be_explained_are_clear_errors(tiny_dirs):
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    model, tokenizer = _objects(classifier_dir)
    masked = AutoModelForMaskedLM.from_pretrained(mlm_dir)
    cases = [
        (lambda: layersal.load({"weights": 1}), "cannot explain a dict"),
        (lambda: layersal.load(masked, tokenizer=tokenizer), "not a sequence or token classifier"),
        (
            lambda: layersal.load(pipeline("fill-mask", model=masked, tokenizer=tokenizer)),
            "'fill-mask' pipeline",
        ),
    ]
    model.config._name_or_path = "in-memory"  # no folder to find a tokenizer in
    cases.append((lambda: layersal.load(model), "pass `tokenizer=`"))
    for call, message in cases:
        with pytest.raises(ModelLoadError, match=message):
            call()
