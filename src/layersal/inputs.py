"""Reading texts from files: .txt (one per line), .tsv/.csv (a text column), .jsonl."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Literal

from .errors import InputError

TEXT_COLUMNS = ("text", "sentence", "review", "content")


def read_texts(source: str | Path, text_column: str | None = None) -> list[str]:
    """Texts from a file (``-`` for standard input), by its suffix.

    ``.txt`` (or stdin): one text per line, blank lines skipped. ``.tsv``/``.csv``: the
    ``text_column`` (default: the first of text/sentence/review/content in the header, else
    the first column of a header-less file). ``.jsonl``: the ``text_column`` field
    (default: ``text`` or ``sentence``).
    """
    name = str(source)
    raw = sys.stdin.buffer.read() if name == "-" else _read_bytes(Path(name))
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name} is not UTF-8 text (bad byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-encode it as UTF-8"
        ) from None
    suffix = Path(name).suffix.lower()
    if suffix in (".tsv", ".csv"):
        texts = _table(content, "\t" if suffix == ".tsv" else ",", text_column, name)
    elif suffix == ".jsonl":
        texts = _jsonl(content, text_column, name)
    else:
        texts = [line for line in content.splitlines() if line.strip()]
    if not texts:
        raise InputError(f"{name} contains no texts")
    return texts


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a file")
    return path.read_bytes()


def _table(content: str, delimiter: str, text_column: str | None, name: str) -> list[str]:
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = list(csv.reader(io.StringIO(content), delimiter=delimiter, quoting=quoting))
    rows = [r for r in rows if r]
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    if text_column is not None:
        if text_column.lower() not in header:
            raise InputError(
                f"{name} has no column {text_column!r} (columns: {', '.join(rows[0])})"
            )
        column, body = header.index(text_column.lower()), rows[1:]
    else:
        known = [c for c in TEXT_COLUMNS if c in header]
        column, body = (header.index(known[0]), rows[1:]) if known else (0, rows)
    texts = []
    for number, row in enumerate(body, start=2 if body is not rows else 1):
        if column >= len(row):
            raise InputError(f"{name}, line {number}: no column {column + 1}")
        if row[column].strip():
            texts.append(row[column])
    return texts


def _jsonl(content: str, text_column: str | None, name: str) -> list[str]:
    keys = (text_column,) if text_column else ("text", "sentence")
    texts = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}, line {number}: not JSON ({exc.msg})") from None
        if isinstance(record, str):
            texts.append(record)
            continue
        value = next((record[k] for k in keys if isinstance(record, dict) and k in record), None)
        if not isinstance(value, str):
            raise InputError(f"{name}, line {number}: no string field {' or '.join(keys)!r}")
        texts.append(value)
    return texts
