"""Dataset runs (`explain-dataset`): formats, equality with `explain`, bad rows, resume,
refused restarts, flat memory (the Ray engine against the local one: ``test_ray_engine.py``)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import layersal
from layersal.engines import explain_dataset
from layersal.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "a gripping, beautifully acted film",
    "dull and lifeless",
    'the "plot" is thin, but the jokes land',
    "not bad at all",
    "an utterly forgettable sequel",
    "warm , funny and smart",
    "it drags",
    "one of the year 's best",
    "too long by half, and too loud",
    "sweet",
    "a mess from start to finish",
    "touching without being sentimental",
]
OPTIONS = {"layer": 1}
NAMED_RULE = {"rule": "cp_id"}  # a run whose options name the rule of its fixed layer
TOL = 1e-5


def _synthetic(n: int, seed: int = 0, lo: int = 3, hi: int = 12) -> list[str]:
    rng = random.Random(seed)
    words = [
        "good",
        "bad",
        "film",
        "movie",
        "plot",
        "acting",
        "great",
        "awful",
        "boring",
        "fun",
        "story",
        "the",
        "a",
        "and",
        "but",
        "not",
        "very",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def _write(path: Path, texts: list[str], labels: list[str] | None = None) -> Path:
    """Write ``texts`` in the format named by ``path``'s suffix (columns text + label)."""
    labels = labels or [str(i % 2) for i in range(len(texts))]
    suffix = path.suffix
    if suffix == ".txt":
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    elif suffix == ".tsv":
        path.write_text(
            "sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in zip(texts, labels)),
            encoding="utf-8",
        )
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(zip(texts, labels))
    elif suffix == ".jsonl":
        path.write_text(
            "".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(texts, labels)),
            encoding="utf-8",
        )
    elif suffix == ".parquet":
        pq.write_table(pa.table({"text": texts, "label": labels}), path, row_group_size=4)
    return path


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out).to_pylist()


def _assert_close(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b)
    assert all(abs(x - y) <= TOL for x, y in zip(a, b)), (a, b)


