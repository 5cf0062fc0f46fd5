"""Reading texts from files: the one reader every face uses.

:class:`Source` streams one :class:`Row` at a time, never the whole file: ``.txt`` (one text per
line; also standard input, ``-``), ``.tsv`` / ``.csv`` (a text column, optional header),
``.jsonl`` (one JSON object or string per line) and ``.parquet`` (one record batch at a time).
Every input row becomes exactly one :class:`Row`, in file order, numbered from 0: a row that
cannot be read (undecodable bytes, bad JSON, a missing field) carries an ``error`` instead of
being dropped, so a dataset run can record it and ids stay stable across restarts.
:func:`read_texts` is the strict form for a list of texts: the first bad row is an error.

Mistakes about the whole file (no such file, unknown format, a named column that does not
exist, a header that names no text column) raise :class:`~layersal.errors.InputError` before
any row is read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
import unicodedata
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from .errors import InputError

_SURROGATE = re.compile("[\ud800-\udfff]")
TEXT_COLUMNS = ("text", "sentence", "review", "content")
FORMATS = {".txt": "txt", ".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
LABEL_COLUMN = "label"
_BOM = b"\xef\xbb\xbf"
# Long documents are fine: lift the csv module's 128 KiB per-field default.
_CSV_FIELD_LIMIT = 1 << 30
# A first row whose every field looks like a column name, above rows that do not look like
# names in some column, is a header even when it names no known text column (then it is an
# error, not a text to explain): ``id, review_body`` above ``1, great film``.
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
_SNIFF_ROWS = 20


@dataclass
class Row:
    """One input row: ``index`` (0-based row number), its id, text and label, or an error;
    ``text_pair``: the second text, when the input has a pair column."""

    index: int
    id: int | str
    text: str | None
    label: str | None = None
    error: str | None = None
    text_pair: str | None = None

    @property
    def item(self) -> Any:
        """What :func:`layersal.explain` takes for this row: the text, or the pair."""
        return self.text if self.text_pair is None else (self.text, self.text_pair)


STDIN = "-"
FINGERPRINT_WHOLE = 64 * 2**20  # inputs up to this size are hashed whole
FINGERPRINT_EDGE = 4 * 2**20  # larger ones: their size, head and tail


class Source:
    """A text file read lazily. ``rows()`` may be called again to start over.

    ``label_last``: a table without a header takes its last column as the label (AG News
    style ``text<TAB>label``). Standard input (``-``) is read once, as ``.txt``.
    ``pair_column``: a second text column (field); each row is then a pair of texts.
    ``limit``: read only the first ``limit`` rows (bad rows count).
    """

    def __init__(
        self,
        path: str | Path,
        text_column: str | None = None,
        id_column: str | None = None,
        label_column: str | None = None,
        *,
        label_last: bool = False,
        pair_column: str | None = None,
        limit: int | None = None,
    ) -> None:
        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise InputError(f"`limit` must be at least 1, not {limit}")
        self.limit = limit
        self.path = Path(path)
        self._stdin: bytes | None = None
        self.label_last = label_last
        if str(path) == STDIN:
            self._stdin = sys.stdin.buffer.read()
            suffix = ".txt"
        else:
            if not self.path.exists():
                raise InputError(f"no such file: {self.path}")
            if self.path.is_dir():
                raise InputError(f"{self.path} is a folder, not a file")
            suffix = self.path.suffix.lower() if self.path.suffix else ".txt"
        if suffix not in FORMATS:
            raise InputError(
                f"{self.path}: unknown input format {suffix or '(no suffix)'!r}; "
                f"use one of {', '.join(FORMATS)}"
            )
        self.format = FORMATS[suffix]
        self.text_column = text_column
        self.id_column = id_column
        self.label_column = label_column
        self.pair_column = pair_column
        self.size = len(self._stdin) if self._stdin is not None else self.path.stat().st_size
        self._position = 0.0
        if self.format == "txt" and (id_column or label_column or pair_column):
            raise InputError(
                f"{self.path}: a .txt file has no columns (`id_column`/`label_column`/"
                "`pair_column` need .tsv/.csv/.jsonl/.parquet)"
            )
        self._columns: dict[str, Any]
        if self.format in ("tsv", "csv"):
            self._columns = self._table_columns()
        elif self.format == "parquet":
            self._columns = self._parquet_columns()
        else:
            self._columns = {}

    @property
    def has_header(self) -> bool:
        """Whether a table's first row names its columns (always true of JSON and Parquet)."""
        return self.format in ("jsonl", "parquet") or bool(self._columns.get("header"))

    @property
    def id_type(self) -> str:
        """``"int64"`` (row numbers) or ``"string"`` (values of ``id_column``)."""
        return "string" if self.id_column else "int64"

    def progress(self) -> float:
        """Share of the input read so far (0..1)."""
        return self._position

    @property
    def label_field(self) -> str | None:
        """The column (field) whose values are copied as gold labels, as it will be read: the
        one named, else ``label`` where the input has it (JSON lines: each record's ``label``
        field, where it has one), else the last column of a headerless table when
        ``label_last``; ``None`` when no label is read."""
        if self.format == "txt":
            return None
        if self.format == "jsonl":
            return self.label_column or LABEL_COLUMN
        label = self._columns.get("label_name", self._columns.get("label"))
        return label if label is None or isinstance(label, str) else f"column {label + 1}"

    def fingerprint(self) -> str:
        """A digest of the input's content, so that a run notices an input edited in place.

        The rule: SHA-256 of the whole file up to :data:`FINGERPRINT_WHOLE` bytes; above that,
        of its size, its first and its last :data:`FINGERPRINT_EDGE` bytes (a cheap check for
        large inputs, which misses an edit in the middle that keeps the size).
        """
        digest = hashlib.sha256()
        with self._open() as handle:
            if self.size <= FINGERPRINT_WHOLE:
                for chunk in iter(lambda: handle.read(2**20), b""):
                    digest.update(chunk)
                return "sha256:" + digest.hexdigest()
            digest.update(str(self.size).encode())
            digest.update(handle.read(FINGERPRINT_EDGE))
            handle.seek(self.size - FINGERPRINT_EDGE)
            digest.update(handle.read(FINGERPRINT_EDGE))
        return "sha256-edges:" + digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """What identifies this input in a run's recorded settings (``label_column``: the
        column read, named or found; ``limit`` only when set)."""
        described = {
            "input": str(self.path.resolve()),
            "input_bytes": self.size,
            "input_fingerprint": self.fingerprint(),
            "format": self.format,
            "text_column": self.text_column,
            "id_column": self.id_column,
            "label_column": self.label_field,
            "pair_column": self.pair_column,
        }
        return described if self.limit is None else {**described, "limit": self.limit}

    def rows(self) -> Iterator[Row]:
        """Every row of the file (the first ``limit`` of them), in order, read lazily."""
        self._position = 0.0
        reader = {
            "txt": self._txt_rows,
            "tsv": self._table_rows,
            "csv": self._table_rows,
            "jsonl": self._jsonl_rows,
            "parquet": self._parquet_rows,
        }[self.format]
        read = cast(Generator[Row, None, None], reader())  # each reader is a generator
        try:
            for count, row in enumerate(read, start=1):
                yield row
                if self.limit is not None:
                    self._position = max(self._position, count / self.limit)
                    if count >= self.limit:
                        break
        finally:
            read.close()  # a limit stops early: close the file now
        self._position = 1.0

    def _open(self) -> BinaryIO:
        if self._stdin is not None:
            return io.BytesIO(self._stdin)
        return self.path.open("rb")

    # -- text lines -------------------------------------------------------------------------

    def _lines(self, handle: BinaryIO) -> Iterator[bytes]:
        for number, line in enumerate(handle):
            if number == 0 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            if self.size:
                self._position = handle.tell() / self.size
            yield line

    def _txt_rows(self) -> Iterator[Row]:
        with self._open() as handle:
            for index, line in enumerate(self._lines(handle)):
                text, error = _decode(line.rstrip(b"\r\n"))
                yield Row(index, index, text, error=error)

    # -- tsv / csv --------------------------------------------------------------------------

    def _reader(self, lines: Iterable[str]) -> Iterator[list[str]]:
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
        if self.format == "tsv":
            return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        return csv.reader(lines, delimiter=",", quoting=csv.QUOTE_MINIMAL)

    def _table_columns(self) -> dict[str, Any]:
        with self._open() as handle:
            rows = self._reader(_escaped(self._lines(handle)))  # _lines drops a BOM
            sample = [r for _, r in zip(range(_SNIFF_ROWS + 1), (r for r in rows if r))]
        if not sample:
            raise InputError(f"{self.path} contains no rows")
        first = sample[0]
        header = [h.strip().lower() for h in first]
        named = [
            c for c in (self.text_column, self.id_column, self.label_column, self.pair_column) if c
        ]
        has_header = (
            bool(named) or any(c in header for c in TEXT_COLUMNS) or _looks_like_header(sample)
        )
        if not has_header:
            last = len(first) - 1 if self.label_last and len(first) > 1 else None
            if self.pair_column:
                raise InputError(f"{self.path} has no header naming a {self.pair_column!r} column")
            return {"header": False, "text": 0, "id": None, "label": last, "pair": None}
        names = self._named_columns(first)
        return {"header": True, "label_name": names["label"]} | {
            key: None if name is None else first.index(name) for key, name in names.items()
        }

    def _named_columns(self, names: list[str]) -> dict[str, str | None]:
        """The columns (as ``names`` spell them) holding the text, id and label.

        Names match case-insensitively; the text defaults to the first of
        :data:`TEXT_COLUMNS`, the label to ``label`` when there is one.
        """
        lowered = {n.strip().lower(): n for n in names}
        for column in (self.text_column, self.id_column, self.label_column, self.pair_column):
            if column and column.lower() not in lowered:
                raise InputError(
                    f"{self.path} has no column {column!r} (columns: {', '.join(names)})"
                )
        text = self.text_column or next((c for c in TEXT_COLUMNS if c in lowered), None)
        if text is None:
            raise InputError(
                f"{self.path}: no text column found (columns: {', '.join(names)}); name the one "
                "to explain with `text_column`"
            )
        label = self.label_column or (LABEL_COLUMN if LABEL_COLUMN in lowered else None)
        return {
            "text": lowered[text.lower()],
            "id": lowered[self.id_column.lower()] if self.id_column else None,
            "label": lowered[label.lower()] if label else None,
            "pair": lowered[self.pair_column.lower()] if self.pair_column else None,
        }

    def _table_rows(self) -> Iterator[Row]:
        columns = self._columns
        with self._open() as handle:
            records = self._reader(_escaped(self._lines(handle)))
            if columns["header"]:
                next((r for r in records if r), None)
            index = 0
            for record in records:
                if not record:
                    continue
                yield self._table_row(index, record, columns)
                index += 1

    def _table_row(self, index: int, record: list[str], columns: dict[str, Any]) -> Row:
        values: dict[str, str | None] = {}
        for key in ("text", "pair", "id", "label"):
            column = columns[key]
            if column is None:
                values[key] = None
            elif column >= len(record):
                return Row(
                    index,
                    index,
                    None,
                    error=f"row has {len(record)} columns, no column {column + 1}",
                )
            else:
                value, error = _unescape(record[column])
                if error is not None:
                    return Row(index, index, None, error=f"{key} {error}")
                values[key] = value
        row_id: int | str = index if values["id"] is None else values["id"]
        return Row(index, row_id, values["text"], values["label"], text_pair=values["pair"])

    # -- jsonl ------------------------------------------------------------------------------

    def _jsonl_rows(self) -> Iterator[Row]:
        keys = (self.text_column,) if self.text_column else ("text", "sentence")
        label_key = self.label_column or LABEL_COLUMN
        with self._open() as handle:
            for index, line in enumerate(self._lines(handle)):
                yield self._jsonl_row(index, line, keys, label_key)

    def _jsonl_row(self, index: int, line: bytes, keys: tuple[str, ...], label_key: str) -> Row:
        decoded, error = _decode(line.rstrip(b"\r\n"))
        if decoded is None:
            return Row(index, index, None, error=error)
        if not decoded.strip():
            return Row(index, index, "")
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as exc:
            return Row(index, index, None, error=f"not JSON ({exc.msg})")
        if isinstance(record, str):
            if self.id_column or self.label_column or self.pair_column:
                return Row(
                    index, index, None, error="a bare JSON string has no id, label or pair field"
                )
            return Row(index, index, record)
        if not isinstance(record, dict):
            return Row(
                index, index, None, error=f"a JSON {type(record).__name__}, not an object or string"
            )
        text = next((record[k] for k in keys if k in record), None)
        row_id: int | str = index
        if self.id_column:
            if record.get(self.id_column) is None:
                return Row(index, index, None, error=f"no field {self.id_column!r}")
            row_id = str(record[self.id_column])
        if not isinstance(text, str):
            what = "no string field " + " or ".join(repr(k) for k in keys)
            return Row(index, row_id, None, error=what)
        label = record.get(label_key)
        if self.label_column and label is None:
            return Row(index, row_id, None, error=f"no field {self.label_column!r}")
        pair = None
        if self.pair_column:
            pair = record.get(self.pair_column)
            if not isinstance(pair, str):
                return Row(index, row_id, None, error=f"no string field {self.pair_column!r}")
        return Row(index, row_id, text, None if label is None else str(label), text_pair=pair)

    # -- parquet ----------------------------------------------------------------------------

    def _parquet_columns(self) -> dict[str, Any]:
        import pyarrow.parquet as pq

        try:
            names = pq.ParquetFile(self.path).schema_arrow.names
        except Exception as exc:  # pyarrow raises several kinds for a damaged file
            raise InputError(f"{self.path} is not a readable Parquet file ({exc})") from None
        return self._named_columns(names)

    def _parquet_rows(self) -> Iterator[Row]:
        import pyarrow.parquet as pq

        columns = self._columns
        wanted = [
            c for c in (columns["text"], columns["id"], columns["label"], columns["pair"]) if c
        ]
        wanted = list(dict.fromkeys(wanted))
        parquet = pq.ParquetFile(self.path)
        total = max(parquet.metadata.num_rows, 1)
        index = 0
        for batch in parquet.iter_batches(batch_size=1024, columns=wanted):
            data = batch.to_pydict()
            for row in range(batch.num_rows):
                text = data[columns["text"]][row]
                row_id = index if columns["id"] is None else data[columns["id"]][row]
                label = None if columns["label"] is None else data[columns["label"]][row]
                parsed = _parquet_row(
                    index, row_id, text, label, from_column=columns["id"] is not None
                )
                if columns["pair"] is not None and parsed.error is None:
                    parsed = _with_pair(parsed, data[columns["pair"]][row])
                yield parsed
                index += 1
            self._position = index / total


