"""Token classifiers and zero-shot classifiers on the command line and in dataset runs: each
text's entities listed and explained, spans as targets, zero-shot labels and their options,
one-line errors, a Parquet row per entity (with its span, word, label and probability) or per
zero-shot label, resuming, and the benchmark's rows and zero-shot accuracy."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

import layersal
from layersal.cli import app
from layersal.engines import explain_dataset
from layersal.errors import InputError, ModelLoadError

from .conftest import TOKENIZER_DIR, tiny_config
from .test_entities import TEXT, token_classifier

pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()
LABELS = ["sports", "politics", "business"]
NEWS = ["the striker scored twice", "parliament passed the bill", "stocks fell sharply"]
TOKEN_TEXTS = [TEXT, "Apple opened a store in Paris", "", "nothing to see here"]
ENTITY_COLUMNS = ["entity_start", "entity_end", "entity_word", "entity_label"]


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def token_dirs(tiny_dirs, tmp_path_factory):
    """A token classifier that finds entities (its biases favour ORG), one that finds none
    (all O), and the tiny LM head."""
    root = tmp_path_factory.mktemp("token-cli")
    found = token_classifier(root, bias=[0.0, 0.3, 0.1, 0.9, 0.8, 0.2, 0.1])
    quiet = token_classifier(root, seed=7, bias=[9.0, 0, 0, 0, 0, 0, 0])
    return found, quiet, tiny_dirs["bert"][1]


@pytest.fixture(scope="module")
def nli_dir(tiny_dirs, tmp_path_factory):
    """A tiny NLI model (entailment, neutral, contradiction) initialised wide enough that its
    zero-shot scores differ from label to label: (folder, LM head)."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(4)
    config = tiny_config("bert")
    config.initializer_range = 0.3
    config.id2label = {0: "entailment", 1: "neutral", 2: "contradiction"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    folder = tmp_path_factory.mktemp("nli-cli") / "nli"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, folder / name)
    return folder, tiny_dirs["bert"][1]


@pytest.fixture(scope="module")
def zero_shot(nli_dir):
    folder, head = nli_dir
    return layersal.load(folder, head, task="zero-shot", labels=LABELS)


def _model(dirs, which: int = 0) -> list[str]:
    return ["--model", str(dirs[which]), "--lm-head", str(dirs[-1])]


# ------------------------------------------------------------------------- explain: entities


def test_explain_lists_each_texts_entities_and_explains_each(token_dirs):
    lm = layersal.load(token_dirs[0], token_dirs[2])
    want = layersal.explain(TEXT, lm, layer=1)
    assert len(want) >= 2
    shown = _invoke("explain", TEXT, *_model(token_dirs), "--layer", "1")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    listed = ", ".join(
        f'"{e.entity["word"]}" {e.entity["label"]} {e.entity["probability"]:.3f}' for e in want
    )
    assert lines[0] == f"text 0: {len(want)} entities: {listed}"
    assert shown.output.count("entity: ") == len(want)
    assert shown.output.count("top words: ") == len(want)  # each entity its own heat-map
    for e in want:
        entity = e.entity
        assert (
            f'entity: "{entity["word"]}" {entity["label"]}, probability '
            f"{entity['probability']:.3f}  (characters {entity['start']}:{entity['end']})"
        ) in shown.output
    assert "explaining:" not in shown.output and "prediction:" not in shown.output


