"""Loading: bundled names, folders, hub ids offline, and every way a checkpoint can be wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import layersal
from layersal.errors import ModelLoadError


def test_bundled_models_are_listed_and_carry_their_own_mlm_head():
    assert {"sst2-tiny", "agnews-tiny"} <= set(layersal.bundled_models())
    for name in ("sst2-tiny", "agnews-tiny"):
        lm = layersal.load(name)
        assert lm.decoder == "mlm_head"
        assert lm.name == name
        assert lm.num_layers == 2
    assert layersal.load("agnews-tiny").labels == ["World", "Sports", "Business", "Sci/Tech"]


def test_bundled_mlm_head_decodes_the_embedding_layer_back_to_the_input():
    lm = layersal.load("sst2-tiny")
    explanation = layersal.explain(
        "the acting was wonderful and the music was moving", lm, layer_report=True
    )
    embedding_layer = explanation.layers[0]
    assert embedding_layer.coherence > 0.5
    assert sum(r == 0 for r in embedding_layer.own_rank) >= 0.8 * len(embedding_layer.own_rank)


def test_unknown_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        layersal.load(str(tmp_path / "missing" / "model"))


def test_unknown_hub_id_fails_offline_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="Hugging Face Hub"):
        layersal.load("no-such-user/no-such-model")


def test_a_masked_lm_checkpoint_is_not_a_classifier(tiny_dirs):
    _, mlm_dir = tiny_dirs["bert"]
    with pytest.raises(ModelLoadError, match="not a sequence classifier"):
        layersal.load(mlm_dir)


def test_a_checkpoint_without_classification_head_is_refused(tiny_dirs, tmp_path):
    _, mlm_dir = tiny_dirs["bert"]
    bare = tmp_path / "bare"
    shutil.copytree(mlm_dir, bare)
    config = json.loads((bare / "config.json").read_text())
    config.pop("architectures", None)
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="classification head"):
        layersal.load(bare)


def test_folder_without_config_or_weights(tmp_path, tiny_dirs):
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        layersal.load(tmp_path)
    classifier_dir, _ = tiny_dirs["bert"]
    empty = tmp_path / "no-weights"
    shutil.copytree(classifier_dir, empty)
    (empty / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        layersal.load(empty)


def test_remote_code_models_are_never_run(tiny_dirs, tmp_path):
    classifier_dir, _ = tiny_dirs["bert"]
    remote = tmp_path / "remote"
    shutil.copytree(classifier_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config["model_type"] = "my-custom-arch"
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling.Custom"}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="remote code"):
        layersal.load(remote)


def test_pickle_weights_are_refused_unless_allowed(tiny_dirs, tmp_path):
    from safetensors.torch import load_file

    classifier_dir, _ = tiny_dirs["bert"]
    pickled = tmp_path / "pickled"
    shutil.copytree(classifier_dir, pickled)
    state = load_file(str(pickled / "model.safetensors"))
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"`allow_pickle=True`"):
        layersal.load(pickled)
    lm = layersal.load(pickled, allow_pickle=True)
    reference = layersal.load(classifier_dir)
    text = "pickles are risky"
    assert layersal.explain(text, lm).probabilities == pytest.approx(
        layersal.explain(text, reference).probabilities
    )


def test_lm_head_checkpoint_with_another_vocabulary_is_refused(tiny_dirs, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    classifier_dir, _ = tiny_dirs["bert"]
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertForMaskedLM(config).save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(ModelLoadError, match="vocabulary"):
        layersal.load(classifier_dir, lm_head=tmp_path / "small-vocab")


def test_lm_head_checkpoint_of_another_width_is_refused(tiny_dirs):
    classifier_dir, _ = tiny_dirs["bert"]
    with pytest.raises(ModelLoadError, match="dim"):
        layersal.load(classifier_dir, lm_head="sst2-tiny")


def test_device_names_are_checked(monkeypatch):
    import torch

    from layersal.errors import ModelLoadError
    from layersal.models import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ModelLoadError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(ModelLoadError, match="precision"):
        layersal.load("sst2-tiny", precision="fp8")


def test_bf16_autocast_runs_on_cpu_and_stays_close_to_fp32():
    import numpy as np

    texts = ["a gripping, beautifully acted film", "dull and lifeless, a waste of time"]
    full = layersal.explain(texts, layersal.load("sst2-tiny"), layer=1)
    half_lm = layersal.load("sst2-tiny", precision="bf16")
    assert half_lm.precision == "bf16"
    half = layersal.explain(texts, half_lm, layer=1)
    for a, b in zip(full, half):
        assert a.prediction == b.prediction
        assert all(isinstance(s, float) for s in b.scores)
        assert np.corrcoef(a.scores, b.scores)[0, 1] > 0.9
        assert abs(a.probabilities[a.prediction] - b.probabilities[b.prediction]) < 0.05
    from layersal.encoding import encode, model_input_names
    from layersal.saliency import run_method

    seen = []  # the benchmark calls run_method directly: autocast must hold there too
    hook = half_lm.model.register_forward_hook(
        lambda *args: seen.append(torch.is_autocast_enabled("cpu"))
    )
    try:
        encoded = encode(
            half_lm.tokenizer, texts, half_lm.max_length, model_input_names(half_lm.model)
        )
        run_method("dls", half_lm, encoded, None, {"layer": 1})
    finally:
        hook.remove()
    assert seen == [True]


def test_the_task_is_read_from_the_config_or_named(tiny_dirs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    classifier_dir, _ = tiny_dirs["bert"]
    assert layersal.load(classifier_dir).task.name == "single_label"
    model = AutoModelForSequenceClassification.from_pretrained(
        classifier_dir, problem_type="multi_label_classification"
    )
    folder = tmp_path / "head"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(classifier_dir / name, folder / name)
    assert layersal.load(folder).task.name == "multi_label"
    assert layersal.load(folder, task="single_label").task.name == "single_label"
    with pytest.raises(ModelLoadError, match="unknown task 'ner'"):
        layersal.load(folder, task="ner")
