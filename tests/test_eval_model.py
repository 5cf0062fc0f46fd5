"""``bench --eval-model``: the explained model's explanations scored with another model's
predictions (an in-distribution copy), and the refusals of a model that does not share its
tokenizer or labels."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

import layersal
from layersal.benchmark import expand_specs, run_benchmark
from layersal.datasets import LabelledTexts
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.evaluate import eval_predictor, predictor, score_batch
from layersal.report.bench import markdown, to_json

from .conftest import tiny_head

TEXTS = [
    "a gripping, beautifully acted film",
    "dull and far too long",
    "the plot meanders but the cast shines",
    "not bad at all",
]


@pytest.fixture(scope="module")
def judge(tiny_dirs) -> layersal.LoadedModel:
    """The tiny BERT again, its encoder weights shifted by seeded noise: same tokenizer and
    labels, other predictions (as a masked-fine-tuned copy would be)."""
    classifier_dir, mlm_dir = tiny_dirs["bert"]
    lm = layersal.load(classifier_dir, lm_head=mlm_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if "LayerNorm" not in name and "word_embeddings" not in name:
                p.add_(torch.randn(p.shape, generator=generator) * 0.5)
    return dataclasses.replace(lm, name="judge")


def _encoded(lm, texts=TEXTS):
    return encode(lm.tokenizer, texts, lm.max_length, model_input_names(lm.model))


def test_the_judge_predicts_and_the_explained_model_without_one(bert_tiny, judge):
    encoded = _encoded(bert_tiny)
    own = eval_predictor(bert_tiny, None)(encoded.input_ids, encoded.attention_mask)
    judged = eval_predictor(bert_tiny, judge)(encoded.input_ids, encoded.attention_mask)
    with torch.no_grad():
        expected = torch.softmax(judge.model(**encoded.inputs).logits, -1)
    torch.testing.assert_close(judged, expected)
    torch.testing.assert_close(own, predictor(bert_tiny)(encoded.input_ids, encoded.attention_mask))
    assert (judged - own).abs().max() > 0.05  # the judge is another model


def test_benchmark_scores_the_explained_models_explanations_with_the_judge(bert_tiny, judge):
    data = LabelledTexts(TEXTS, ["0", "2", "2", "0"], "fixture")
    specs = expand_specs(["gradient", "occlusion"], bert_tiny.num_layers)
    options = {"metric_options": {"loo": False}, "batch_size": 4}
    own = run_benchmark(bert_tiny, data, specs, **options)
    judged = run_benchmark(bert_tiny, data, specs, eval_model=judge, **options)
    assert own.eval_model is None and judged.eval_model == "judge"
    # the explanations and targets are the explained model's; the probabilities the judge's
    encoded = _encoded(bert_tiny)
    attribution = layersal.saliency.run_method("gradient", bert_tiny, encoded, None, {})
    targets = attribution.targets
    by_hand = score_batch(
        bert_tiny, encoded, attribution.scores, targets, predict=predictor(judge), loo=False
    )
    with torch.no_grad():
        judge_probs = torch.softmax(judge.model(**encoded.inputs).logits, -1)
    for i, result in enumerate(judged.runs[0].results):
        assert result.target == int(targets[i])
        assert result.probability == pytest.approx(float(judge_probs[i, targets[i]]), abs=1e-5)
        assert result.aopc_comprehensiveness == pytest.approx(
            by_hand[i].aopc_comprehensiveness, abs=1e-5
        )
    own_aopc = [r.aopc_comprehensiveness for r in own.runs[0].results]
    judged_aopc = [r.aopc_comprehensiveness for r in judged.runs[0].results]
    assert max(abs(a - b) for a, b in zip(own_aopc, judged_aopc)) > 1e-3
    assert "scored with the predictions of `judge`" in markdown(judged, resamples=50)
    assert to_json(judged, resamples=50)["eval_model"] == "judge"
    # the explained model as its own judge changes nothing
    itself = run_benchmark(bert_tiny, data, specs, eval_model=bert_tiny, **options)
    assert [r.aopc_comprehensiveness for r in itself.runs[0].results] == pytest.approx(own_aopc)


def test_a_judge_with_other_labels_is_refused(bert_tiny, tiny_dirs, tmp_path):
    folder, mlm_dir = tiny_head(tiny_dirs, tmp_path / "two", ["neg", "pos"])
    other = layersal.load(folder, lm_head=mlm_dir)
    with pytest.raises(InputError, match="must be the same, in the same order"):
        eval_predictor(bert_tiny, other)
    reordered = dataclasses.replace(bert_tiny, labels=list(reversed(bert_tiny.labels)))
    with pytest.raises(InputError, match="in the same order"):
        eval_predictor(bert_tiny, reordered)


def test_a_judge_with_another_tokenizer_is_refused(bert_tiny, tiny_dirs, judge):
    gpt2_dir, gpt2_lm = tiny_dirs["gpt2"]
    byte_level = layersal.load(gpt2_dir, lm_head=gpt2_lm)
    with pytest.raises(InputError, match="another tokenizer vocabulary"):
        eval_predictor(bert_tiny, byte_level)
    tokenizer = copy.deepcopy(judge.tokenizer)
    tokenizer.mask_token = "[unused0]"  # same vocabulary, another [MASK]
    with pytest.raises(InputError, match="mask token id"):
        eval_predictor(bert_tiny, dataclasses.replace(judge, tokenizer=tokenizer))


def test_cli_eval_model(tiny_dirs, tmp_path):
    from typer.testing import CliRunner

    from layersal.cli import app

    classifier_dir, _ = tiny_dirs["bert"]
    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t0\n" for t in TEXTS), encoding="utf-8")
    args = ["bench", "--data", str(data), "--model", str(classifier_dir), "--no-loo"]
    args += ["--methods", "gradient"]
    refused = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "a"), "--eval-model", "sst2-tiny"]
    )
    assert refused.exit_code == 2
    assert "error: the evaluation model sst2-tiny predicts" in " ".join(refused.output.split())
    assert not (tmp_path / "a" / "results.json").exists()
    done = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "b"), "--eval-model", str(classifier_dir)]
    )
    assert done.exit_code == 0, done.output
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["eval_model"] == str(classifier_dir)


MASKED_COPIES = ["sst2-tiny", "agnews-tiny", "sst2-minilm", "agnews-minilm"]


@pytest.mark.parametrize("name", MASKED_COPIES)
def test_the_masked_copies_share_the_tokenizer_keep_the_lm_head_and_hold_up_masked(name):
    """models/<name>-masked (scripts/masked_finetune.py): a judge the benchmark accepts for
    <name>, with <name>'s word embeddings and LM head bit for bit, a trained encoder, and a
    held-out accuracy at half the tokens masked above the original's (its card)."""
    from safetensors.torch import load_file

    from layersal.checkpoints import named_models

    folders = named_models()
    original, copy_ = folders[name], folders[f"{name}-masked"]
    card = json.loads((copy_ / "model_card.json").read_text())
    assert card["in_distribution_copy_of"]["model"] == name
    eval_predictor(layersal.load(name), layersal.load(copy_))  # accepted as its judge
    before, after = (load_file(str(f / "model.safetensors")) for f in (original, copy_))
    assert before.keys() == after.keys()
    for key in before:
        frozen = "word_embeddings" in key or key.startswith("cls.")
        assert torch.equal(before[key], after[key]) == frozen or key.endswith("position_ids"), key
    accuracy = card["evaluation"]["accuracy_by_masked_share"]
    assert accuracy["masked_copy"]["50%"] > accuracy["original"]["50%"]
    sizes = [(f / "model.safetensors").stat().st_size for f in (original, copy_)]
    assert abs(sizes[0] - sizes[1]) < 10_000  # fp16, as the original: nothing added