def _looks_like_header(rows: list[list[str]]) -> bool:
    """Whether the first of ``rows`` names columns: every field a name, and some column whose
    values below are all unlike a name (numbers, or text with spaces)."""
    first, body = rows[0], rows[1:]
    if len(first) < 2 or not body or not all(_COLUMN_NAME.fullmatch(f.strip()) for f in first):
        return False
    for column in range(len(first)):
        values = [r[column].strip() for r in body if column < len(r)]
        if values and not any(_COLUMN_NAME.fullmatch(v) for v in values):
            return True
    return False


TextPair = tuple[str, str]
TextItem = str | TextPair


@dataclass(frozen=True)
class Focused:
    """An item as one explained row of a task with a view (:mod:`layersal.tasks`): the text
    or pair ``item``, and what the row looks at: characters ``start:end`` of its first text
    (an entity), or with no span the whole row (a zero-shot label's pair). ``weight`` is the
    row's focus value, which the task's view reads (1, or a zero-shot row's offset)."""

    item: TextItem
    start: int | None = None
    end: int | None = None
    weight: float = 1.0


"""What one explanation is of: a text, or a pair of texts (premise and hypothesis, query and
passage) that a pair classifier reads as two segments."""


def check_texts(texts: Sequence[Any]) -> list[Any]:
    """Reject what cannot be explained (see :func:`check_text`), naming texts by position.

    Items are texts, or pairs of texts (2-tuples or 2-lists; each text is checked), not both.
    """
    out = [_check_item(item, f"text {i}") for i, item in enumerate(texts)]
    if not out:
        raise InputError("no texts to explain")
    if len({isinstance(item, tuple) for item in out}) > 1:
        raise InputError("the texts mix single texts and pairs of texts; give one kind")
    return out