def test_a_text_without_entities_says_so(token_dirs):
    shown = _invoke("explain", TEXT, "nothing here", *_model(token_dirs, 1), "--layer", "1")
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines() == ["text 0: no entity", "", "text 1: no entity"]
    quiet = _invoke("explain", TEXT, *_model(token_dirs, 1), "--json")  # auto: nothing to settle
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_json_lines_carry_the_entity_and_match_the_library(token_dirs):
    lm = layersal.load(token_dirs[0], token_dirs[2])
    texts = TOKEN_TEXTS[:2]
    want = layersal.explain(texts, lm, layer=1)
    shown = _invoke("explain", *texts, *_model(token_dirs), "--layer", "1", "--json")
    assert shown.exit_code == 0, shown.output
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(rows) == len(want)
    ids = [i for i, text in enumerate(texts) for e in want if e.text == text]
    assert [r["id"] for r in rows] == ids
    for row, e in zip(rows, want):
        assert row["task"] == "token_classification"
        assert row["entity"] == pytest.approx(e.entity)
        assert row["target"] == e.entity["label"]
        assert row["focus"]["start"] == e.entity["start"]
        assert [t["score"] for t in row["tokens"]] == pytest.approx(e.scores, abs=1e-6)


def test_target_names_a_span_with_or_without_a_label(token_dirs):
    quiet = _model(token_dirs, 1)
    error = _one_error_line(_invoke("explain", TEXT, *quiet, "-t", "0:6", "--layer", "1"))
    assert "span 0:6 ('Angela') is not an entity the model predicts; name a label" in error
    unknown = _one_error_line(_invoke("explain", TEXT, *quiet, "-t", "0:6=DATE", "--layer", "1"))
    assert "unknown entity label 'DATE'" in unknown
    unreadable = _one_error_line(_invoke("explain", TEXT, *quiet, "-t", "left:right"))
    assert "cannot read 'left:right' as an entity target" in unreadable
    named = _invoke("explain", TEXT, *quiet, "-t", "0:6=per", "--layer", "1", "--json")
    assert named.exit_code == 0, named.output
    (row,) = [json.loads(line) for line in named.stdout.splitlines()]
    assert (row["entity"]["word"], row["entity"]["label"], row["target"]) == (
        "Angela",
        "PER",
        "PER",
    )
    by_word = _invoke("explain", TEXT, *quiet, "-t", "3=LOC", "--layer", "1", "--json")
    assert by_word.exit_code == 0, by_word.output
    assert json.loads(by_word.stdout)["entity"]["word"] == "Apple"  # the fourth word
    predicted = layersal.explain(TEXT, layersal.load(token_dirs[0], token_dirs[2]), layer=1)[0]
    span = f"{predicted.entity['start']}:{predicted.entity['end']}"
    one = _invoke("explain", TEXT, *_model(token_dirs), "-t", span, "--layer", "1")
    assert one.exit_code == 0, one.output
    assert one.output.startswith("text 0: 1 entity: ")


def test_layers_report_and_plot_run_on_a_token_classifier(token_dirs, tmp_path):
    layers = _invoke("layers", TEXT, *_model(token_dirs))
    assert layers.exit_code == 0, layers.output
    count = len(layersal.explain(TEXT, layersal.load(token_dirs[0], token_dirs[2]), layer=1))
    assert layers.output.count("semantic coherence per layer") == count
    assert layers.output.count("entity: ") == count
    page = tmp_path / "report.html"
    report = _invoke("report", TEXT, *_model(token_dirs), "--layer", "1", "-o", page, "--metrics")
    assert report.exit_code == 0, report.output
    assert page.is_file() and page.stat().st_size > 0
    plots = _invoke("plot", TEXT, *_model(token_dirs), "--layer", "1", "-o", tmp_path / "png")
    assert plots.exit_code == 0, plots.output


# ------------------------------------------------------------------------ explain: zero-shot


