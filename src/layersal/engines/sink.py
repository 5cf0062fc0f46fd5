"""Output of a dataset run: Parquet shards written atomically, errors, and the resume state.

Layout of ``--out OUT.parquet`` (a folder, i.e. a Parquet dataset any Parquet reader opens)::

    OUT.parquet/
        part-000000.parquet        rows of input shard 0 (input rows 0 .. S-1), input order
        part-000001.parquet        ...
        _layersal.json             the run's settings, and a summary once complete
        _blocks.json               where each shard starts in the input (Ray workers' reads)
        .lock                      held (flock) while a run writes here
        _errors/part-000000.jsonl  bad rows of shard 0: {"id": ..., "reason": ...}
    OUT.errors.jsonl               every bad row, gathered when a run ends

A shard's Parquet file is written to a hidden temporary file and renamed into place, after
its errors file; so the file exists exactly when the shard is complete, and a restart redoes
only the shards without one. Names starting with ``_`` or ``.`` are skipped by Parquet
readers (pyarrow, pandas, Spark, Ray), so the folder reads as just the rows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..outputs import writable_folder

MANIFEST = "_layersal.json"
ERRORS_DIR = "_errors"
LOCK = ".lock"
AUTO_LAYER_FILE = "_auto_layer.json"  # written by explain_dataset for layer="auto"
PLAN_FILE = "_blocks.json"  # the blocks of a Ray run whose workers read the input
_SHARD = re.compile(r"^part-(\d{6,})\.parquet$")


def schema(id_type: str = "int64", metadata: dict[str, Any] | None = None) -> Any:
    """The Arrow schema of the rows (``id`` is ``int64`` row numbers or ``string``).

    ``text_pair`` is the second text of a pair (null for single texts); ``*_segments`` say
    which text of the pair each word or token belongs to (its offsets index into that text).
    """
    import pyarrow as pa

    offsets = pa.list_(pa.list_(pa.int32()))
    fields = [
        pa.field("id", pa.int64() if id_type == "int64" else pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("text_pair", pa.string()),
        pa.field("label", pa.string()),
        pa.field("prediction", pa.string()),
        pa.field("probabilities", pa.list_(pa.float32())),
        pa.field("target", pa.string()),
        pa.field("layer", pa.int32()),
        pa.field("words", pa.list_(pa.string())),
        pa.field("word_offsets", offsets),
        pa.field("word_scores", pa.list_(pa.float32())),
        pa.field("word_segments", pa.list_(pa.int8())),
        pa.field("tokens", pa.list_(pa.string())),
        pa.field("token_offsets", offsets),
        pa.field("token_scores", pa.list_(pa.float32())),
        pa.field("token_segments", pa.list_(pa.int8())),
        pa.field("method", pa.string()),
        pa.field("model", pa.string()),
    ]
    meta = None if metadata is None else {b"layersal": json.dumps(metadata).encode()}
    return pa.schema(fields, metadata=meta)


def rows_table(
    rows: Sequence[Any],
    explanations: Sequence[Any],
    labels: list[str],
    id_type: str,
    metadata: dict[str, Any],
) -> Any:
    """An Arrow table of one shard's explained rows (``rows[i]`` explained by
    ``explanations[i]``)."""
    import pyarrow as pa

    columns: dict[str, list[Any]] = {name: [] for name in schema(id_type).names}
    for row, e in zip(rows, explanations):
        columns["id"].append(row.id)
        columns["text"].append(row.text)
        columns["text_pair"].append(row.text_pair)
        columns["label"].append(row.label)
        columns["prediction"].append(e.prediction)
        columns["probabilities"].append([e.probabilities[label] for label in labels])
        columns["target"].append(e.target)
        columns["layer"].append(e.layer)
        columns["words"].append([w.text for w in e.words])
        columns["word_offsets"].append([[w.start, w.end] for w in e.words])
        columns["word_scores"].append([w.score for w in e.words])
        columns["word_segments"].append([w.segment for w in e.words])
        columns["tokens"].append([t.text for t in e.tokens])
        columns["token_offsets"].append([[t.start, t.end] for t in e.tokens])
        columns["token_scores"].append([t.score for t in e.tokens])
        columns["token_segments"].append([t.segment for t in e.tokens])
        columns["method"].append(e.method)
        columns["model"].append(e.model)
    return pa.Table.from_pydict(columns, schema=schema(id_type, metadata))


def table_bytes(table: Any) -> bytes:
    """A table as the bytes of one Parquet file (what Ray workers send back)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue().to_pybytes()