def _check_item(item: Any, name: str) -> TextItem:
    if isinstance(item, tuple | list) and not isinstance(item, str):
        if len(item) != 2:
            raise InputError(f"{name} has {len(item)} parts; a pair of texts has 2")
        return (check_text(item[0], f"{name} (first)"), check_text(item[1], f"{name} (second)"))
    return check_text(item, name)


def is_pair(item: Any) -> bool:
    """Whether ``item`` (as returned by :func:`check_texts`, or focused) is a pair of texts."""
    return isinstance(unfocused(item), tuple)


def unfocused(item: Any) -> Any:
    """The text or pair of an item, focused (:class:`Focused`) or not."""
    return item.item if isinstance(item, Focused) else item


def has_text(item: Any) -> bool:
    """Whether a text (every text of a pair) has more than whitespace in it."""
    item = unfocused(item)
    return all(t.strip() for t in item) if is_pair(item) else bool(item.strip())


def item_length(item: Any) -> int:
    """Characters in a text, or in both texts of a pair (for sorting by length)."""
    item = unfocused(item)
    return sum(map(len, item)) if is_pair(item) else len(item)


def check_text(text: Any, name: str) -> str:
    """``text``, or an error naming it ``name``: non-strings, texts with nothing visible in
    them (empty, whitespace, NUL or other control characters only) and lone surrogates (not
    Unicode) cannot be explained."""
    if not isinstance(text, str):
        raise InputError(f"{name} is a {type(text).__name__}, not a string")
    if not text.strip():
        raise InputError(f"{name} is empty" if not text else f"{name} is only whitespace")
    if not any(unicodedata.category(c)[0] not in "CZ" for c in text):
        raise InputError(f"{name} has no visible characters (only control characters)")
    surrogate = _SURROGATE.search(text)
    if surrogate:
        raise InputError(
            f"{name} is not valid Unicode (a lone surrogate at character {surrogate.start()})"
        )
    return text


