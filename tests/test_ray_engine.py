"""The Ray engine against the local one: block planning reads exactly the local engine's shards
(every format), both Ray modes write the same rows, a run resumes across engines, token-budget
batching changes nothing but the batches, and two runs on one output refuse to race. The
killed-worker test is in ``test_ray_faults.py`` (it needs a Ray of its own)."""

from __future__ import annotations

import csv
import fcntl
import json
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from layersal.engines import explain_dataset
from layersal.engines.blocks import plan_blocks, read_block, work_items
from layersal.engines.work import shards, token_batches
from layersal.errors import InputError
from layersal.inputs import Source

from .test_dataset_runs import OPTIONS, _assert_close, _errors, _rows, _synthetic, _write


def _awkward_files(folder: Path) -> list[Path]:
    """One file per format with what trips a reader that splits by bytes: a byte-order mark,
    bad UTF-8, blank lines, bad JSON, a header, csv records spanning lines, no final newline,
    small Parquet row groups."""
    texts = _synthetic(53, seed=5, lo=0, hi=6)
    txt = folder / "a.txt"
    txt.write_bytes("\ufeff".encode() + "\n".join(texts).encode() + b"\n\xff\xfe bad\nlast")
    jsonl = folder / "b.jsonl"
    lines = [json.dumps({"text": t}) if i % 7 else "{bad" for i, t in enumerate(texts)]
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tsv = folder / "c.tsv"
    rows = [f"{t}\t1" if i % 9 else "" for i, t in enumerate(texts)]
    tsv.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n\n", encoding="utf-8")
    table = folder / "d.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i, t in enumerate(texts):
            writer.writerow([t + ("\nsecond line" if i % 5 == 0 else ""), i])
    parquet = folder / "e.parquet"
    pq.write_table(pa.table({"text": texts}), parquet, row_group_size=7)
    return [txt, jsonl, tsv, table, parquet]


def test_blocks_read_exactly_the_local_shards(tmp_path):
    for path in _awkward_files(tmp_path):
        source = Source(path)
        for shard_rows in (1, 4, 10, 1000):
            read = shards(source.rows(), shard_rows)
            want = [(k, [r.__dict__ for r in rows]) for k, rows in read]
            blocks = plan_blocks(source, shard_rows)
            got = [(b.number, [r.__dict__ for r in read_block(source, b)]) for b in blocks]
            assert got == want, (path.name, shard_rows)
            assert sum(len(item) for item in work_items(source, blocks)) == len(blocks)


def test_parquet_blocks_keep_id_and_label_columns_and_nulls(tmp_path):
    path = tmp_path / "ids.parquet"
    texts: list = _synthetic(23, seed=7)
    texts[5] = None
    ids: list = [f"r{i}" for i in range(23)]
    ids[9] = None
    pq.write_table(
        pa.table({"text": texts, "rid": ids, "label": [i % 3 for i in range(23)]}),
        path,
        row_group_size=5,
    )
    source = Source(path, id_column="rid")
    want = [r.__dict__ for r in source.rows()]
    got = [r.__dict__ for b in plan_blocks(source, 4) for r in read_block(source, b)]
    assert got == want
    assert [r["error"] for r in got if r["error"]] == [
        "text is missing (null)",
        "id is missing (null)",
    ]


def test_parquet_blocks_are_grouped_by_row_group(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": _synthetic(30)}), path, row_group_size=10)
    source = Source(path)
    items = work_items(source, plan_blocks(source, 4))
    # blocks start at rows 0 4 8 | 12 16 | 20 24 28: grouped by the row group of their first row
    assert [[b.first_row for b in item] for item in items] == [[0, 4, 8], [12, 16], [20, 24, 28]]


def test_token_batches_keep_to_the_budget(sst2_tiny):
    from layersal.inputs import Row

    texts = _synthetic(40, seed=2, lo=1, hi=30)
    rows = [Row(i, i, t) for i, t in enumerate(texts)]
    batches = token_batches(sst2_tiny, rows, max_tokens=64)
    assert sorted(r.index for b in batches for r in b) == list(range(40))
    lengths = {
        r.index: len(ids)
        for r, ids in zip(rows, sst2_tiny.tokenizer(texts, add_special_tokens=True)["input_ids"])
    }
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[r.index] for r in batch) <= 64
    assert len(batches) > 1