def errors_path(out: Path) -> Path:
    """``OUT.errors.jsonl`` beside the ``OUT.parquet`` folder."""
    out = Path(out)
    stem = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(stem + ".errors.jsonl")


class ShardSink:
    """The ``OUT.parquet`` folder of one run: which shards are done, and writing more."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.errors_file = errors_path(self.out)

    # -- opening and resume state -----------------------------------------------------------

    def open(
        self, settings: dict[str, Any], *, overwrite: bool = False, default_shard_rows: int = 1024
    ) -> dict[str, Any]:
        """Start a run or continue one; returns the recorded settings to use.

        A folder holding a run with different settings is refused (``overwrite=True`` deletes
        it and starts over). ``settings["shard_rows"]`` may be ``None``: a resumed run keeps the
        recorded value, a new one records ``default_shard_rows``.
        """
        if self.out.exists() and not self.out.is_dir():
            raise InputError(
                f"`out` {self.out} is a file; give a folder name such as results.parquet"
            )
        manifest = self.out / MANIFEST
        if self.out.is_dir() and overwrite:
            self._check_ours()
        elif self.out.is_dir() and not manifest.is_file() and not self._only_a_start():
            raise InputError(
                f"{self.out} exists and is not a layersal dataset run; choose another `out`"
            )
        self.created = not self.out.exists()
        writable_folder(self.out)
        self._lock()
        try:
            if overwrite:
                self._clear()
            if manifest.is_file():
                recorded = json.loads(manifest.read_text(encoding="utf-8"))["settings"]
                wanted = dict(settings)
                if wanted.get("shard_rows") is None:
                    wanted["shard_rows"] = recorded.get("shard_rows")
                differences = [
                    f"{key}: {wanted.get(key)!r} now, {recorded.get(key)!r} before"
                    for key in sorted(set(wanted) | set(recorded))
                    if wanted.get(key) != recorded.get(key)
                ]
                if differences:
                    raise InputError(
                        f"{self.out} holds a run with other settings ({'; '.join(differences)}); "
                        "rerun with the same settings to resume, or pass `overwrite=True` to "
                        "start over"
                    )
                self._clean_temporary()
                return recorded
            self._clean_temporary()  # a run killed while writing its first manifest
            if settings.get("shard_rows") is None:
                settings = {**settings, "shard_rows": default_shard_rows}
            (self.out / ERRORS_DIR).mkdir(exist_ok=True)
            _write_atomic(
                manifest, json.dumps({"settings": settings, "complete": False}, indent=2).encode()
            )
            return settings
        except BaseException:
            self.close()
            raise

    def done_shards(self) -> set[int]:
        """Shards whose Parquet file was written (the resume state, read from the folder)."""
        done = set()
        for path in self.out.iterdir():
            match = _SHARD.match(path.name)
            if match:
                done.add(int(match.group(1)))
        return done

    def is_complete(self) -> bool:
        manifest = self.out / MANIFEST
        return manifest.is_file() and bool(
            json.loads(manifest.read_text(encoding="utf-8")).get("complete")
        )

    # -- writing ----------------------------------------------------------------------------

    def write_shard(self, number: int, shard: Any, errors: Iterable[dict[str, Any]]) -> None:
        """Commit shard ``number``: its errors file, then its rows (a table or Parquet bytes)."""
        write_shard_files(self.out, number, shard, errors)

    def finish(self, summary: dict[str, Any]) -> None:
        """Gather the errors into ``OUT.errors.jsonl`` and mark the run complete."""
        self.gather_errors()
        manifest = self.out / MANIFEST
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data.update(complete=True, summary=summary)
        _write_atomic(manifest, json.dumps(data, indent=2).encode())

    def gather_errors(self) -> int:
        """Rewrite ``OUT.errors.jsonl`` from the committed shards; returns the error count."""
        done = self.done_shards()
        folder = self.out / ERRORS_DIR
        parts = sorted(folder.glob("part-*.jsonl")) if folder.is_dir() else []
        count = 0
        tmp = self.errors_file.with_name(f".{self.errors_file.name}.tmp-{os.getpid()}")
        with tmp.open("wb") as handle:
            for part in parts:
                if int(part.stem.split("-")[1]) not in done:
                    continue
                data = part.read_bytes()
                count += data.count(b"\n")
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.errors_file)
        return count

    def count_rows(self) -> int:
        """Rows in the written shards (from the Parquet footers)."""
        import pyarrow.parquet as pq

        return sum(
            pq.ParquetFile(self.out / f"part-{w:06d}.parquet").metadata.num_rows
            for w in self.done_shards()
        )

    # -- housekeeping -----------------------------------------------------------------------

    def _clean_temporary(self) -> None:
        for folder in (self.out, self.out / ERRORS_DIR):
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.name.startswith(".") and ".tmp-" in path.name:
                        path.unlink(missing_ok=True)

    def _lock(self) -> None:
        """Hold ``OUT/.lock`` for this run: a second run on the same folder is refused.

        The lock goes with the process, however it ends (``kill -9`` included).
        """
        import fcntl

        handle = (self.out / LOCK).open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise InputError(
                f"{self.out} is being written by another run right now; wait for it or stop it "
                "first"
            ) from None
        self._lock_handle = handle

    def discard_if_unstarted(self) -> None:
        """Remove the folder this run created if no shard was written (a run that failed
        before its first shard leaves nothing behind), and release the lock."""
        if getattr(self, "created", False) and not self.done_shards():
            self.close()
            shutil.rmtree(self.out, ignore_errors=True)
            self.errors_file.unlink(missing_ok=True)

    def _only_a_start(self) -> bool:
        """Whether the folder holds only what a run writes before its manifest (the lock, the
        errors folder, temporary files): a run killed that early, which the same command
        resumes."""
        return all(p.name in (LOCK, ERRORS_DIR) or ".tmp-" in p.name for p in self.out.iterdir())

    def close(self) -> None:
        """Release the folder's lock."""
        handle = getattr(self, "_lock_handle", None)
        if handle is not None:
            handle.close()
            del self._lock_handle

    def _check_ours(self) -> None:
        """Refuse ``--overwrite`` on a folder holding files a dataset run does not write."""
        foreign = [
            p.name
            for p in self.out.iterdir()
            if not (
                p.name in (MANIFEST, ERRORS_DIR, LOCK, AUTO_LAYER_FILE, PLAN_FILE)
                or _SHARD.match(p.name)
                or ".tmp-" in p.name
            )
        ]
        if foreign:
            raise InputError(
                f"`overwrite=True` refuses to delete {self.out}: it holds files a dataset run "
                f"does not write ({', '.join(sorted(foreign)[:3])})"
            )

    def _clear(self) -> None:
        """Delete a previous run's files (the lock stays, held by this run)."""
        self._check_ours()
        for path in self.out.iterdir():
            if path.name == LOCK:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        self.errors_file.unlink(missing_ok=True)


def shard_path(out: Path, number: int) -> Path:
    """The Parquet file of shard ``number`` (it exists exactly when the shard is done)."""
    return out / f"part-{number:06d}.parquet"


def write_shard_files(out: Path, number: int, shard: Any, errors: Iterable[dict[str, Any]]) -> None:
    """Commit shard ``number`` into the folder ``out``: its errors file, then its rows (a
    table or Parquet bytes), each atomically. Called by the driver and by Ray workers that
    write their own output; writing a shard again (a retried task) replaces it whole."""
    errors = list(errors)
    error_file = out / ERRORS_DIR / f"part-{number:06d}.jsonl"
    if errors:
        text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors)
        _write_atomic(error_file, text.encode("utf-8"))
    elif error_file.exists():
        error_file.unlink(missing_ok=True)
    data = shard if isinstance(shard, bytes) else table_bytes(shard)
    _write_atomic(shard_path(out, number), data)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path``, sync it, rename it into place.

    The temporary name is unique to this writer (host, process, random part), so two attempts
    at the same shard on different machines of a shared file system never write one file."""
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
