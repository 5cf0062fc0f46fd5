"""Pairs of texts (natural-language inference, cross-encoders) on every face: Python, metrics,
command line, dataset runs, HTML and the web app."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import layersal
from layersal.encoding import encode, model_input_names
from layersal.errors import InputError
from layersal.evaluate import predictor, score_batch
from layersal.metrics import perturb, perturb_token_types

from .conftest import TOKENIZER_DIR

PAIRS = [
    ("A man is playing a guitar on stage.", "A person plays music."),
    ("Two dogs run through a field.", "The animals are asleep."),
    ("Nobody is here.", "Somebody is here, loudly singing a long and cheerful song."),
]
NLI = {0: "entailment", 1: "neutral", 2: "contradiction"}


@pytest.fixture(scope="module")
def nli_dir(tiny_dirs, tmp_path_factory):
    """The tiny BERT classifier saved as a natural-language-inference model."""
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path_factory.mktemp("nli") / "bert-nli"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["bert"][0])
    model.config.id2label = NLI
    model.config.label2id = {v: k for k, v in NLI.items()}
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def nli(nli_dir, tiny_dirs):
    return layersal.load(nli_dir, lm_head=tiny_dirs["bert"][1])


def test_a_pair_is_explained_per_segment(nli):
    assert nli.pairs is True  # from its labels
    premise, hypothesis = PAIRS[0]
    e = layersal.explain((premise, hypothesis), nli, layer=1)
    assert (e.text, e.text_pair, e.item) == (premise, hypothesis, (premise, hypothesis))
    segments = [t.segment for t in e.tokens]
    assert segments == sorted(segments) and set(segments) == {0, 1}
    for word in e.words:
        text = e.texts[word.segment]
        assert word.text == text[word.start : word.end]
        assert {e.tokens[t].segment for t in word.tokens} == {word.segment}
    assert [w.text for w in e.words if w.segment == 1] == ["A", "person", "plays", "music", "."]
    assert all(t.word < len(e.words) for t in e.tokens)
    # round trip
    back = layersal.Explanation.from_json(e.to_json())
    assert back == e and back.words[-1].segment == 1


def test_a_list_of_pairs_equals_each_pair_alone(nli):
    together = layersal.explain(PAIRS, nli, layer=1, batch_size=3)
    for pair, batched in zip(PAIRS, together):
        alone = layersal.explain(pair, nli, layer=1)
        np.testing.assert_allclose(alone.scores, batched.scores, atol=1e-6, rtol=1e-4)
        assert alone.item == batched.item == pair


def test_the_second_text_is_read_as_the_second_segment(nli):
    """Segment ids reach the model: the same two texts as one run-on text predict otherwise."""
    premise, hypothesis = PAIRS[0]
    encoded = encode(nli.tokenizer, [PAIRS[0]], nli.max_length, model_input_names(nli.model))
    assert encoded.inputs["token_type_ids"][0].max() == 1
    pair = layersal.explain((premise, hypothesis), nli, layer=1)
    nli.pairs = None
    try:
        joined = layersal.explain(f"{premise} {hypothesis}", nli, layer=1)
    finally:
        nli.pairs = True
    assert pair.probabilities != pytest.approx(joined.probabilities, abs=1e-6)


def test_wrong_kind_of_input_is_a_clear_error(nli, sst2_tiny):
    with pytest.raises(InputError, match="classifies pairs of texts"):
        layersal.explain("one text only", nli)
    with pytest.raises(InputError, match="classifies single texts, not pairs"):
        layersal.explain(PAIRS[0], sst2_tiny)
    with pytest.raises(InputError, match="mix single texts and pairs"):
        layersal.explain(["a text", PAIRS[0]], layersal.load(sst2_tiny.path, pairs=None))
    with pytest.raises(InputError, match="text 0 has 3 parts"):
        layersal.explain([("a", "b", "c")], nli)
    with pytest.raises(InputError, match=r"text 0 \(second\) is empty"):
        layersal.explain(("a premise", ""), nli)


def test_metrics_hide_tokens_of_both_texts_and_never_the_separator(nli):
    encoded = encode(nli.tokenizer, PAIRS[:1], nli.max_length, model_input_names(nli.model))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = predictor(nli)

    def recording(ids, mask, types=None):
        assert types is not None, "a pair's segment ids must reach the model"
        seen.append((ids.clone(), types.clone()))
        return real(ids, mask, types)

    scores = torch.randn(encoded.input_ids.shape)
    score_batch(nli, encoded, scores, torch.zeros(1, dtype=torch.long), predict=recording)
    original = encoded.input_ids[0]
    specials = (original == nli.tokenizer.sep_token_id) | (original == nli.tokenizer.cls_token_id)
    hidden_segments = set()
    for ids, types in seen:
        assert torch.equal(
            types, encoded.inputs["token_type_ids"][:, : ids.shape[1]].expand_as(types)
        )
        for row in range(len(ids)):
            hidden = ids[row] == nli.tokenizer.mask_token_id
            assert not hidden[specials[: ids.shape[1]]].any()
            hidden_segments |= set(types[row][hidden].tolist())
    assert hidden_segments == {0, 1}


def test_deleting_tokens_moves_their_segment_ids_with_them():
    ids = torch.tensor([[101, 7, 8, 102, 9, 10, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0]])
    hide = torch.tensor([[0, 1, 1, 0, 1, 0, 0, 0]]).bool()
    packed, packed_mask = perturb(ids, mask, hide, "delete", pad_id=0)
    moved = perturb_token_types(types, mask, hide, "delete")
    assert packed[0].tolist() == [101, 102, 10, 102, 0, 0, 0, 0]
    assert packed_mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert moved[0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    assert perturb_token_types(types, mask, hide, "mask") is types


def test_html_and_terminal_show_both_texts(nli):
    from rich.console import Console

    from layersal.report.html import render_report
    from layersal.report.terminal import summary

    e = layersal.explain(("a <script>x</script> premise", "the hypothesis"), nli, layer=1)
    page = render_report([e])
    assert "&lt;" in page and "<script>" not in page
    assert page.index("premise") < page.index('class="sep"') < page.index("hypothesis")
    console = Console(record=True, width=120)
    console.print(summary(e))
    shown = console.export_text()
    assert "[1] a <script>x</script> premise" in shown and "[2] the hypothesis" in shown


def test_command_line_takes_pairs_as_arguments_and_columns(nli_dir, tmp_path):
    from typer.testing import CliRunner

    from layersal.cli import app

    runner = CliRunner()
    base = ["--model", str(nli_dir), "--layer", "1", "--json"]
    result = runner.invoke(app, ["explain", *PAIRS[0][:1], "--pair", PAIRS[0][1], *base])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.splitlines()[0])
    assert (row["text"], row["text_pair"]) == PAIRS[0]
    data = tmp_path / "nli.jsonl"
    data.write_text(
        "".join(json.dumps({"premise": a, "hypothesis": b}) + "\n" for a, b in PAIRS),
        encoding="utf-8",
    )
    columns = ["--file", str(data), "--text-column", "premise", "--pair-column", "hypothesis"]
    result = runner.invoke(app, ["explain", *columns, *base])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["text"], r["text_pair"]) for r in rows] == PAIRS
    missing = runner.invoke(
        app, ["explain", "--file", str(data), "--text-column", "premise", *base]
    )
    assert missing.exit_code != 0 and "classifies pairs of texts" in missing.output
    wrong = runner.invoke(app, ["explain", "just one", "--model", str(nli_dir)])
    assert wrong.exit_code != 0 and "classifies pairs of texts" in wrong.output


def test_a_dataset_run_writes_both_texts_and_segments(nli_dir, tmp_path):
    import pyarrow.parquet as pq

    from layersal.engines import explain_dataset

    data = tmp_path / "nli.tsv"
    data.write_text(
        "premise\thypothesis\n" + "".join(f"{a}\t{b}\n" for a, b in PAIRS), encoding="utf-8"
    )
    out = tmp_path / "out.parquet"
    common = {"model": str(nli_dir), "layer": 1, "batch_size": 2, "text_column": "premise"}
    with pytest.raises(InputError, match="pair_column"):
        explain_dataset(data, out, **common)
    summary = explain_dataset(data, out, pair_column="hypothesis", **common)
    assert (summary.rows, summary.errors) == (3, 0)
    table = pq.read_table(out).to_pylist()
    assert [(r["text"], r["text_pair"]) for r in table] == PAIRS
    for r in table:
        assert set(r["token_segments"]) == {0, 1} and len(r["token_segments"]) == len(r["tokens"])
        for word, (start, end), segment in zip(r["words"], r["word_offsets"], r["word_segments"]):
            assert word == (r["text"], r["text_pair"])[segment][start:end]


def test_web_app_explains_a_pair(nli):
    from fastapi.testclient import TestClient

    from layersal.serve import create_app

    client = TestClient(create_app(nli))
    assert client.get("/api/info").json()["pairs"] is True
    premise, hypothesis = PAIRS[1]
    response = client.post("/api/explain", json={"text": premise, "text_pair": hypothesis})
    assert response.status_code == 200, response.text
    e = response.json()["explanations"][0]
    assert (e["text"], e["text_pair"]) == PAIRS[1]
    assert {w["segment"] for w in e["words"]} == {0, 1}
    both = client.post(
        "/api/explain", json={"texts": [a for a, _ in PAIRS], "text_pairs": [b for _, b in PAIRS]}
    )
    assert both.status_code == 200 and len(both.json()["explanations"]) == 3
    single = client.post("/api/explain", json={"text": premise})
    assert single.status_code == 422 and "pairs" in single.json()["error"]
    uneven = client.post("/api/explain", json={"texts": ["a", "b"], "text_pairs": ["c"]})
    assert uneven.status_code == 422
    page = client.post("/api/report.html", json={"explanations": [e]})
    assert page.status_code == 200 and 'class="sep"' in page.text


def test_a_bare_string_in_a_pair_file_is_a_bad_row_not_a_single_text(tmp_path):
    from layersal.inputs import Source, read_items

    data = tmp_path / "pairs.jsonl"
    data.write_text(
        json.dumps({"text": "a premise", "hyp": "a hypothesis"}) + "\n" + json.dumps("bare") + "\n",
        encoding="utf-8",
    )
    rows = list(Source(data, pair_column="hyp").rows())
    assert rows[0].item == ("a premise", "a hypothesis")
    assert rows[1].error is not None and "pair" in rows[1].error
    with pytest.raises(InputError, match="row 2"):
        read_items(data, pair_column="hyp")


def test_a_long_pair_is_truncated_with_its_own_warning(nli):
    long_pair = ("short premise", "word " * 600)
    with pytest.warns(layersal.TruncationWarning, match="pair 0 .* longer of its texts"):
        e = layersal.explain(long_pair, nli, layer=1)
    assert e.truncated and len(e.tokens) <= nli.max_length
    assert {t.segment for t in e.tokens} == {0, 1}  # the premise survives the cut


PAIR_METHODS = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 4},
    "sequential_integrated_gradients": {"n_steps": 4},
    "occlusion": {},
    "lime": {"n_samples": 8, "seed": 0},
    "attention": {},
    "rollout": {},
    "gradcam": {},
    "lrp": {},
}


@pytest.mark.parametrize("method", sorted(PAIR_METHODS))
def test_every_method_explains_pairs_alike_alone_and_in_a_batch(nli, method):
    options = PAIR_METHODS[method]
    together = layersal.explain(PAIRS, nli, method=method, options=options, batch_size=3)
    for pair, batched in zip(PAIRS, together):
        alone = layersal.explain(pair, nli, method=method, options=options)
        assert {t.segment for t in alone.tokens} == {0, 1}
        np.testing.assert_allclose(alone.scores, batched.scores, atol=1e-6, rtol=1e-4)