def test_labels_make_a_zero_shot_classifier(nli_dir, zero_shot):
    model = ["--model", str(nli_dir[0]), "--lm-head", str(nli_dir[1]), "--layer", "1"]
    want = layersal.explain(NEWS[0], zero_shot, layer=1)
    shown = _invoke("explain", NEWS[0], *model, "--labels", ",".join(LABELS))
    assert shown.exit_code == 0, shown.output
    probs = ", ".join(f"{label} {p:.3f}" for label, p in want.probabilities.items())
    assert shown.output.splitlines()[:3] == [
        f"prediction: {want.prediction}  ({probs})",
        NEWS[0],
        f"hypothesis: This example is {want.prediction}.",
    ]
    assert len(set(want.probabilities.values())) == 3  # the labels' scores differ
    as_json = _invoke("explain", NEWS[0], *model, "--labels", ",".join(LABELS), "--json")
    row = json.loads(as_json.stdout)
    assert (row["task"], row["target"], row["text_pair"]) == (
        "zero_shot",
        want.prediction,
        f"This example is {want.prediction}.",
    )
    assert row["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)


def test_several_targets_labels_with_commas_template_and_multi_label(nli_dir, tiny_dirs):
    model = ["--model", str(nli_dir[0]), "--lm-head", str(nli_dir[1]), "--layer", "1"]
    labels = ["--labels", "sports,politics", "--label", "money, markets"]
    comma = _invoke("explain", NEWS[2], *model, *labels, "-t", "sports,money, markets", "--json")
    assert comma.exit_code == 0, comma.output
    rows = [json.loads(line) for line in comma.stdout.splitlines()]
    assert [r["target"] for r in rows] == ["sports", "money, markets"]
    assert list(rows[0]["probabilities"]) == ["sports", "politics", "money, markets"]
    repeated = _invoke(
        "explain", NEWS[2], *model, *labels, "-t", "politics", "-t", "sports", "--json"
    )
    assert [json.loads(line)["target"] for line in repeated.stdout.splitlines()] == [
        "politics",
        "sports",
    ]
    whole = _invoke("explain", NEWS[2], *model, *labels, "-t", "money, markets", "--json")
    assert json.loads(whole.stdout)["target"] == "money, markets"
    shown = _invoke(
        "explain", NEWS[2], *model, *labels, "--template", "It is about {}!", "--multi-label",
        "--json",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    row = json.loads(shown.stdout)
    assert row["text_pair"] == f"It is about {row['target']}!"
    lm = layersal.load(
        nli_dir[0], nli_dir[1], task="zero-shot", labels=["sports", "politics", "money, markets"],
        template="It is about {}!", multi_label=True,
    )  # fmt: skip
    assert row["probabilities"] == pytest.approx(
        layersal.explain(NEWS[2], lm, layer=1).probabilities, abs=1e-5
    )
    assert sum(row["probabilities"].values()) != pytest.approx(1.0, abs=1e-3)  # independent


def test_zero_shot_mistakes_are_one_line(nli_dir, tiny_dirs):
    nli = ["--model", str(nli_dir[0]), "--lm-head", str(nli_dir[1]), "--layer", "1"]
    no_labels = _one_error_line(_invoke("explain", NEWS[0], *nli))
    assert "classifies pairs of texts" in no_labels and "--labels" in no_labels
    template = _one_error_line(_invoke("explain", NEWS[0], *nli, "--template", "{}"))
    assert "give its candidate labels with --labels" in template
    unknown = _one_error_line(_invoke("explain", NEWS[0], *nli, "--labels", "a,b", "-t", "c"))
    assert "unknown zero-shot label 'c'; labels are: a, b" in unknown
    empty = _one_error_line(_invoke("explain", NEWS[0], *nli, "--labels", " , "))
    assert "--labels names no label" in empty
    slot = _one_error_line(_invoke("explain", NEWS[0], *nli, "--labels", "a,b", "--template", "x"))
    assert "template must hold one '{}'" in slot
    classifier, head = tiny_dirs["bert"]
    not_nli = _one_error_line(
        _invoke("explain", NEWS[0], "--model", classifier, "--lm-head", head, "--labels", "a,b")
    )
    assert "needs a natural-language-inference model" in not_nli
    several = _one_error_line(
        _invoke("explain", NEWS[0], "--model", classifier, "-t", "neg", "-t", "pos")
    )
    assert "--target is given 2 times" in several
    pair = _one_error_line(_invoke("explain", NEWS[0], *nli, "--labels", "a,b", "--pair", "x"))
    assert "classifies single texts" in pair


def test_layers_and_report_take_zero_shot_labels(nli_dir, tmp_path):
    nli = ["--model", str(nli_dir[0]), "--lm-head", str(nli_dir[1]), "--labels", ",".join(LABELS)]
    layers = _invoke("layers", NEWS[0], *nli)
    assert layers.exit_code == 0, layers.output
    assert layers.output.startswith("label: ")
    page = tmp_path / "zs.html"
    report = _invoke("report", *NEWS[:2], *nli, "--layer", "1", "-o", page, "-t", "sports,business")
    assert report.exit_code == 0, report.output
    assert page.is_file()


# ------------------------------------------------------------------------------ dataset runs


def _write_texts(path, texts):
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def test_a_dataset_run_writes_a_row_per_entity(token_dirs, tmp_path):
    lm = layersal.load(token_dirs[0], token_dirs[2])
    source = _write_texts(tmp_path / "in.txt", TOKEN_TEXTS)
    out = tmp_path / "out.parquet"
    summary = explain_dataset(source, out, model=lm, layer=1, batch_size=2, shard_rows=2)
    want = [
        (i, e) for i, t in enumerate(TOKEN_TEXTS) if t for e in layersal.explain(t, lm, layer=1)
    ]
    rows = pq.read_table(out).to_pylist()
    assert (summary.rows, summary.errors) == (len(want), 1)  # the empty text is a bad row
    assert [(r["id"], r["entity_start"], r["entity_end"]) for r in rows] == [
        (i, e.entity["start"], e.entity["end"]) for i, e in want
    ]
    for r, (_, e) in zip(rows, want):
        assert (
            r["entity_word"] == e.entity["word"] == r["text"][r["entity_start"] : r["entity_end"]]
        )
        assert r["entity_label"] == r["target"] == e.entity["label"]
        assert r["entity_probability"] == pytest.approx(e.entity["probability"], rel=1e-5)
        assert r["token_scores"] == pytest.approx(e.scores, abs=1e-5)
        assert r["text_pair"] is None
    names = pq.read_schema(out / "part-000000.parquet").names
    assert names[names.index("target") + 1 : names.index("layer")] == [
        *ENTITY_COLUMNS,
        "entity_probability",
    ]
    cli = _invoke(
        "explain-dataset", source, "--out", tmp_path / "cli.parquet", *_model(token_dirs),
        "--layer", "1", "--batch-size", "2", "--shard-rows", "2", "--no-progress",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert f"wrote {len(want)} rows in 2 shards" in cli.output
    again = pq.read_table(tmp_path / "cli.parquet").to_pylist()
    assert [[r[c] for c in ENTITY_COLUMNS] for r in again] == [
        [r[c] for c in ENTITY_COLUMNS] for r in rows
    ]


def test_a_span_target_explains_that_span_in_every_text(token_dirs, tmp_path):
    source = _write_texts(tmp_path / "in.txt", [TEXT, "Apple opened a store"])
    out = tmp_path / "out.parquet"
    explain_dataset(source, out, model=str(token_dirs[1]), lm_head=str(token_dirs[2]),
                    layer=1, target="0:5=ORG")  # fmt: skip
    rows = pq.read_table(out).to_pylist()
    assert [(r["id"], r["entity_word"], r["entity_label"]) for r in rows] == [
        (0, "Angela", "ORG"),  # 0:5 widened to the word it touches
        (1, "Apple", "ORG"),
    ]
    with pytest.raises(InputError, match="cannot read 'x:y' as an entity target"):
        explain_dataset(source, tmp_path / "bad.parquet", model=str(token_dirs[1]), target="x:y")
    with pytest.raises(InputError, match="unknown entity label 'DATE'"):
        explain_dataset(source, tmp_path / "bad.parquet", model=str(token_dirs[1]), target="3=DATE")
    assert not (tmp_path / "bad.parquet").exists()


def test_texts_without_entities_are_done_once_and_the_run_resumes(token_dirs, tmp_path):
    """Shards whose texts have no entity are written (with no rows) and never explained again;
    an interrupted run continues where it stopped and ends with the rows of a whole run."""
    texts = [f"{TEXT} number {i}" for i in range(6)]
    source = _write_texts(tmp_path / "in.txt", texts)
    quiet = {"model": str(token_dirs[1]), "lm_head": str(token_dirs[2]), "layer": 1}
    out = tmp_path / "quiet.parquet"
    seen: list[int] = []

    def stop(info):
        seen.append(info["shard"])
        if info["shard"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explain_dataset(source, out, shard_rows=2, on_shard=stop, **quiet)
    assert (out / "part-000000.parquet").is_file()
    summary = explain_dataset(source, out, shard_rows=2, on_shard=lambda i: seen.append(i["shard"]),
                              **quiet)  # fmt: skip
    assert seen == [0, 1, 2]  # shard 0 is not explained again
    assert (summary.resumed_shards, summary.explained, summary.rows, summary.shards) == (1, 4, 0, 3)
    again = explain_dataset(source, out, shard_rows=2, **quiet)
    assert again.already_complete and again.explained == 0
    # with entities: interrupted after its first shard, resumed, the same rows as a whole run
    found = {"model": str(token_dirs[0]), "lm_head": str(token_dirs[2]), "layer": 1}
    resumed, whole = tmp_path / "found.parquet", tmp_path / "whole.parquet"
    with pytest.raises(KeyboardInterrupt):
        explain_dataset(source, resumed, shard_rows=2, on_shard=stop, **found)
    explain_dataset(source, resumed, shard_rows=2, **found)
    explain_dataset(source, whole, shard_rows=2, **found)
    a, b = pq.read_table(resumed).to_pylist(), pq.read_table(whole).to_pylist()
    assert len(a) > len(texts)  # several entities a text
    assert [[r[c] for c in ["id", *ENTITY_COLUMNS]] for r in a] == [
        [r[c] for c in ["id", *ENTITY_COLUMNS]] for r in b
    ]
    for x, y in zip(a, b):
        assert x["token_scores"] == pytest.approx(y["token_scores"], abs=1e-5)


def test_auto_settles_on_the_entities_of_the_first_texts(token_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    source = _write_texts(tmp_path / "in.txt", TOKEN_TEXTS)
    out = tmp_path / "auto.parquet"
    summary = explain_dataset(source, out, model=str(token_dirs[0]), lm_head=str(token_dirs[2]))
    record = json.loads((out / "_auto_layer.json").read_text())
    assert record["table"] and summary.settings.get("auto_rule") is not None
    lm = layersal.load(token_dirs[0], token_dirs[2])
    entities = len(layersal.explain([t for t in TOKEN_TEXTS if t], lm, layer=1))
    assert {v["n_texts"] for v in record["table"].values()} <= set(range(1, entities + 1))
    assert summary.rows == entities
    with pytest.raises(InputError, match="finds none there: name a `layer`"):
        explain_dataset(source, tmp_path / "none.parquet", model=str(token_dirs[1]),
                        lm_head=str(token_dirs[2]))  # fmt: skip
    assert not (tmp_path / "none.parquet").exists()


def test_a_zero_shot_dataset_run_writes_a_row_per_label(nli_dir, zero_shot, tmp_path):
    source = _write_texts(tmp_path / "news.txt", NEWS)
    out = tmp_path / "zs.parquet"
    common = {"model": str(nli_dir[0]), "lm_head": str(nli_dir[1]), "layer": 1, "labels": LABELS}
    summary = explain_dataset(source, out, target=["sports", "business"], **common)
    rows = pq.read_table(out).to_pylist()
    assert summary.rows == 6
    assert [(r["id"], r["target"]) for r in rows] == [
        (i, label) for i in range(3) for label in ("sports", "business")
    ]
    for r in rows:
        want = layersal.explain(r["text"], zero_shot, layer=1, target=r["target"])
        assert r["text_pair"] == f"This example is {r['target']}."
        assert r["prediction"] == want.prediction
        assert r["probabilities"] == pytest.approx(list(want.probabilities.values()), abs=1e-5)
        assert r["token_scores"] == pytest.approx(want.scores, abs=1e-5)
        assert 1 in r["word_segments"]  # the hypothesis' words, offsets into text_pair
    assert "entity_start" not in pq.read_schema(out / "part-000000.parquet").names
    manifest = json.loads((out / "_layersal.json").read_text())["settings"]
    assert manifest["zero_shot"] == {
        "labels": LABELS,
        "template": "This example is {}.",
        "multi_label": False,
    }
    with pytest.raises(InputError, match="zero_shot"):  # other labels: another run
        explain_dataset(source, out, **{**common, "labels": ["sports", "politics"]})
    top = tmp_path / "top.parquet"
    cli = _invoke(
        "explain-dataset", source, "--out", top, "--model", nli_dir[0], "--lm-head", nli_dir[1],
        "--layer", "1", "--labels", ",".join(LABELS), "--no-progress",
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    predicted = [layersal.explain(t, zero_shot, layer=1).prediction for t in NEWS]
    assert [r["target"] for r in pq.read_table(top).to_pylist()] == predicted
    loaded = tmp_path / "loaded.parquet"
    explain_dataset(source, loaded, model=zero_shot, layer=1)  # a zero-shot LoadedModel
    assert (
        json.loads((loaded / "_layersal.json").read_text())["settings"]["zero_shot"]["labels"]
        == LABELS
    )


def test_zero_shot_dataset_mistakes(nli_dir, tiny_dirs, tmp_path):
    source = _write_texts(tmp_path / "news.txt", NEWS)
    out = tmp_path / "out.parquet"
    nli = {"model": str(nli_dir[0]), "layer": 1}
    with pytest.raises(InputError, match="zero-shot classifier of candidate `labels`"):
        explain_dataset(source, out, **nli)
    with pytest.raises(InputError, match="unknown zero-shot label 'c'"):
        explain_dataset(source, out, labels=["a", "b"], target=["a", "c"], **nli)
    table = tmp_path / "news.jsonl"
    table.write_text("".join(json.dumps({"text": t, "x": "y"}) + "\n" for t in NEWS))
    with pytest.raises(InputError, match="as a zero-shot classifier classifies single texts"):
        explain_dataset(table, out, labels=["a", "b"], pair_column="x", **nli)
    with pytest.raises(ModelLoadError, match="natural-language-inference"):
        explain_dataset(source, out, model=str(tiny_dirs["bert"][0]), labels=["a", "b"])
    with pytest.raises(InputError, match="one target"):
        explain_dataset(source, out, model=str(tiny_dirs["bert"][0]), target=["neg", "pos"])
    with pytest.raises(InputError, match="give its candidate `labels`"):
        explain_dataset(source, out, multi_label=True, **nli)
    assert not out.exists()
    cli = _invoke("explain-dataset", source, "--out", out, "--model", nli_dir[0], "--no-progress")
    line = _one_error_line(cli)
    assert "--pair-column" in line and "--labels" in line


def test_the_ray_engine_writes_the_same_entity_and_label_rows(token_dirs, nli_dir, tmp_path):
    try:
        import ray
        import ray.data
    except ImportError:
        pytest.skip("ray is not installed (pip install 'layersal[ray]'): Ray engine not tested")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        runs = [
            (TOKEN_TEXTS, {"model": str(token_dirs[0]), "lm_head": str(token_dirs[2])}),
            (NEWS, {"model": str(nli_dir[0]), "lm_head": str(nli_dir[1]), "labels": LABELS,
                    "target": ["politics", "sports"]}),
        ]  # fmt: skip
        for n, (texts, model) in enumerate(runs):
            source = _write_texts(tmp_path / f"in{n}.txt", texts)
            common = {**model, "layer": 1, "shard_rows": 2, "batch_size": 2}
            local, remote = tmp_path / f"local{n}.parquet", tmp_path / f"ray{n}.parquet"
            explain_dataset(source, local, **common)
            explain_dataset(source, remote, engine="ray", num_workers=1, ray_reads="workers",
                            **common)  # fmt: skip
            a, b = pq.read_table(local).to_pylist(), pq.read_table(remote).to_pylist()
            assert len(a) == len(b) > len(texts) - 1
            same = ["id", "text", "text_pair", "target", "prediction", "words", "tokens"]
            same += ENTITY_COLUMNS if n == 0 else []
            assert [[r[c] for c in same] for r in a] == [[r[c] for c in same] for r in b]
            for x, y in zip(a, b):
                assert x["probabilities"] == pytest.approx(y["probabilities"], abs=1e-6)
                assert x["token_scores"] == pytest.approx(y["token_scores"], abs=1e-5)
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------- bench


def test_bench_measures_each_entity(token_dirs, tmp_path):
    data = tmp_path / "ner.tsv"
    data.write_text("text\tlabel\n" + "".join(f"{t}\tx\n" for t in TOKEN_TEXTS if t))
    entities = layersal.explain(
        [t for t in TOKEN_TEXTS if t], layersal.load(token_dirs[0], token_dirs[2]), layer=1
    )
    out = tmp_path / "bench"
    ran = _invoke("bench", "-d", data, *_model(token_dirs), "--methods", "gradient",
                  "--no-loo", "-o", out)  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert f"{len(entities)} entities of 3 texts. Target: the entity's type" in ran.output
    assert "| gradient |" in ran.output and "(100%)" in ran.output and "(133%)" not in ran.output
    results = json.loads((out / "results.json").read_text())
    assert results["n_texts"] == len(entities) and results["task"] == "token_classification"
    assert results["n_sources"] == 3  # the texts the entities came from
    none = _invoke("bench", "-d", data, *_model(token_dirs, 1), "--methods", "gradient",
                   "-o", out)  # fmt: skip
    assert "the model finds no entity in the 3 texts" in _one_error_line(none)


def test_bench_gives_a_zero_shot_classifiers_accuracy(nli_dir, zero_shot, tmp_path):
    data = tmp_path / "news.tsv"
    gold = ["sports", "politics", "business"]
    data.write_text("text\tlabel\n" + "".join(f"{t}\t{g}\n" for t, g in zip(NEWS, gold)))
    predicted = [layersal.explain(t, zero_shot, layer=1).prediction for t in NEWS]
    accuracy = sum(p == g for p, g in zip(predicted, gold)) / 3
    model = ["--model", nli_dir[0], "--lm-head", nli_dir[1], "--methods", "gradient", "--no-loo"]
    ran = _invoke("bench", "-d", data, *model, "--labels", ",".join(LABELS), "-o", tmp_path / "b")
    assert ran.exit_code == 0, ran.output
    assert (
        f"3 texts, model accuracy {accuracy:.3f}. Target: the label's zero-shot score" in ran.output
    )
    assert json.loads((tmp_path / "b" / "results.json").read_text())["n_sources"] == 3
    assert json.loads((tmp_path / "b" / "results.json").read_text())["accuracy"] == pytest.approx(
        accuracy
    )
    other = _invoke("bench", "-d", data, *model, "--labels", "a,b", "-o", tmp_path / "c")
    assert other.exit_code == 0, other.output
    assert "no zero-shot accuracy: unknown gold label 'sports'" in other.output
    assert "model accuracy" not in other.output
    missing = _invoke("bench", "-d", data, *model, "-o", tmp_path / "d")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