def read_texts(
    source: str | Path, text_column: str | None = None, limit: int | None = None
) -> list[str]:
    """The texts of a file (``-``: standard input), by its suffix; at most ``limit`` of them.

    The strict form of :class:`Source`: blank texts are skipped, and the first row that
    cannot be read is an :class:`~layersal.errors.InputError` naming its row number.
    ``text_column`` defaults to the first of text/sentence/review/content in a table's header
    (a table without a header: its first column) or a JSON line's ``text``/``sentence``.
    """
    return [text for _, text in read_items(source, text_column, limit)]


def read_items(
    source: str | Path,
    text_column: str | None = None,
    limit: int | None = None,
    pair_column: str | None = None,
) -> list[tuple[int | str, Any]]:
    """:func:`read_texts` with each text's id: its row number in the file, from 0. With a
    ``pair_column``, each item is a pair of texts."""
    if limit is not None and limit < 1:
        raise InputError(f"`limit` must be at least 1, not {limit}")
    items: list[tuple[int | str, Any]] = []
    for row in text_rows(Source(source, text_column, pair_column=pair_column)):
        items.append((row.id, _check_item(row.item, f"{source}, row {row.index + 1}")))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise InputError(f"{source} contains no texts")
    return items


def text_rows(reader: Source) -> Iterator[Row]:
    """The rows of ``reader`` that hold a text (blank ones skipped); a row that cannot be read
    is an :class:`~layersal.errors.InputError` naming its row number (the strict reading)."""
    for row in reader.rows():
        if row.error is not None:
            raise InputError(f"{reader.path}, row {row.index + 1}: {row.error}")
        if row.text and row.text.strip():
            yield row


