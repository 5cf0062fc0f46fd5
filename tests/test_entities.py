"""A token classifier explained one entity at a time: entities merged as the pipeline merges
them, the explained scalar by hand and by finite differences, targets naming spans, long
texts, metrics, and the family battery on every ``*ForTokenClassification`` head."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.entities import decode_entities, entity_target, span_log_probs, type_matrix
from layersal.errors import InputError
from layersal.evaluate import faithfulness_of
from layersal.families import family_for
from layersal.inputs import Focused
from layersal.passes import forward_backward
from layersal.rules import RULE_SETS

from .conftest import FAMILIES, TOKENIZER_DIR, tiny_config

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
TEXT = "Angela Merkel met Apple in Berlin and Apple again"


def token_classifier(root, family: str = "bert", seed: int = 1, bias=None):
    """The tiny ``family`` model with a token-classification head of :data:`TAGS`, saved with
    its tokenizer: (folder, mlm folder or None)."""
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(seed)
    config = tiny_config(family, num_labels=len(TAGS))
    config.id2label = dict(enumerate(TAGS))
    config.label2id = {t: i for i, t in enumerate(TAGS)}
    model = AutoModelForTokenClassification.from_config(config)
    if bias is not None:
        with torch.no_grad():
            model.classifier.bias.copy_(torch.tensor(bias))
    folder = root / f"{family}-tokens-{seed}"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tokens(tiny_dirs, tmp_path_factory):
    # biases that make entities: B-ORG and I-ORG likely, O less so
    folder = token_classifier(
        tmp_path_factory.mktemp("tokens"), bias=[0.0, 0.3, 0.1, 0.9, 0.8, 0.2, 0.1]
    )
    return layersal.load(folder, lm_head=tiny_dirs["bert"][1])


def test_a_token_classifier_is_explained_as_entities(tokens):
    assert tokens.task.name == "token_classification"
    assert tokens.labels == ["O", "PER", "ORG", "LOC"]
    found = layersal.explain(TEXT, tokens, layer=1)
    assert isinstance(found, list) and found, "the biases should make entities"
    for e in found:
        assert e.task == "token_classification" and e.entity is not None
        assert e.text[e.entity["start"] : e.entity["end"]] == e.entity["word"]
        assert e.target == e.entity["label"] and e.target != "O"
        assert e.probabilities[e.target] == pytest.approx(e.entity["probability"], rel=1e-4)
        assert [w.text for w in e.words][:2] == ["Angela", "Merkel"]  # every word scored
        assert len(e.words) == len(TEXT.split())
    # "Apple" twice: the two are separate words, each its own entity if tagged
    apples = [e for e in found if e.entity["word"] == "Apple"]
    assert len({e.entity["start"] for e in apples}) == len(apples)


def test_entities_are_merged_as_the_pipeline_merges_them(tokens):
    """decode_entities gives the spans and types of pipeline(aggregation_strategy="simple")."""
    from transformers import pipeline

    pipe = pipeline(
        "token-classification",
        model=tokens.model,
        tokenizer=tokens.tokenizer,
        aggregation_strategy="simple",
    )
    texts = [TEXT, "Apple Apple Apple", "nothing to see here, move along"]
    for seed in (1, 2, 3):
        with torch.no_grad():
            torch.manual_seed(seed)
            tokens.model.classifier.bias.add_(torch.randn(len(TAGS)) * 0.5)
        for text in texts:
            theirs = [(g["start"], g["end"], g["entity_group"]) for g in pipe(text)]
            encoded = encode(tokens.tokenizer, [text], 128, model_input_names(tokens.model))
            with torch.no_grad():
                probs = torch.softmax(tokens.model(**encoded.inputs).logits[0], -1)
            content = encoded.content[0].nonzero().flatten()
            offsets = [tuple(encoded.offsets[0, i].tolist()) for i in content]
            ours = decode_entities(text, TAGS, probs[content], offsets)
            assert [(e.start, e.end, e.label) for e in ours] == theirs, (seed, text)


def test_the_explained_scalar_is_the_mean_log_probability_of_the_type(tokens):
    """Input x gradient of an entity equals the hand computation: d/de of the mean over the
    span's tokens of log(p(B-X) + p(I-X)), times e; and that scalar's gradient agrees with
    finite differences along a random direction."""
    entity = layersal.explain(TEXT, tokens, method="input_x_gradient")[0]
    start, end, label = entity.entity["start"], entity.entity["end"], entity.entity["label"]
    encoded = encode(tokens.tokenizer, [TEXT], 128, model_input_names(tokens.model))
    span = [
        i
        for i in encoded.content[0].nonzero().flatten().tolist()
        if encoded.offsets[0, i, 0] < end and encoded.offsets[0, i, 1] > start
    ]
    columns = [TAGS.index(f"B-{label}"), TAGS.index(f"I-{label}")]
    model = tokens.model.eval()
    embeddings = model.get_input_embeddings()(encoded.input_ids).detach().requires_grad_()

    def scalar(e: torch.Tensor) -> torch.Tensor:
        inputs = {k: v for k, v in encoded.inputs.items() if k != "input_ids"}
        probs = torch.softmax(model(inputs_embeds=e, **inputs).logits[0], -1)
        return torch.log(probs[span][:, columns].sum(-1)).mean()

    value = scalar(embeddings)
    assert math.exp(float(value)) == pytest.approx(entity.entity["probability"], rel=1e-4)
    (grad,) = torch.autograd.grad(value, embeddings)
    by_hand = (grad * embeddings).sum(-1)[0, encoded.content[0]]
    assert entity.scores == pytest.approx(by_hand.tolist(), rel=1e-3, abs=1e-6)
    direction = torch.randn_like(embeddings)
    h = 1e-3
    with torch.no_grad():
        numeric = (scalar(embeddings + h * direction) - scalar(embeddings - h * direction)) / (
            2 * h
        )
    assert float((grad * direction).sum()) == pytest.approx(float(numeric), rel=2e-2, abs=1e-4)


def test_span_log_probs_by_hand():
    logits = torch.randn(2, 5, len(TAGS))
    focus = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    view = span_log_probs(logits, focus, type_matrix(TAGS))
    p = torch.softmax(logits, -1)
    org = torch.log(p[0, 1:3, 3] + p[0, 1:3, 4]).mean()
    outside = torch.log(p[0, 1:3, 0]).mean()
    assert float(view[0, 2]) == pytest.approx(float(org), rel=1e-5)
    assert float(view[0, 0]) == pytest.approx(float(outside), rel=1e-5)
    assert view[1].tolist() == pytest.approx([-math.log(4)] * 4)  # no span left: no evidence


def test_targets_name_spans_by_offsets_or_word(tokens):
    found = layersal.explain(TEXT, tokens, layer=1)
    first = found[0]
    start, end = first.entity["start"], first.entity["end"]
    by_offsets = layersal.explain(TEXT, tokens, layer=1, target=(start, end))
    assert len(by_offsets) == 1 and by_offsets[0].scores == pytest.approx(first.scores)
    word = next(i for i, w in enumerate(first.words) if w.start <= start < w.end)
    by_word = layersal.explain(TEXT, tokens, layer=1, target=word)
    assert by_word[0].entity["start"] == start
    other = next(label for label in ("PER", "LOC") if label != first.target)
    relabelled = layersal.explain(TEXT, tokens, layer=1, target=f"{start}:{end}={other}")[0]
    assert relabelled.target == other and relabelled.scores != pytest.approx(first.scores)
    assert relabelled.entity["probability"] == pytest.approx(relabelled.probabilities[other])


def test_a_span_that_is_no_entity_needs_a_label(tokens, tiny_dirs, tmp_path):
    quiet = layersal.load(
        token_classifier(tmp_path, bias=[9.0, 0, 0, 0, 0, 0, 0]), lm_head=tiny_dirs["bert"][1]
    )
    assert layersal.explain(TEXT, quiet) == []  # nothing tagged: no entity, no explanation
    with pytest.raises(InputError, match="is not an entity the model predicts; name a label"):
        layersal.explain(TEXT, quiet, target="0:6")
    named = layersal.explain(TEXT, quiet, target="0:6=PER", layer=1)
    assert named[0].entity["word"] == "Angela" and named[0].target == "PER"
    part = layersal.explain(TEXT, quiet, target="2:9=PER", layer=1)[0]  # "gela Me": widened
    assert (part.entity["start"], part.entity["end"], part.entity["word"]) == (
        0,
        13,
        "Angela Merkel",
    )
    # settling on plain texts calibrates on their entity rows (it used to fail on texts)
    job = layersal.explainer(tokens, "dls")
    assert job.settle(lambda: [TEXT]).options["layer"] != "auto"
    with pytest.raises(InputError, match="unknown entity label 'DATE'"):
        layersal.explain(TEXT, quiet, target="0:6=DATE")
    with pytest.raises(InputError, match="word 99 is out of range"):
        layersal.explain(TEXT, quiet, target="99=PER")
    with pytest.raises(InputError, match="past the end of the text"):
        layersal.explain(TEXT, quiet, target=(0, 500, "PER"))
    with pytest.raises(InputError, match="cannot read"):
        entity_target("left:right", quiet.labels)


def test_a_long_text_explains_each_entity_in_its_most_central_window(tokens):
    text = " ".join(["filler words here"] * 60) + " " + TEXT + " " + " ".join(["more"] * 80)
    found = layersal.explain(text, tokens, layer=1, window=64)
    assert found and all(e.options["windows"] == 1 for e in found)
    late = [e for e in found if e.entity["start"] >= text.index(TEXT)]
    assert late, "entities of the sentence in the middle"
    for e in late:
        scored = [w for w in e.words if w.score != 0.0]
        assert scored and scored[0].start > 0, "words outside the entity's window get 0"
        inside = [w for w in e.words if w.start >= e.entity["start"] and w.end <= e.entity["end"]]
        assert any(w.score != 0.0 for w in inside)


def test_metrics_watch_the_entity_and_hide_every_word(tokens):
    found = layersal.explain(TEXT, tokens, method="gradient")
    results = faithfulness_of(tokens, found)
    assert len(results) == len(found)
    for e, r in zip(found, results):
        assert r.probability == pytest.approx(e.entity["probability"], rel=1e-4)
        assert math.isfinite(r.aopc_comprehensiveness) and math.isfinite(r.aopc_sufficiency)


def test_one_text_shares_its_prediction_forward_across_entities(tokens):
    """The entities of a text come from one forward over it; its entities' explanations then
    share one more forward (one row through the model) and a backward each: n entities
    cost 2 forward rows, not n + 1 (tests/test_sharing.py: the same scores as one by one)."""
    rows = []
    handle = tokens.model.register_forward_pre_hook(
        lambda m, args, kwargs: rows.append(int(kwargs["input_ids"].shape[0])), with_kwargs=True
    )
    try:
        found = layersal.explain(TEXT, tokens, layer=1)
    finally:
        handle.remove()
    assert len(found) >= 2
    assert rows == [1, 1]  # the prediction forward; one forward for all of its entities


# ---------------------------------------------------------------------------- families


def _token_families() -> list[str]:
    from transformers import AutoModelForTokenClassification

    found = []
    for family in FAMILIES:
        try:
            AutoModelForTokenClassification.from_config(tiny_config(family))
        except ValueError:
            continue
        found.append(family)
    return found


TOKEN_FAMILIES = _token_families()


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("family", TOKEN_FAMILIES)
def test_token_heads_of_every_family(family, tiny_dirs, tmp_path):
    """Batch equals single, the gradient agrees with finite differences, cp_id conserves on a
    bias-free copy, and every rule leaves the forward and the hooks as they were."""
    folder = token_classifier(tmp_path, family, bias=None)
    lm = layersal.load(folder, lm_head=tiny_dirs[family][1])
    assert lm.task.name == "token_classification"
    texts = [TEXT, "Apple opened a store in Paris"]
    spans = [(0, 6, "PER"), (0, 5, "ORG")]
    one = [layersal.explain(t, lm, layer=1, target=s)[0] for t, s in zip(texts, spans)]
    both = layersal.explain(texts, lm, layer=1, target=list(spans))
    for a, b in zip(one, both):
        assert a.scores == pytest.approx(b.scores, rel=1e-4, abs=1e-6)
    # finite differences of the explained scalar along the word embeddings
    items = [Focused(texts[0], 0, 6)]
    encoded = encode(lm.tokenizer, items, 64, model_input_names(lm.model))
    model = lm.model.eval()
    target = torch.tensor([lm.labels.index("PER")])
    with lm.borrowed():
        before = _hooks(model)
        for rule in RULE_SETS:
            passed = forward_backward(model, encoded, target, family=family_for(model.config),
                                      rule=rule, task=lm.task)  # fmt: skip
            assert _hooks(model) == before, rule
        plain = forward_backward(model, encoded, target, family=lm.family, task=lm.task)
    direction = torch.randn_like(plain.embedded) * encoded.content.unsqueeze(-1)
    h = 1e-3

    def value(shift: float) -> float:
        from layersal.passes import on_input_ids

        with (
            lm.borrowed(),
            torch.no_grad(),
            on_input_ids(model, encoded.input_ids, lambda out: out + shift * direction),
        ):
            return float(model(**encoded.inputs).logits[0, target[0]])

    numeric = (value(h) - value(-h)) / (2 * h)
    analytic = float((plain.embedded_grad * direction).sum())
    assert analytic == pytest.approx(numeric, rel=3e-2, abs=1e-4)
    assert float(passed.logits[0, target[0]]) == pytest.approx(
        float(plain.logits[0, target[0]]), rel=1e-5
    )


@pytest.mark.parametrize("family", TOKEN_FAMILIES)
def test_cp_id_conserves_a_token_logit_of_every_token_head(family):
    """With every additive term zeroed, cp_id's input relevance of one token's tag logit is
    that logit: the rules reach through a token head as through a sequence head."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from layersal.passes import on_input_ids
    from layersal.rules import propagation_rules

    torch.manual_seed(0)
    config = tiny_config(family, num_labels=len(TAGS))
    config.initializer_range = 0.3
    model = AutoModelForTokenClassification.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or any(
                p in name for p in ("position_embeddings", "token_type", "wpe")
            ):
                parameter.zero_()
    names = model_input_names(model)
    if family_for(model.config).causal:
        names -= {"token_type_ids"}
    encoded = encode(AutoTokenizer.from_pretrained(TOKENIZER_DIR), [TEXT], 64, names)
    captured: list[torch.Tensor] = []

    def capture(out: torch.Tensor) -> torch.Tensor:
        captured.append(out.detach().requires_grad_())
        return captured[-1]

    with (
        propagation_rules(model, family_for(model.config), "cp_id"),
        on_input_ids(model, encoded.input_ids, capture),
    ):
        logit = model(**encoded.inputs).logits[0, 3, 2]
        (grad,) = torch.autograd.grad(logit, captured)
    assert abs(float(logit)) > 0.05
    assert float((captured[0] * grad).sum()) == pytest.approx(float(logit), rel=1e-4, abs=1e-5)


def test_auto_calibrates_on_entity_rows_and_keys_its_cache_by_task(tokens, tmp_path, monkeypatch):
    """layer='auto' on a token classifier judges configurations on entity rows (their scalar,
    their focus), and a calibration of whole texts is not taken for them."""
    from layersal.saliency.auto_store import read_cache, task_key

    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path))
    texts = [TEXT, "Apple and Google met in Paris", "Berlin hosts Siemens and Bayer"] * 6
    found = layersal.explain(texts, tokens)
    assert found and all(e.options["auto"]["source"] == "calibrated" for e in found)
    assert "TokenClassification" in task_key(tokens)
    assert read_cache(), "18 texts' entities are enough rows to cache the choice"