def test_token_budget_batching_gives_the_same_rows(tmp_path, sst2_tiny):
    source = _write(tmp_path / "in.jsonl", _synthetic(45, seed=4, lo=1, hi=25) + [""])
    fixed, budget = tmp_path / "fixed.parquet", tmp_path / "budget.parquet"
    common = dict(model="sst2-tiny", batch_size=8, shard_rows=20, **OPTIONS)
    explain_dataset(source, fixed, **common)
    explain_dataset(source, budget, max_batch_tokens=96, **common)
    _assert_same(_rows(fixed), _rows(budget))
    assert _errors(fixed) == _errors(budget)


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert x["words"] == y["words"] and x["prediction"] == y["prediction"]
        _assert_close(x["token_scores"], y["token_scores"])
        _assert_close(x["word_scores"], y["word_scores"])
        _assert_close(x["probabilities"], y["probabilities"])


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    source = _write(tmp_path / "in.txt", _synthetic(4))
    out = tmp_path / "out.parquet"
    out.mkdir()
    with (out / ".lock").open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="being written by another run"):
            explain_dataset(source, out, model="sst2-tiny", engine="ray", **OPTIONS)


def test_unknown_ray_reads_is_refused(tmp_path):
    source = _write(tmp_path / "in.txt", _synthetic(4))
    with pytest.raises(InputError, match="ray_reads"):
        explain_dataset(source, tmp_path / "o.parquet", engine="ray", ray_reads="nfs", **OPTIONS)


def test_blocks_keep_the_second_text_of_pairs(tmp_path):
    texts = _synthetic(23, seed=7)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(
        "premise\thypothesis\n" + "".join(f"{t}\tnot {t}\n" for t in texts), encoding="utf-8"
    )
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table({"premise": texts, "hypothesis": [f"not {t}" for t in texts]}),
        parquet,
        row_group_size=5,
    )
    for path in (tsv, parquet):
        source = Source(path, "premise", pair_column="hypothesis")
        want = [r.__dict__ for _, rows in shards(source.rows(), 4) for r in rows]
        got = [r.__dict__ for b in plan_blocks(source, 4) for r in read_block(source, b)]
        assert got == want and [r["text_pair"] for r in got] == [f"not {t}" for t in texts]


@pytest.fixture(scope="module")
def local_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        pytest.skip("ray is not installed (pip install 'layersal[ray]'): Ray engine not tested")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize(("reads", "suffix"), [("driver", ".jsonl"), ("workers", ".csv")])
def test_ray_engine_writes_the_same_rows_as_the_local_one(tmp_path, local_ray, reads, suffix):
    texts = _synthetic(40, seed=3) + [""]
    texts[3] = "a film\nspanning two lines"  # a csv record over two lines
    source = _write(tmp_path / f"in{suffix}", texts)
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    common = dict(model="sst2-tiny", batch_size=8, shard_rows=10, **OPTIONS)
    explain_dataset(source, local, engine="local", **common)
    # workers read an input URI and write to an output URI too
    given = source.as_uri() if reads == "workers" else source
    out = remote.as_uri() if reads == "workers" else remote
    summary = explain_dataset(given, out, engine="ray", num_workers=2, ray_reads=reads, **common)
    assert (summary.rows, summary.errors, summary.shards) == (40, 1, 5)
    a, b = _rows(local), _rows(remote)
    assert [r["id"] for r in a] == list(range(40))
    assert [r["label"] for r in b] == [str(i % 2) for i in range(40)]
    _assert_same(a, b)
    assert _errors(local) == _errors(remote) == [{"id": 40, "reason": "empty text"}]
    assert (remote / "_blocks.json").is_file() == (reads == "workers")


