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
readers (pyarrow, pandas, Spark, Ray), so the folder reads as just the rows. ``OUT`` may be a
URI (``s3://bucket/out.parquet``): the same layout through pyarrow's file systems, with a
lease for the lock (:mod:`.store`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, NoSpaceError
from .store import Store, is_uri, store_for

MANIFEST = "_layersal.json"
ERRORS_DIR = "_errors"
LOCK = ".lock"
AUTO_LAYER_FILE = "_auto_layer.json"  # written by explain_dataset for layer="auto"
PLAN_FILE = "_blocks.json"  # the blocks of a Ray run whose workers read the input
_SHARD = re.compile(r"^part-(\d{6,})\.parquet$")
_ERRORS = re.compile(r"^part-(\d{6,})\.jsonl$")


def schema(
    id_type: str = "int64",
    metadata: dict[str, Any] | None = None,
    scored: bool = False,
    entities: bool = False,
) -> Any:
    """The Arrow schema of the rows (``id`` is ``int64`` row numbers or ``string``).

    ``scored``: the model predicts a number (a regression head): a ``score`` column holds it,
    and ``probabilities`` is null.

    ``entities``: the model is a token classifier, each row one entity of its text (a text
    has as many rows as entities, maybe none): ``entity_start`` and ``entity_end`` (its
    characters in ``text``), ``entity_word`` (``text[start:end]``), ``entity_label`` (its
    type, also the row's ``target``) and ``entity_probability``; ``probabilities`` holds the
    span's probability of each type.

    ``text_pair`` is the second text of a pair (null for single texts; a zero-shot row's
    hypothesis, one row per label explained); ``*_segments`` say which text of the pair each
    word or token belongs to (its offsets index into that text).
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
        *([pa.field("score", pa.float32())] if scored else []),
        pa.field("target", pa.string()),
        *(
            [
                pa.field("entity_start", pa.int32()),
                pa.field("entity_end", pa.int32()),
                pa.field("entity_word", pa.string()),
                pa.field("entity_label", pa.string()),
                pa.field("entity_probability", pa.float32()),
            ]
            if entities
            else []
        ),
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
    scored: bool = False,
    entities: bool = False,
) -> Any:
    """An Arrow table of one shard's explained rows (``rows[i]`` explained by
    ``explanations[i]``; an input row may have several, or none); ``scored``: the model
    predicts a number, ``entities``: each row is an entity (see :func:`schema`)."""
    import pyarrow as pa

    names = schema(id_type, scored=scored, entities=entities).names
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for row, e in zip(rows, explanations):
        columns["id"].append(row.id)
        columns["text"].append(row.text)
        # a zero-shot row's second text is its label's hypothesis
        columns["text_pair"].append(row.text_pair if row.text_pair is not None else e.text_pair)
        columns["label"].append(row.label)
        columns["prediction"].append(e.prediction)
        columns["probabilities"].append(
            [e.probabilities[label] for label in labels] if e.probabilities else None
        )
        if scored:
            columns["score"].append(e.score)
        columns["target"].append(e.target)
        if entities:
            entity = e.entity or {}
            for key in ("start", "end", "word", "label", "probability"):
                columns[f"entity_{key}"].append(entity.get(key))
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
    return pa.Table.from_pydict(columns, schema=schema(id_type, metadata, scored, entities))


def table_bytes(table: Any) -> bytes:
    """A table as the bytes of one Parquet file (what Ray workers send back)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue().to_pybytes()


def errors_name(out: str | Path) -> str:
    """``OUT.errors.jsonl``: the name of the errors file beside the ``OUT.parquet`` folder."""
    name = str(out).rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
    stem = name[: -len(".parquet")] if name.endswith(".parquet") else name
    return stem + ".errors.jsonl"


def errors_path(out: str | Path) -> str | Path:
    """Where ``OUT.errors.jsonl`` is: a path beside a local folder, a URI beside a URI's."""
    if is_uri(str(out)):
        return str(out).rstrip("/").rsplit("/", 1)[0] + "/" + errors_name(out)
    return Path(out).with_name(errors_name(out))


class ShardSink:
    """The ``OUT.parquet`` folder of one run (a path or a URI): which shards are done, and
    writing more."""

    def __init__(self, out: str | Path) -> None:
        self.out = out
        self.store = store_for(out)
        self.errors_file = errors_path(out)
        self._errors_name = errors_name(out)
        self._locked = False

    # -- opening and resume state -----------------------------------------------------------

    def open(
        self, settings: dict[str, Any], *, overwrite: bool = False, default_shard_rows: int = 1024
    ) -> dict[str, Any]:
        """Start a run or continue one; returns the recorded settings to use.

        A folder holding a run with different settings is refused (``overwrite=True`` deletes
        it and starts over). ``settings["shard_rows"]`` may be ``None``: a resumed run keeps the
        recorded value, a new one records ``default_shard_rows``.
        """
        store = self.store
        if store.exists() and not store.is_folder():
            raise InputError(
                f"`out` {store.location} is a file; give a folder name such as results.parquet"
            )
        if store.is_folder() and overwrite:
            self._check_ours()
        elif store.is_folder() and not store.exists(MANIFEST) and not self._only_a_start():
            raise InputError(
                f"{store.location} exists and is not a layersal dataset run; choose another `out`"
            )
        self.created = not store.exists()
        store.make_folder()
        store.lock()
        self._locked = True
        try:
            if overwrite:
                self._clear()
            if store.exists(MANIFEST):
                wanted = dict(settings)
                recorded = _upgraded(json.loads(store.read_bytes(MANIFEST))["settings"], wanted)
                if wanted.get("shard_rows") is None:
                    wanted["shard_rows"] = recorded.get("shard_rows")
                differences = [
                    f"the content of {wanted.get('input')} changed since the run began"
                    if key == "input_fingerprint"
                    else f"{key}: {wanted.get(key)!r} now, {recorded.get(key)!r} before"
                    for key in sorted(set(wanted) | set(recorded))
                    if wanted.get(key) != recorded.get(key)
                ]
                if differences:
                    raise InputError(
                        f"{store.location} holds a run with other settings "
                        f"({'; '.join(differences)}); rerun with the same settings to resume, "
                        "or pass `overwrite=True` to start over"
                    )
                self._clean_temporary()
                return recorded
            self._clean_temporary()  # a run killed while writing its first manifest
            if settings.get("shard_rows") is None:
                settings = {**settings, "shard_rows": default_shard_rows}
            store.make_folder(ERRORS_DIR)
            store.commit(
                MANIFEST, json.dumps({"settings": settings, "complete": False}, indent=2).encode()
            )
            return settings
        except BaseException:
            self.close()
            raise

    def done_shards(self) -> set[int]:
        """Shards whose Parquet file was written (the resume state, read from the folder)."""
        done = set()
        for name in self.store.names():
            match = _SHARD.match(name)
            if match:
                done.add(int(match.group(1)))
        return done

    def is_complete(self) -> bool:
        return self.store.exists(MANIFEST) and bool(
            json.loads(self.store.read_bytes(MANIFEST)).get("complete")
        )

    # -- writing ----------------------------------------------------------------------------

    def write_shard(self, number: int, shard: Any, errors: Iterable[dict[str, Any]]) -> None:
        """Commit shard ``number``: its errors file, then its rows (a table or Parquet bytes)."""
        write_shard_files(self.store, number, shard, errors)
        self.store.renew()

    def finish(self, summary: dict[str, Any]) -> None:
        """Gather the errors into ``OUT.errors.jsonl`` and mark the run complete."""
        self.gather_errors()
        data = json.loads(self.store.read_bytes(MANIFEST))
        data.update(complete=True, summary=summary)
        self.store.commit(MANIFEST, json.dumps(data, indent=2).encode())

    def gather_errors(self) -> int:
        """Rewrite ``OUT.errors.jsonl`` from the committed shards; returns the error count."""
        done = self.done_shards()
        count = 0

        def chunks() -> Iterator[bytes]:
            nonlocal count
            for name in self.store.names(ERRORS_DIR):
                match = _ERRORS.match(name)
                if match and int(match.group(1)) in done:
                    data = self.store.read_bytes(f"{ERRORS_DIR}/{name}")
                    count += data.count(b"\n")
                    yield data

        self.store.parent().commit_chunks(self._errors_name, chunks())
        return count

    def count_rows(self) -> int:
        """Rows in the written shards (from the Parquet footers)."""
        import pyarrow.parquet as pq

        total = 0
        for number in self.done_shards():
            with self.store.open_input(shard_name(number)) as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        return total

    # -- housekeeping -----------------------------------------------------------------------

    def _clean_temporary(self) -> None:
        for folder in ("", ERRORS_DIR):
            for name in self.store.names(folder):
                if name.startswith(".") and ".tmp-" in name:
                    self.store.delete(f"{folder}/{name}" if folder else name)

    def discard_if_unstarted(self) -> None:
        """Remove the folder this run created if no shard was written (a run that failed
        before its first shard leaves nothing behind), and release the lock."""
        if getattr(self, "created", False) and not self.done_shards():
            self.close()
            self.store.delete("")
            self.store.parent().delete(self._errors_name)

    def _only_a_start(self) -> bool:
        """Whether the folder holds only what a run writes before its manifest (the lock, the
        errors folder, temporary files): a run killed that early, which the same command
        resumes."""
        return all(n in (LOCK, ERRORS_DIR) or ".tmp-" in n for n in self.store.names())

    def close(self) -> None:
        """Release the folder's lock."""
        if self._locked:
            self.store.release()
            self._locked = False

    def _check_ours(self) -> None:
        """Refuse ``--overwrite`` on a folder holding files a dataset run does not write."""
        foreign = [
            n
            for n in self.store.names()
            if not (
                n in (MANIFEST, ERRORS_DIR, LOCK, AUTO_LAYER_FILE, PLAN_FILE)
                or _SHARD.match(n)
                or ".tmp-" in n
            )
        ]
        if foreign:
            raise InputError(
                f"`overwrite=True` refuses to delete {self.store.location}: it holds files a "
                f"dataset run does not write ({', '.join(sorted(foreign)[:3])})"
            )

    def _clear(self) -> None:
        """Delete a previous run's files (the lock stays, held by this run)."""
        self._check_ours()
        for name in self.store.names():
            if name != LOCK:
                self.store.delete(name)
        self.store.parent().delete(self._errors_name)


def _upgraded(recorded: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The settings of a manifest written before inputs were fingerprinted, read as today's.

    Such a run recorded no fingerprint and its label column only as given (``None`` when
    found by default): it is taken to be of the same input, with the label column found now,
    so that it still resumes. A DLS layer it fixed without a rule ran under the plain
    gradient, then the default: its options read so, and resuming it needs
    ``rule="gradient"`` named (a different rule would mix two kinds of scores in one output).
    """
    if "input_fingerprint" in recorded or "input_fingerprint" not in wanted:
        return recorded
    options = dict(recorded.get("options") or {})
    if recorded.get("method") == "dls" and options.get("layer") not in (None, "auto"):
        # such a run explained a layer fixed without a rule under the plain gradient (today:
        # cp_id), so it resumes only as it began: the user's options must name that rule
        options.setdefault("rule", "gradient")
    return {
        **recorded,
        "options": options,
        "input_fingerprint": wanted["input_fingerprint"],
        "label_column": recorded.get("label_column") or wanted.get("label_column"),
    }


def shard_name(number: int) -> str:
    """The Parquet file of shard ``number`` (it exists exactly when the shard is done)."""
    return f"part-{number:06d}.parquet"


def write_shard_files(
    store: Store, number: int, shard: Any, errors: Iterable[dict[str, Any]]
) -> None:
    """Commit shard ``number`` into the folder ``store``: its errors file, then its rows (a
    table or Parquet bytes), each atomically. Called by the driver and by Ray workers that
    write their own output; writing a shard again (a retried task) replaces it whole."""
    errors = list(errors)
    error_file = f"{ERRORS_DIR}/part-{number:06d}.jsonl"
    data = shard if isinstance(shard, bytes) else table_bytes(shard)
    text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors).encode("utf-8")
    try:
        if errors:
            store.commit(error_file, text)
        else:
            store.delete(error_file)
        store.commit(shard_name(number), data)
    except NoSpaceError as exc:  # what the whole shard needs, not the one file that failed
        raise NoSpaceError(exc.folder, len(data) + len(text), exc.free) from None
