"""A natural-language-inference model as a zero-shot classifier: the pipeline's scores, each
label's explanation equal to the pair explanation of its hypothesis, metrics that hide the
text's words only, and clear errors."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError, ModelLoadError
from layersal.evaluate import faithfulness_of

from .conftest import TOKENIZER_DIR, tiny_config

NLI = ["entailment", "neutral", "contradiction"]
LABELS = ["sports", "politics", "business", "science"]
TEXT = "The home team won the final match in the last minute"


@pytest.fixture(scope="module")
def nli_dir(tmp_path_factory, tiny_dirs):
    """A tiny BERT NLI head with large random weights, so hypotheses score differently."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(3)
    config = tiny_config("bert", num_labels=3)
    config.initializer_range = 0.4
    config.id2label = dict(enumerate(NLI))
    config.label2id = {t: i for i, t in enumerate(NLI)}
    model = AutoModelForSequenceClassification.from_config(config)
    folder = tmp_path_factory.mktemp("nli") / "nli"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, folder / name)
    return folder, tiny_dirs["bert"][1]


def zero_shot(nli_dir, **options):
    folder, mlm = nli_dir
    return layersal.load(folder, lm_head=mlm, task="zero-shot", labels=LABELS, **options)


@pytest.mark.parametrize("multi_label", [False, True])
def test_scores_are_the_pipelines(nli_dir, multi_label):
    from transformers import pipeline

    lm = zero_shot(nli_dir, multi_label=multi_label)
    pipe = pipeline("zero-shot-classification", model=lm.model, tokenizer=lm.tokenizer)
    theirs = pipe(TEXT, candidate_labels=LABELS, multi_label=multi_label)
    expected = dict(zip(theirs["labels"], theirs["scores"]))
    assert len({round(v, 3) for v in expected.values()}) > 1, "labels should score apart"
    e = layersal.explain(TEXT, lm, layer=1)
    assert e.task == "zero_shot" and e.target == theirs["labels"][0]
    assert e.text == TEXT and e.text_pair == f"This example is {e.target}."
    assert e.probabilities == pytest.approx(expected, abs=1e-5)
    # the pipeline object itself, with its labels (no LM head there: compare the gradient)
    via_pipe = layersal.explain(TEXT, pipe, labels=LABELS, multi_label=multi_label,
                                method="gradient")  # fmt: skip
    plain = layersal.explain(TEXT, lm, method="gradient")
    assert via_pipe.probabilities == pytest.approx(expected, abs=1e-5)
    assert via_pipe.scores == pytest.approx(plain.scores, abs=1e-6)


@pytest.mark.parametrize("method", ["gradient", "input_x_gradient", "dls", "occlusion"])
def test_a_label_is_explained_as_the_pair_of_its_hypothesis(nli_dir, method):
    """multi_label=False: a label's explained logit is its hypothesis' entailment logit (less a
    constant), so its explanation is the pair explanation for entailment, word for word."""
    lm = zero_shot(nli_dir)
    pair_lm = layersal.load(nli_dir[0], lm_head=nli_dir[1])
    options = {"layer": 1} if method == "dls" else {}
    for label in ("politics", "science"):
        ours = layersal.explain(TEXT, lm, method=method, target=label, **options)
        theirs = layersal.explain(
            (TEXT, f"This example is {label}."), pair_lm, method=method, target="entailment",
            **options,
        )  # fmt: skip
        assert [(w.text, w.segment) for w in ours.words] == [
            (w.text, w.segment) for w in theirs.words
        ]
        assert ours.scores == pytest.approx(theirs.scores, rel=1e-4, abs=1e-6)