def test_ray_resumes_a_local_run_and_repeats_nothing(tmp_path, local_ray):
    source = _write(tmp_path / "in.parquet", _synthetic(50, seed=8))  # row groups of 4 rows
    out, whole = tmp_path / "out.parquet", tmp_path / "whole.parquet"
    common = dict(model="sst2-tiny", batch_size=8, shard_rows=10, **OPTIONS)

    def stop(info):
        if info["shard"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explain_dataset(source, out, on_shard=stop, **common)
    summary = explain_dataset(
        source, out, engine="ray", num_workers=2, ray_reads="workers", **common
    )
    assert (summary.resumed_shards, summary.explained, summary.rows) == (2, 30, 50)
    explain_dataset(source, whole, **common)
    _assert_same(_rows(whole), _rows(out))


def test_a_uri_input_reads_like_its_path(tmp_path):
    from layersal.engines.blocks import uri_source

    for path in _awkward_files(tmp_path):
        local = Source(path)
        source, named = uri_source(path.as_uri(), None, None, None, tmp_path)
        assert named == {"input": path.as_uri(), "input_bytes": path.stat().st_size}
        blocks = plan_blocks(source, 10)
        assert blocks == plan_blocks(local, 10)
        got = [r.__dict__ for b in blocks for r in read_block(source, b)]
        assert got == [r.__dict__ for r in local.rows()], path.name


def test_a_uri_input_needs_the_ray_workers(tmp_path):
    path = _write(tmp_path / "in.txt", _synthetic(4))
    with pytest.raises(InputError, match="is a URI"):
        explain_dataset(path.as_uri(), tmp_path / "o.parquet", **OPTIONS)
    with pytest.raises(InputError, match="no such file"):
        explain_dataset((tmp_path / "none.txt").as_uri(), tmp_path / "o.parquet", engine="ray")


def test_a_worker_failing_on_a_changed_input_says_so(tmp_path, local_ray):
    from layersal.engines.blocks import load_plan
    from layersal.engines.store import store_for

    source = _write(tmp_path / "in.txt", _synthetic(20, seed=9))
    out = tmp_path / "out.parquet"
    common = dict(model="sst2-tiny", batch_size=8, shard_rows=10, **OPTIONS)

    def stop(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explain_dataset(source, out, on_shard=stop, **common)  # shard 0 written
    load_plan(store_for(out), 10, Source(source))  # the plan made before the file changed
    data = source.read_bytes()
    last = data.rindex(b"\n", 0, len(data) - 1)
    source.write_bytes(data[:last] + b" " + data[last + 1 :])  # same size, one row fewer
    ray_run = dict(engine="ray", num_workers=1, ray_reads="workers", **common)
    with pytest.raises(InputError, match="changed since the run began"):  # its fingerprint
        explain_dataset(source, out, **ray_run)
    # a file changed during a run, after its fingerprint was taken: the workers notice too
    manifest = json.loads((out / "_layersal.json").read_text())
    manifest["settings"]["input_fingerprint"] = Source(source).fingerprint()
    (out / "_layersal.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="holds 9 rows, not the 10 planned"):
        explain_dataset(source, out, **ray_run)


def test_worker_mistakes_are_found_behind_rays_wrapping():
    from layersal.engines.ray import worker_mistake

    class Wrapped(RuntimeError):
        def __init__(self, cause):
            super().__init__("ray traceback ...")
            self.cause = cause

    outer = RuntimeError("ray data")
    outer.__cause__ = Wrapped(InputError("block 3 holds 9 rows"))
    found = worker_mistake(outer)
    assert isinstance(found, InputError) and str(found) == "block 3 holds 9 rows"
    missing = worker_mistake(Wrapped(FileNotFoundError(2, "No such file", "/in.txt")))
    assert isinstance(missing, InputError) and "every node shares" in str(missing)
    assert worker_mistake(Wrapped(ZeroDivisionError())) is None
