"""One settled job: an Explainer checks its method's options once and settles ``auto`` once,
whatever the number of batches, texts or calls; ``layersal.explain`` is a thin call of it."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import layersal
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.job import Explainer
from layersal.saliency import base
from layersal.saliency.dls import DLSOptions

TEXTS = ["a gripping, beautifully acted film", "a dull film", "fine", "not good at all"]


@pytest.fixture
def counted(monkeypatch):
    """Counts of ``check_method`` calls and of options dataclasses built (``__post_init__``)."""
    counts = {"check_method": 0, "DLSOptions": 0}
    real_check, real_post = base.check_method, DLSOptions.__post_init__

    def check(name, options):
        counts["check_method"] += 1
        return real_check(name, options)

    def post(self):
        counts["DLSOptions"] += 1
        real_post(self)

    monkeypatch.setattr(base, "check_method", check)
    monkeypatch.setattr(DLSOptions, "__post_init__", post)
    return counts


@pytest.mark.parametrize("batch_size", ["16", "1"])
def test_the_command_line_checks_and_builds_the_options_once_per_job(counted, batch_size):
    """`layersal explain ... --layer 1`: one check, and the options built twice (as given, and
    as settled: the rule a fixed layer runs under), however many batches run."""
    from layersal.cli import app

    result = CliRunner().invoke(
        app, ["explain", *TEXTS, "--layer", "1", "--batch-size", batch_size]
    )
    assert result.exit_code == 0, result.output
    assert counted == {"check_method": 1, "DLSOptions": 2}


def test_auto_is_settled_once_for_every_call_of_a_job(bert_tiny, monkeypatch, tmp_path):
    """A model without a card calibrates on the job's first texts, once; later calls (other
    texts) reuse the choice instead of calibrating on their own."""
    from layersal.saliency import layer_choice

    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    calibrations = []
    real = layer_choice.resolve_auto

    def spy(*args, **kwargs):
        calibrations.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(layer_choice, "resolve_auto", spy)
    job = Explainer(bert_tiny, "dls", {"layer": "auto"}, batch_size=2)
    first = job.explain(TEXTS[:2])
    second = job.explain(TEXTS[2:])
    assert len(calibrations) == 1
    assert job.prepared.recorded["auto"] == first[0].options["auto"] == second[0].options["auto"]
    assert {e.layer for e in first + second} == {job.applied_options["layer"]}


def test_explain_is_the_explainer_and_attribute_gives_its_scores(bert_tiny):
    job = layersal.explainer(bert_tiny, "dls", layer=1, batch_size=2)
    by_job = job.explain(TEXTS)
    by_call = layersal.explain(TEXTS, bert_tiny, layer=1, batch_size=2)
    for a, b in zip(by_job, by_call):
        assert [w.score for w in a.words] == pytest.approx([w.score for w in b.words], abs=1e-6)
        assert a.options == b.options and a.prediction == b.prediction
    lm = bert_tiny
    encoded = encode(lm.tokenizer, TEXTS[:1], lm.max_length, model_input_names(lm.model))
    attribution = job.attribute(encoded)
    content = encoded.content[0]
    tokens = [t.score for t in by_job[0].tokens]
    assert attribution.scores[0, content].tolist() == pytest.approx(tokens, abs=1e-6)
    assert torch.equal(attribution.targets, torch.tensor([lm.labels.index(by_job[0].target)]))


def test_a_bad_option_fails_before_any_model_loads(monkeypatch):
    import layersal.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(layersal.models, "load", no_load)
    with pytest.raises(InputError, match="has no option 'layerz'"):
        layersal.explainer("sst2-tiny", "dls", layerz=1)
    with pytest.raises(InputError, match="takes int"):
        layersal.explainer("sst2-tiny", "occlusion", options={"span": "five"})


def test_a_checked_method_carries_its_options(bert_tiny):
    from layersal.saliency import checked

    with pytest.raises(InputError, match="carries its options"):
        Explainer(bert_tiny, checked("dls", {"layer": 1}), {"layer": 0})
    with pytest.raises(InputError, match="batch size"):
        Explainer(bert_tiny, "dls", batch_size=0)