def _with_pair(row: Row, pair: Any) -> Row:
    """``row`` with its second text from a Parquet pair column, or an error."""
    if isinstance(pair, bytes):
        pair, error = _decode(pair)
        if error is not None:
            return Row(row.index, row.id, None, error=f"pair {error}")
    if not isinstance(pair, str):
        return Row(row.index, row.id, None, error="pair text is missing (null)")
    row.text_pair = pair
    return row


def _parquet_row(index: int, row_id: Any, text: Any, label: Any, *, from_column: bool) -> Row:
    if row_id is None:
        return Row(index, index, None, error="id is missing (null)")
    if from_column:  # ids from a column are strings, whatever their Parquet type
        row_id = row_id.decode("utf-8", "replace") if isinstance(row_id, bytes) else str(row_id)
    if isinstance(text, bytes):
        text, error = _decode(text)
        if error is not None:
            return Row(index, row_id, None, error=error)
    if text is None:
        return Row(index, row_id, None, error="text is missing (null)")
    if not isinstance(text, str):
        return Row(index, row_id, None, error=f"text is a {type(text).__name__}, not a string")
    return Row(index, row_id, text, None if label is None else str(label))


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    """``(text, None)`` for UTF-8 bytes, ``(None, reason)`` otherwise."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 (bad byte 0x{raw[exc.start]:02x} at offset {exc.start})"


def _escaped(lines: Iterable[bytes]) -> Iterator[str]:
    """Decode lines keeping undecodable bytes as lone surrogates, checked per field later."""
    for line in lines:
        yield line.decode("utf-8", errors="surrogateescape")


def _unescape(value: str) -> tuple[str | None, str | None]:
    """A csv field back to text, or a reason when it held bytes that are not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(value[exc.start]) - 0xDC00
        return None, f"is not UTF-8 (bad byte 0x{bad:02x} at character {exc.start})"
    return value, None
