"""Dataset runs written to a URI (``s3://``, ``gs://``, ``file://`` ...) through pyarrow's
file systems: the same rows, resume and errors as a local folder, atomic commits, and a lease
that keeps two runs from writing one output."""

from __future__ import annotations

import json
import time

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from layersal.engines import explain_dataset
from layersal.engines.store import ArrowStore, LocalStore, is_uri, store_for
from layersal.errors import InputError

from .test_dataset_runs import OPTIONS, _assert_close, _synthetic, _write


class _Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _memory_store(
    base: str = "bucket/out.parquet", lease: float = 600.0, clock: _Clock | None = None
) -> ArrowStore:
    """An :class:`ArrowStore` on pyarrow's in-memory file system (object-store-like)."""
    store = ArrowStore(f"mock://{base}", lease_seconds=lease, clock=clock or time.time)
    store._fs, store._base = pafs._MockFileSystem(), base
    return store


def test_a_location_is_a_uri_or_a_path(tmp_path):
    assert is_uri("s3://bucket/out.parquet") and is_uri("file:///tmp/out.parquet")
    assert not is_uri("out.parquet") and not is_uri("C:\\data\\out.parquet")
    assert isinstance(store_for(tmp_path / "out.parquet"), LocalStore)
    assert isinstance(store_for("gs://bucket/out.parquet"), ArrowStore)


def test_an_object_store_commits_whole_files_and_lists_them():
    store = _memory_store()
    store.make_folder()
    store.make_folder("_errors")
    store.commit("part-000000.parquet", b"rows")
    store.commit("_errors/part-000000.jsonl", b'{"id": 1}\n')
    store.commit("part-000000.parquet", b"rows again")  # a retried attempt replaces it whole
    assert store.names() == ["_errors", "part-000000.parquet"]  # no temporary file left
    assert store.read_bytes("part-000000.parquet") == b"rows again"
    assert store.is_folder("_errors") and not store.is_folder("part-000000.parquet")
    store.delete("_errors")
    store.delete("missing.json")  # nothing to delete is no error
    assert store.names() == ["part-000000.parquet"]
    assert store.parent().location == "mock://bucket"


def test_the_lease_keeps_a_second_run_out_until_it_expires():
    clock = _Clock()
    first = _memory_store(lease=60, clock=clock)
    first.make_folder()
    first.lock()
    second = _memory_store(lease=60, clock=clock)
    second._fs = first._fs  # the same bucket
    with pytest.raises(InputError, match="being written by another run"):
        second.lock()
    clock.now += 50
    first.renew()  # the run is alive: its claim goes on, 60 s from now
    clock.now += 50  # past the first claim, within the renewed one
    with pytest.raises(InputError, match="being written by another run"):
        second.lock()
    clock.now += 11  # the first run died without releasing: its lease runs out
    second.lock()
    with pytest.raises(InputError, match="claimed by another run"):
        first.renew()  # a run whose claim was taken stops at its next commit
    second.release()
    assert not second.exists(".lock")


def test_a_run_to_a_uri_writes_what_a_run_to_a_path_writes(tmp_path):
    texts = _synthetic(30, seed=4) + [""]
    source = _write(tmp_path / "in.jsonl", texts)
    common = dict(model="sst2-tiny", batch_size=8, shard_rows=10, **OPTIONS)
    local = tmp_path / "local.parquet"
    remote = (tmp_path / "remote.parquet").as_uri()
    explain_dataset(source, local, **common)

    def stop(info):
        raise KeyboardInterrupt  # killed after the first shard

    with pytest.raises(KeyboardInterrupt):
        explain_dataset(source, remote, on_shard=stop, **common)
    assert not (tmp_path / "remote.parquet" / ".lock").exists()  # the lease was given back
    summary = explain_dataset(source, remote, **common)  # resumes
    assert (summary.rows, summary.errors, summary.resumed_shards) == (30, 1, 1)
    assert summary.out == remote and summary.errors_file == remote.replace(
        "remote.parquet", "remote.errors.jsonl"
    )
    a = pq.read_table(local).to_pylist()
    b = pq.read_table(tmp_path / "remote.parquet").to_pylist()
    assert [r["id"] for r in a] == [r["id"] for r in b] == list(range(30))
    for x, y in zip(a, b):
        assert x["words"] == y["words"]
        _assert_close(x["token_scores"], y["token_scores"])
    errors = (tmp_path / "remote.errors.jsonl").read_text(encoding="utf-8")
    assert [json.loads(line) for line in errors.splitlines()] == [
        {"id": 30, "reason": "empty text"}
    ]
    manifest = json.loads((tmp_path / "remote.parquet" / "_layersal.json").read_text())
    assert manifest["complete"] is True
    again = explain_dataset(source, remote, **common)
    assert again.explained == 0 and again.rows == 30  # complete: nothing redone


def test_a_uri_output_held_by_a_live_run_is_refused(tmp_path):
    source = _write(tmp_path / "in.txt", _synthetic(12, seed=2))
    out = tmp_path / "out.parquet"
    out.mkdir()
    lease = {"run": "someone-else", "until": time.time() + 600}
    (out / ".lock").write_text(json.dumps(lease), encoding="utf-8")
    with pytest.raises(InputError, match="being written by another run"):
        explain_dataset(source, out.as_uri(), model="sst2-tiny", **OPTIONS)


def test_stores_travel_to_workers_without_the_drivers_lock(tmp_path):
    import pickle

    local = store_for(tmp_path / "out.parquet")
    local.make_folder()
    local.lock()
    try:
        copy = pickle.loads(pickle.dumps(local))
        assert copy.location == local.location and copy._handle is None
    finally:
        local.release()
    remote = _memory_store()
    remote._claim = "the driver's"
    copy = pickle.loads(pickle.dumps(remote))
    assert copy.location == "mock://bucket/out.parquet" and copy._claim is None


def test_the_command_line_writes_to_a_uri(tmp_path):
    from typer.testing import CliRunner

    from layersal.cli import app

    source = _write(tmp_path / "in.txt", _synthetic(6, seed=1))
    out = (tmp_path / "out.parquet").as_uri()
    result = CliRunner().invoke(
        app, ["explain-dataset", str(source), "--out", out, "--layer", "1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 6
    assert out in result.output