def test_multi_label_explains_entailment_against_contradiction(nli_dir):
    """multi_label=True: the explained scalar is entailment - contradiction; input x gradient
    is linear in it, so it is the difference of the pair's two explanations."""
    lm = zero_shot(nli_dir, multi_label=True)
    pair_lm = layersal.load(nli_dir[0], lm_head=nli_dir[1])
    ours = layersal.explain(TEXT, lm, method="input_x_gradient", target="sports")
    pair = (TEXT, "This example is sports.")
    entail = layersal.explain(pair, pair_lm, method="input_x_gradient", target="entailment")
    contra = layersal.explain(pair, pair_lm, method="input_x_gradient", target="contradiction")
    difference = [a - b for a, b in zip(entail.scores, contra.scores)]
    assert ours.scores == pytest.approx(difference, rel=1e-4, abs=1e-6)


def test_several_labels_and_the_template(nli_dir):
    lm = zero_shot(nli_dir, template="The topic is {}!")
    both = layersal.explain(TEXT, lm, target=["sports", "science"], layer=1)
    assert [e.target for e in both] == ["sports", "science"]
    assert both[1].text_pair == "The topic is science!"
    assert both[0].probabilities == both[1].probabilities  # every label's score, shared
    assert {w.segment for w in both[0].words} == {0, 1}  # the template's words apart


def test_metrics_watch_the_score_and_hide_the_texts_words_only(nli_dir):
    lm = zero_shot(nli_dir)
    found = layersal.explain([TEXT, "Parliament passed the budget"], lm, method="gradient")
    results = faithfulness_of(lm, found)
    for e, r in zip(found, results):
        assert r.probability == pytest.approx(e.probabilities[e.target], rel=1e-4)
        assert math.isfinite(r.aopc_comprehensiveness) and math.isfinite(r.aopc_sufficiency)
    encoded = encode(lm.tokenizer, [e.row_item for e in found], 64, model_input_names(lm.model))
    hideable = lm.task.hideable(encoded)
    for row in range(len(found)):
        segments = encoded.segments[row]
        assert all(segments[i] == 0 for i in hideable[row].nonzero().flatten().tolist())
        assert any(s == 1 for s in segments), "the hypothesis is there, and kept"


def test_one_label_is_scored_alone_as_the_pipeline_does(nli_dir):
    folder, mlm = nli_dir
    lm = layersal.load(folder, lm_head=mlm, task="zero-shot", labels=["sports"])
    assert lm.task.multi_label  # one label: entailment against contradiction
    e = layersal.explain(TEXT, lm, layer=1)
    assert 0.0 < e.probabilities["sports"] < 1.0


def test_clear_errors(nli_dir, tiny_dirs):
    folder, mlm = nli_dir
    with pytest.raises(ModelLoadError, match="needs its candidate labels"):
        layersal.load(folder, lm_head=mlm, task="zero-shot")
    with pytest.raises(ModelLoadError, match="one '\\{\\}' where the label goes"):
        layersal.load(folder, task="zero-shot", labels=LABELS, template="no slot")
    with pytest.raises(ModelLoadError, match="pass task='zero-shot'"):
        layersal.load(folder, labels=LABELS)
    with pytest.raises(ModelLoadError, match="repeat"):
        layersal.load(folder, task="zero-shot", labels=["a", "a"])
    with pytest.raises(ModelLoadError, match="include entailment and contradiction"):
        layersal.load(tiny_dirs["bert"][0], task="zero-shot", labels=LABELS)
    lm = zero_shot(nli_dir)
    with pytest.raises(InputError, match="unknown zero-shot label 'cooking'"):
        layersal.explain(TEXT, lm, target="cooking")
    with pytest.raises(InputError, match="single texts, not pairs"):
        layersal.explain((TEXT, "a hypothesis"), lm)
    with pytest.raises(InputError, match=r"give them to layersal\.load"):
        layersal.explain(TEXT, lm, labels=LABELS)
    from transformers import pipeline

    pipe = pipeline("zero-shot-classification", model=lm.model, tokenizer=lm.tokenizer)
    with pytest.raises(ModelLoadError, match="needs its candidate labels"):
        layersal.explain(TEXT, pipe)