def _errors(out: Path) -> list[dict]:
    path = out.with_name(out.name.replace(".parquet", ".errors.jsonl"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def reference(sst2_tiny):
    """What `layersal.explain` says about TEXTS, in one call."""
    return layersal.explain(TEXTS, sst2_tiny, batch_size=4, layer_report=False, **OPTIONS)


@pytest.mark.parametrize("suffix", [".txt", ".tsv", ".csv", ".jsonl", ".parquet"])
def test_every_format_matches_explain(tmp_path, sst2_tiny, reference, suffix):
    source = _write(tmp_path / f"in{suffix}", TEXTS)
    out = tmp_path / "out.parquet"
    summary = explain_dataset(source, out, model=sst2_tiny, batch_size=4, shard_rows=5, **OPTIONS)
    assert (summary.rows, summary.errors, summary.shards) == (len(TEXTS), 0, 3)
    rows = _rows(out)
    assert [r["id"] for r in rows] == list(range(len(TEXTS)))
    assert [r["text"] for r in rows] == TEXTS
    if suffix != ".txt":
        assert [r["label"] for r in rows] == [str(i % 2) for i in range(len(TEXTS))]
    for row, e in zip(rows, reference):
        assert row["prediction"] == e.prediction and row["target"] == e.target
        assert row["layer"] == e.layer == 1
        assert row["method"] == "dls" and row["model"] == "sst2-tiny"
        _assert_close(row["probabilities"], [e.probabilities[l] for l in sst2_tiny.labels])
        assert row["words"] == [w.text for w in e.words]
        assert row["word_offsets"] == [[w.start, w.end] for w in e.words]
        _assert_close(row["word_scores"], [w.score for w in e.words])
        assert row["tokens"] == [t.text for t in e.tokens]
        assert row["token_offsets"] == [[t.start, t.end] for t in e.tokens]
        _assert_close(row["token_scores"], e.scores)
    metadata = json.loads(pq.read_schema(out / "part-000000.parquet").metadata[b"layersal"])
    assert metadata["labels"] == sst2_tiny.labels


def test_id_and_label_columns(tmp_path, sst2_tiny):
    source = tmp_path / "in.tsv"
    source.write_text(
        "uid\tsentence\tgold\nr-7\tfine work\tpos\nr-9\tpoor work\tneg\n", encoding="utf-8"
    )
    out = tmp_path / "out.parquet"
    explain_dataset(source, out, model=sst2_tiny, id_column="uid", label_column="gold", **OPTIONS)
    rows = _rows(out)
    assert [(r["id"], r["label"]) for r in rows] == [("r-7", "pos"), ("r-9", "neg")]
    table = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": [10, 11], "content": ["fine work", ""]}), table)
    explain_dataset(table, tmp_path / "p.parquet", model=sst2_tiny, id_column="key", **OPTIONS)
    assert [r["id"] for r in _rows(tmp_path / "p.parquet")] == ["10"]
    assert _errors(tmp_path / "p.parquet") == [{"id": "11", "reason": "empty text"}]
    with pytest.raises(InputError, match="no column 'nope'"):
        explain_dataset(source, tmp_path / "x.parquet", model=sst2_tiny, id_column="nope")


def test_bad_rows_go_to_the_errors_file(tmp_path, sst2_tiny, monkeypatch):
    from layersal.job import Explainer

    real = Explainer.explain_grouped

    def picky(self, texts, *args, **kwargs):
        if any("POISON" in t for t in texts):
            raise InputError("this text is poisonous")
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(Explainer, "explain_grouped", picky)
    source = tmp_path / "in.txt"
    source.write_bytes(
        b"good film\n\n   \nbad \xff\xfe bytes\nnice POISON here\nfine acting\ndull\n"
    )
    out = tmp_path / "out.parquet"
    summary = explain_dataset(source, out, model=sst2_tiny, shard_rows=4, **OPTIONS)
    assert [r["id"] for r in _rows(out)] == [0, 5, 6]
    assert summary.errors == 4
    errors = _errors(out)
    assert [e["id"] for e in errors] == [1, 2, 3, 4]
    reasons = [e["reason"] for e in errors]
    assert reasons[0] == "empty text" and "whitespace" in reasons[1]
    assert "not UTF-8" in reasons[2] and "0xff" in reasons[2]
    assert reasons[3] == "this text is poisonous"

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        '{"text": "ok"}\nnot json\n{"other": 1}\n{"text": 5}\n"a bare string"\n', encoding="utf-8"
    )
    summary = explain_dataset(jsonl, tmp_path / "j.parquet", model=sst2_tiny, **OPTIONS)
    assert [r["id"] for r in _rows(tmp_path / "j.parquet")] == [0, 4]
    assert [e["id"] for e in _errors(tmp_path / "j.parquet")] == [1, 2, 3]
    assert "not JSON" in _errors(tmp_path / "j.parquet")[0]["reason"]


def test_restart_with_other_settings_is_refused(tmp_path, sst2_tiny):
    source = _write(tmp_path / "in.txt", TEXTS[:4])
    out = tmp_path / "out.parquet"
    explain_dataset(source, out, model=sst2_tiny, **OPTIONS)
    again = explain_dataset(source, out, model=sst2_tiny, **OPTIONS)  # complete: nothing to do
    assert (again.rows, again.explained, again.resumed_shards) == (4, 0, 1)
    with pytest.raises(InputError, match=r"other settings \(options: .*`overwrite=True`"):
        explain_dataset(source, out, model=sst2_tiny, layer=0)
    with pytest.raises(InputError, match="shard_rows"):
        explain_dataset(source, out, model=sst2_tiny, shard_rows=2, **OPTIONS)
    redone = explain_dataset(source, out, model=sst2_tiny, layer=0, overwrite=True)
    assert redone.rows == 4 and {r["layer"] for r in _rows(out)} == {0}
    import fcntl

    with open(out / ".lock", "a+") as held:  # another run is writing here
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="being written by another run"):
            explain_dataset(source, out, model=sst2_tiny, layer=0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a layersal dataset run"):
        explain_dataset(source, tmp_path / "mine", model=sst2_tiny, overwrite=False)
    with pytest.raises(InputError, match="refuses to delete"):
        explain_dataset(source, tmp_path / "mine", model=sst2_tiny, overwrite=True)


def test_cli_refuses_a_changed_restart(tmp_path):
    from typer.testing import CliRunner

    from layersal.cli import app

    source = _write(tmp_path / "in.txt", TEXTS[:3])
    out = tmp_path / "out.parquet"
    runner = CliRunner()
    first = runner.invoke(
        app, ["explain-dataset", str(source), "--out", str(out), "--layer", "1", "--no-progress"]
    )
    assert first.exit_code == 0, first.output
    changed = runner.invoke(
        app, ["explain-dataset", str(source), "--out", str(out), "--layer", "0", "--no-progress"]
    )
    assert changed.exit_code == 2
    assert "other settings" in changed.output and "--overwrite" in changed.output


@pytest.mark.slow
def test_resume_after_kill_loses_and_repeats_nothing(tmp_path, sst2_tiny):
    texts = _synthetic(300, seed=1)
    source = _write(tmp_path / "in.txt", texts)
    out = tmp_path / "killed.parquet"
    command = [
        sys.executable,
        "-m",
        "layersal",
        "explain-dataset",
        str(source),
        "--out",
        str(out),
        "--layer",
        "1",
        "--batch-size",
        "10",
        "--shard-rows",
        "30",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "part-000000.parquet").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no shard written in 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    manifest = json.loads((out / "_layersal.json").read_text())
    assert manifest["complete"] is False
    written = sorted(p.name for p in out.glob("part-*.parquet"))
    assert 1 <= len(written) < 10

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "from an earlier run" in resumed.stderr

    whole = tmp_path / "whole.parquet"
    explain_dataset(source, whole, model=sst2_tiny, batch_size=10, shard_rows=30, **OPTIONS)
    got, want = _rows(out), _rows(whole)
    assert [r["id"] for r in got] == [r["id"] for r in want] == list(range(300))
    for a, b in zip(got, want):
        assert a["text"] == b["text"] and a["words"] == b["words"]
        _assert_close(a["token_scores"], b["token_scores"])
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_run(tmp_path, bert_tiny):
    """RSS sampled after every shard: the last quarter is no higher than the first (+ slack).

    The 10,000-text measurement lives in bench/speed.py.
    """
    source = _write(tmp_path / "in.txt", _synthetic(3200, seed=2, lo=2, hi=5))
    page = os.sysconf("SC_PAGE_SIZE")
    samples: list[float] = []

    def sample(_info):
        with open("/proc/self/statm") as handle:
            samples.append(int(handle.read().split()[1]) * page / 2**20)

    summary = explain_dataset(
        source,
        tmp_path / "out.parquet",
        model=bert_tiny,
        batch_size=50,
        shard_rows=100,
        on_shard=sample,
        **OPTIONS,
    )
    assert summary.rows == 3200 and len(samples) == 32
    quarter = len(samples) // 4
    first, last = max(samples[:quarter]), max(samples[-quarter:])
    assert last - first < 24, (
        f"RSS grew from {first:.0f} to {last:.0f} MiB: {[round(s) for s in samples]}"
    )


def test_ray_missing_gives_an_install_hint(tmp_path, sst2_tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    source = _write(tmp_path / "in.txt", TEXTS[:2])
    with pytest.raises(InputError, match=r"pip install 'layersal\[ray\]'"):
        explain_dataset(
            source, tmp_path / "out.parquet", model="sst2-tiny", engine="ray", **OPTIONS
        )


def test_auto_layer_is_calibrated_once_and_kept_on_resume(tmp_path, bert_tiny, monkeypatch):
    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    from layersal.saliency import layer_choice

    calls = []
    real = layer_choice.calibrate

    def counting(lm, texts, options, **kwargs):
        calls.append(list(texts))
        return real(lm, texts, options, **kwargs)

    monkeypatch.setattr(layer_choice, "calibrate", counting)
    texts = _synthetic(40, seed=3)
    source = _write(tmp_path / "in.txt", texts)
    out = tmp_path / "auto.parquet"

    def stop(info):
        raise KeyboardInterrupt  # killed after the first shard

    with pytest.raises(KeyboardInterrupt):
        explain_dataset(
            source, out, model=bert_tiny, layer="auto", batch_size=8, shard_rows=20, on_shard=stop
        )
    recorded = json.loads((out / "_auto_layer.json").read_text())
    chosen = recorded["options"]
    assert calls == [texts] and recorded["n_texts"] == 40 and recorded["source"] == "calibrated"
    assert recorded["table"], "the run folder keeps the whole calibration table"
    rows = _rows(out)
    assert len(rows) == 20 and {r["layer"] for r in rows} == {recorded["layer"]}
    fixed = layersal.explain(texts[:5], bert_tiny, **chosen)
    for row, e in zip(rows, fixed):
        _assert_close(row["token_scores"], e.scores)
    (tmp_path / "cache").rename(tmp_path / "gone")  # the per-model cache lost too
    again = explain_dataset(source, out, model=bert_tiny, layer="auto", batch_size=8, shard_rows=20)
    assert (
        again.settings["auto_layer"] == chosen["layer"]
        and again.settings["auto_rule"] == chosen["rule"]
    )
    assert len(calls) == 1, "a resumed run recalibrated instead of reusing the recorded choice"
    assert again.explained == 20 and [r["id"] for r in _rows(out)] == list(range(40))
    assert {r["layer"] for r in _rows(out)} == {recorded["layer"]}


def test_bundled_model_takes_auto_from_its_card(tmp_path, sst2_tiny, monkeypatch):
    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    from layersal.saliency import layer_choice

    def refuse(*args, **kwargs):
        raise AssertionError("a bundled model should not calibrate")

    monkeypatch.setattr(layer_choice, "calibrate", refuse)
    out = tmp_path / "card.parquet"
    explain_dataset(_write(tmp_path / "in.txt", TEXTS[:6]), out, model=sst2_tiny, layer="auto")
    recorded = json.loads((out / "_auto_layer.json").read_text())
    assert recorded["source"] == "model card"


def test_cli_default_layer_is_auto_and_says_which(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from layersal.cli import app

    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    source = _write(tmp_path / "in.txt", TEXTS[:6])
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(
        app, ["explain-dataset", str(source), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "_auto_layer.json").read_text())
    layer = recorded["layer"]
    assert f"DLS at layer {recorded['options']['layer']}, rule {recorded['rule']}" in result.output
    assert {r["layer"] for r in _rows(out)} == {layer}


def test_a_run_killed_before_its_first_manifest_resumes(tmp_path, sst2_tiny):
    source = _write(tmp_path / "in.txt", TEXTS[:4])
    out = tmp_path / "early.parquet"
    (out / "_errors").mkdir(parents=True)
    (out / ".lock").touch()
    (out / "._layersal.json.tmp-4242").write_bytes(b'{"settin')  # killed mid-write
    summary = explain_dataset(source, out, model=sst2_tiny, **OPTIONS)
    assert summary.rows == 4 and not list(out.glob(".*.tmp-*"))


def test_a_run_that_fails_before_its_first_shard_leaves_nothing(tmp_path, bert_tiny, monkeypatch):
    monkeypatch.setenv("LAYERSAL_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "bad.jsonl"
    source.write_text("{oops\n[1]\n", encoding="utf-8")
    out = tmp_path / "failed.parquet"
    with pytest.raises(InputError, match="at least one readable text"):
        explain_dataset(source, out, model=bert_tiny, layer="auto")
    assert not out.exists() and not (tmp_path / "failed.errors.jsonl").exists()


@pytest.mark.parametrize("where", ["file/out.parquet", "/proc/layersal-out.parquet"])
def test_an_unwritable_output_is_refused_before_the_work(tmp_path, sst2_tiny, where):
    source = _write(tmp_path / "in.txt", TEXTS[:2])
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(InputError, match="cannot write into"):
        explain_dataset(source, tmp_path / where, model=sst2_tiny, **OPTIONS)


def _cli(*args: str):
    from typer.testing import CliRunner

    from layersal.cli import app

    return CliRunner().invoke(app, ["explain-dataset", *args, "--no-progress"])


def _one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_resumes(tmp_path, monkeypatch):
    """The device fills up while the third shard is written: one error line naming the folder
    and the space still needed, no hidden temporary file, and the same command resumes."""
    import errno

    from layersal.engines import store

    source = _write(tmp_path / "in.txt", _synthetic(40, seed=3))
    out, reference = tmp_path / "out.parquet", tmp_path / "reference.parquet"
    args = ["--layer", "1", "--shard-rows", "10"]
    assert _cli(str(source), "--out", str(reference), *args).exit_code == 0
    real_fsync = os.fsync

    def full_at_third_shard(fd: int) -> None:
        if "part-000002.parquet.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", full_at_third_shard)
    failed = _cli(str(source), "--out", str(out), *args)
    line = _one_line(failed)
    assert failed.exit_code == 2
    assert line.startswith("error: no space left for " + str(out)), line
    assert "more for the rest of the run" in line and "rerun the same command" in line
    assert sorted(p.name for p in out.glob("part-*")) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    monkeypatch.setattr(store.os, "fsync", real_fsync)  # space was freed
    resumed = _cli(str(source), "--out", str(out), *args)
    assert resumed.exit_code == 0, resumed.output
    assert "2 of them from an earlier run" in resumed.output
    again, whole = _rows(out), _rows(reference)
    assert [r["id"] for r in again] == [r["id"] for r in whole] == list(range(40))
    for a, b in zip(again, whole):
        _assert_close(a["word_scores"], b["word_scores"])


def test_the_estimate_of_the_space_left_scales_with_the_input_unread():
    from layersal.engines.local import rest_of_run

    # shard 2 (rows 20..29) took 1000 bytes and the input is 30% read: 100 rows in all,
    # 80 from this shard on
    assert rest_of_run(1000, 10, 20, 0.3) == 8000
    assert rest_of_run(1000, 10, 20, 1.0) == 1000  # the last shard


def test_an_input_edited_in_place_is_noticed(tmp_path, sst2_tiny):
    source = _write(tmp_path / "in.txt", TEXTS[:4])
    out = tmp_path / "out.parquet"
    explain_dataset(source, out, model=sst2_tiny, **OPTIONS)
    edited = source.read_text(encoding="utf-8").replace(TEXTS[0], TEXTS[0][::-1], 1)
    assert len(edited) == len(source.read_text(encoding="utf-8"))
    source.write_text(edited, encoding="utf-8")  # same size, other content
    with pytest.raises(InputError, match=r"the content of .*in\.txt changed since the run began"):
        explain_dataset(source, out, model=sst2_tiny, **OPTIONS)


def test_a_large_input_is_fingerprinted_by_its_size_head_and_tail(tmp_path, monkeypatch):
    from layersal import inputs

    monkeypatch.setattr(inputs, "FINGERPRINT_WHOLE", 64)
    monkeypatch.setattr(inputs, "FINGERPRINT_EDGE", 16)
    path = tmp_path / "in.txt"
    path.write_text("a" * 50 + "\n" + "b" * 50 + "\n")
    first = inputs.Source(path).fingerprint()
    path.write_text("a" * 50 + "\n" + "c" * 50 + "\n")  # the tail changed
    assert inputs.Source(path).fingerprint() != first and first.startswith("sha256-edges:")
    path.write_text("z" + "a" * 49 + "\n" + "c" * 50 + "\n")  # the head changed
    assert inputs.Source(path).fingerprint() not in (first,)


def test_the_manifest_names_the_label_column_it_copied(tmp_path, sst2_tiny):
    source = _write(tmp_path / "in.tsv", TEXTS[:4])
    out = tmp_path / "out.parquet"
    explain_dataset(source, out, model=sst2_tiny, **OPTIONS)
    settings = json.loads((out / "_layersal.json").read_text())["settings"]
    assert settings["label_column"] == "label"
    assert [r["label"] for r in _rows(out)] == ["0", "1", "0", "1"]


def test_a_manifest_from_before_fingerprints_still_resumes(tmp_path, sst2_tiny):
    source = _write(tmp_path / "in.tsv", TEXTS[:8])
    out = tmp_path / "out.parquet"
    explain_dataset(source, out, model=sst2_tiny, shard_rows=4, options=NAMED_RULE, **OPTIONS)
    manifest = json.loads((out / "_layersal.json").read_text())
    del manifest["settings"]["input_fingerprint"]
    manifest["settings"]["label_column"] = None  # as older runs recorded a found column
    manifest["complete"] = False
    (out / "_layersal.json").write_text(json.dumps(manifest))
    (out / "part-000001.parquet").unlink()
    summary = explain_dataset(
        source, out, model=sst2_tiny, shard_rows=4, options=NAMED_RULE, **OPTIONS
    )
    assert (summary.resumed_shards, summary.explained, summary.rows) == (1, 4, 8)


def test_the_closing_line_says_what_a_rerun_found(tmp_path):
    source = _write(tmp_path / "in.txt", TEXTS[:3])
    out = tmp_path / "out.parquet"
    first = _one_line(_cli(str(source), "--out", str(out), "--layer", "1"))
    assert first.startswith("wrote 3 rows in 1 shard to ") and "0 bad rows" in first
    manifest = json.loads((out / "_layersal.json").read_text())
    manifest["complete"] = False  # killed after its last shard, before it was marked complete
    (out / "_layersal.json").write_text(json.dumps(manifest))
    finished = _one_line(_cli(str(source), "--out", str(out), "--layer", "1"))
    assert "every shard had been written by the earlier run" in finished
    assert "already complete" not in finished
    assert json.loads((out / "_layersal.json").read_text())["complete"] is True
    again = _one_line(_cli(str(source), "--out", str(out), "--layer", "1"))
    assert "the run was already complete (3 rows in 1 shard)" in again


def test_limit_explains_the_first_rows_and_is_kept_with_the_run(tmp_path, sst2_tiny, reference):
    source = _write(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out.parquet"
    result = _cli(str(source), "--out", str(out), "--layer", "1", "--limit", "3")
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [r["id"] for r in rows] == [0, 1, 2]
    for row, expected in zip(rows, reference[:3]):
        _assert_close(row["word_scores"], [w.score for w in expected.words])
    changed = _cli(str(source), "--out", str(out), "--layer", "1", "--limit", "4")
    assert changed.exit_code == 2 and "limit: 4 now, 3 before" in _one_line(changed)
    with pytest.raises(InputError, match="ray_reads"):
        explain_dataset(source, out, model="sst2-tiny", engine="ray", ray_reads="workers", limit=3)


def test_an_older_fixed_layer_run_resumes_only_under_the_rule_it_began_with(tmp_path, sst2_tiny):
    """Before a fixed DLS layer defaulted to cp_id, it ran under the plain gradient: resuming
    such a run under cp_id would mix two kinds of scores, so it is refused until the rule is
    named."""
    source = _write(tmp_path / "in.txt", TEXTS[:8])
    out = tmp_path / "out.parquet"
    explain_dataset(
        source, out, model=sst2_tiny, shard_rows=4, layer=1, options={"rule": "gradient"}
    )
    manifest = json.loads((out / "_layersal.json").read_text())
    del manifest["settings"]["input_fingerprint"]  # written by the older version
    manifest["settings"]["options"] = {"layer": 1}
    manifest["complete"] = False
    (out / "_layersal.json").write_text(json.dumps(manifest))
    (out / "part-000001.parquet").unlink()
    with pytest.raises(InputError, match=r"'rule': 'gradient'"):
        explain_dataset(source, out, model=sst2_tiny, shard_rows=4, layer=1)
    summary = explain_dataset(
        source, out, model=sst2_tiny, shard_rows=4, layer=1, options={"rule": "gradient"}
    )
    assert (summary.resumed_shards, summary.explained) == (1, 4)


def test_columns_and_ray_options_are_grouped_and_the_flat_spellings_still_work(tmp_path, sst2_tiny):
    from layersal.engines import Columns, RayOptions

    source = tmp_path / "in.tsv"
    source.write_text("key\tbody\tlabel\n7\tfine work\t1\n8\tdull\t0\n")
    grouped = explain_dataset(
        source, tmp_path / "a.parquet", model=sst2_tiny, options=OPTIONS,
        columns=Columns(text="body", id="key"), ray=RayOptions(cpus_per_worker=1),
    )  # fmt: skip
    flat = explain_dataset(
        source,
        tmp_path / "b.parquet",
        model=sst2_tiny,
        text_column="body",
        id_column="key",
        **OPTIONS,
    )
    assert grouped.rows == flat.rows == 2
    assert [r["id"] for r in _rows(tmp_path / "a.parquet")] == ["7", "8"]
    assert _rows(tmp_path / "a.parquet") == _rows(tmp_path / "b.parquet")
    with pytest.raises(InputError, match="has no parameter 'text_colum'"):
        explain_dataset(source, tmp_path / "c.parquet", model=sst2_tiny, text_colum="body")
    with pytest.raises(InputError, match="grouped or flat, not both"):
        explain_dataset(
            source,
            tmp_path / "c.parquet",
            model=sst2_tiny,
            columns=Columns(text="body"),
            id_column="key",
        )
