"""Planning a dataset run as blocks that workers read themselves (the distributed Ray mode).

A **block** is shard ``k`` of the local engine: input rows ``k * shard_rows`` onwards, written
to ``part-<k>.parquet``. The driver plans blocks without explaining anything:

- ``.parquet``: from the footer alone (row counts of the row groups);
- ``.txt`` / ``.jsonl`` (one row per line): one pass that counts newlines with numpy, noting
  the byte offset where every ``shard_rows``-th line starts;
- ``.tsv`` / ``.csv``: one pass with the same parser the local engine uses (a csv record may
  span lines, a blank line is no row, the first row may be a header), noting the byte offset
  after every ``shard_rows``-th row.

A worker then reads only its block: a byte range of a text file, parsed by a copy of the run's
:class:`~layersal.inputs.Source` that reads those bytes, or the row groups of a Parquet file
that hold the block's rows. Either way the rows, ids (row numbers) and bad-row errors are
exactly those the local engine reads for shard ``k``, so the two engines write the same files.

Work is handed to workers in **work items** of blocks that share a read: one block of a text
file, or the blocks that start in one row group of a Parquet file (so a row group is decoded
once, not once per block).

The input may be a URI that pyarrow's file systems open (``s3://``, ``gs://``, ``hdfs://``,
``file://``, ...): :func:`uri_source` makes its :class:`~layersal.inputs.Source` from a sample
of its head (columns, header) and reads the rest through :func:`open_input`.
"""

from __future__ import annotations

import bisect
import copy
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .sink import PLAN_FILE
from .store import Store, is_uri

if TYPE_CHECKING:
    from ..inputs import Row, Source

_CHUNK = 16 << 20  # bytes read at a time while planning a text file


@dataclass(frozen=True)
class Block:
    """Shard ``number``: ``rows`` input rows from row ``first_row``; for a text file, the byte
    range ``[start, end)`` that holds them (``end`` None: to the end of the file)."""

    number: int
    first_row: int
    rows: int
    start: int = 0
    end: int | None = None


def location(source: Source) -> str:
    """Where workers read ``source``: its URI (set by :func:`uri_source`), else its path."""
    return str(getattr(source, "uri", None) or source.path)


def open_input(where: str) -> Any:
    """A seekable, buffered binary handle on a path or a URI (through pyarrow's file systems)."""
    if not is_uri(where):
        return open(where, "rb")
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(where)
    return io.BufferedReader(_Raw(filesystem.open_input_file(path)), 1 << 20)


class _Raw(io.RawIOBase):
    """A pyarrow random-access file as a raw stream, so ``io.BufferedReader`` gives it lines."""

    def __init__(self, native: Any) -> None:
        self.native = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.native.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.native.seek(offset, whence))

    def tell(self) -> int:
        return int(self.native.tell())

    def close(self) -> None:
        self.native.close()
        super().close()


def uri_source(
    uri: str,
    text_column: str | None,
    id_column: str | None,
    label_column: str | None,
    folder: Path,
    pair_column: str | None = None,
) -> tuple[Source, dict[str, Any]]:
    """The :class:`~layersal.inputs.Source` of a URI input, and the settings naming it.

    The source is built on a sample of the input's head saved in ``folder`` (the first MiB of a
    text file, cut after its last full line; the first rows of a Parquet file), which settles
    the format and the columns exactly as for a local file; its rows are then read from the
    URI itself, and :func:`location` gives workers the URI.
    """
    from pyarrow import fs

    from ..inputs import FORMATS, Source

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
    except Exception as exc:  # pyarrow raises several kinds for a bad URI or scheme
        raise InputError(f"cannot open {uri}: {exc}") from None
    if info.type != fs.FileType.File:
        raise InputError(f"no such file: {uri}")
    suffix = Path(path).suffix.lower() or ".txt"
    sample = folder / f"head{suffix}"
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with open_input(uri) as handle:
            parquet = pq.ParquetFile(handle)
            head = next(parquet.iter_batches(batch_size=1000), None)
            table = pa.Table.from_batches([head]) if head else parquet.schema_arrow.empty_table()
            pq.write_table(table, sample)
    elif suffix in FORMATS:
        with open_input(uri) as handle:
            data = handle.read(1 << 20)
        cut = data.rfind(b"\n") + 1 if len(data) == 1 << 20 else len(data)
        sample.write_bytes(data[: cut or len(data)])
    source = Source(sample, text_column, id_column, label_column, pair_column=pair_column)
    source.uri = uri  # type: ignore[attr-defined]
    source.size = info.size
    source._open = lambda: open_input(uri)  # type: ignore[method-assign]
    return source, {"input": uri, "input_bytes": info.size}


def plan_blocks(source: Source, shard_rows: int) -> list[Block]:
    """Every block of ``source``, in order (reads Parquet footers, or the text file once)."""
    if source.format == "parquet":
        total = _parquet_file(source).metadata.num_rows
        return [
            Block(k, first, min(shard_rows, total - first))
            for k, first in enumerate(range(0, total, shard_rows))
        ]
    if source.format in ("txt", "jsonl"):
        starts, total = _line_starts(location(source), shard_rows)
    else:
        starts, total = _record_starts(source, shard_rows)
    blocks = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else None
        first = k * shard_rows
        blocks.append(Block(k, first, min(shard_rows, total - first), start, end))
    return [b for b in blocks if b.rows > 0]  # a start after the last row holds none


def load_plan(out: Store, shard_rows: int, source: Source) -> list[Block]:
    """The run's blocks: planned once and kept in ``OUT/_blocks.json`` for a resumed run (the
    recorded settings already pin the input's path, size and format)."""
    if out.exists(PLAN_FILE):
        kept = json.loads(out.read_bytes(PLAN_FILE))
        if kept.get("shard_rows") == shard_rows:
            return [Block(**b) for b in kept["blocks"]]
    blocks = plan_blocks(source, shard_rows)
    data = {"shard_rows": shard_rows, "blocks": [asdict(b) for b in blocks]}
    out.commit(PLAN_FILE, json.dumps(data).encode("utf-8"))
    return blocks


def work_items(source: Source, blocks: list[Block]) -> list[list[Block]]:
    """Blocks grouped so that each group is read once: per Parquet row group, else one each."""
    if source.format != "parquet" or not blocks:
        return [[b] for b in blocks]
    starts = [first for first, _ in _row_group_bounds(_parquet_file(source))]
    items: dict[int, list[Block]] = {}
    for block in blocks:
        items.setdefault(bisect.bisect_right(starts, block.first_row), []).append(block)
    return list(items.values())


def read_block(source: Source, block: Block, parquet: Any = None) -> list[Row]:
    """The input rows of ``block``, exactly as ``source.rows()`` numbers and reads them.

    ``parquet``: a :class:`ParquetRows` reused across the blocks of one work item.
    """
    if source.format == "parquet":
        reader = parquet if parquet is not None else ParquetRows(source)
        rows = reader.rows(block.first_row, block.rows)
    else:
        rows = _text_block(source, block)
    if len(rows) != block.rows:
        raise InputError(
            f"{location(source)}: block {block.number} holds {len(rows)} rows, not the "
            f"{block.rows} planned (was the file changed during the run?)"
        )
    return rows


def _text_block(source: Source, block: Block) -> list[Row]:
    """Parse the bytes of a text block with a copy of ``source`` that reads only them."""
    with open_input(location(source)) as handle:
        handle.seek(block.start)
        data = handle.read() if block.end is None else handle.read(block.end - block.start)
    view = copy.copy(source)
    view._open = lambda: io.BytesIO(data)  # type: ignore[method-assign]
    if block.number > 0:
        # mid-file: no byte-order mark to strip, and no header row to skip
        view._lines = lambda handle: iter(handle)  # type: ignore[method-assign]
        if source.format in ("tsv", "csv"):
            view._columns = {**source._columns, "header": False}
    return _shifted(view.rows(), block.first_row)


class ParquetRows:
    """Row ranges of a Parquet file, read as the run's source reads the whole file: the row
    groups holding a range are read (the last one is kept: the blocks of a work item share
    it), the range is cut out and handed, as a small Parquet file in memory, to a copy of the
    source, so that ids, labels, missing values and every column it reads come out exactly as
    in a local run."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.file = _parquet_file(source)
        self.bounds = _row_group_bounds(self.file)
        self.starts = [first for first, _ in self.bounds]
        self.columns = list(
            dict.fromkeys(c for c in source._columns.values() if isinstance(c, str))
        )
        self._cached: tuple[int, Any] | None = None

    def rows(self, first: int, count: int) -> list[Row]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if count < 1:
            return []
        lo, hi = self._locate(first), self._locate(first + count - 1)
        table = pa.concat_tables([self._group(g) for g in range(lo, hi + 1)])
        buffer = io.BytesIO()
        pq.write_table(table.slice(first - self.bounds[lo][0], count), buffer)
        buffer.seek(0)
        view = copy.copy(self.source)
        view.path = buffer  # type: ignore[assignment]  # pyarrow reads a file object too
        return _shifted(view.rows(), first)

    def _locate(self, index: int) -> int:
        """The row group holding row ``index``."""
        group = bisect.bisect_right(self.starts, index) - 1
        if group < 0 or index >= self.bounds[group][1]:
            raise InputError(f"row {index} is past the end of the Parquet file")
        return group

    def _group(self, group: int) -> Any:
        if self._cached is None or self._cached[0] != group:
            self._cached = (group, self.file.read_row_group(group, columns=self.columns))
        return self._cached[1]


def _shifted(rows: Iterable[Row], first: int) -> list[Row]:
    """Rows read from a block, renumbered from its first row (ids that are row numbers too)."""
    return [
        replace(
            row,
            index=row.index + first,
            id=row.id + first if isinstance(row.id, int) else row.id,
        )
        for row in rows
    ]


def _parquet_file(source: Source) -> Any:
    import pyarrow.parquet as pq

    where = location(source)
    return pq.ParquetFile(open_input(where) if is_uri(where) else where)


def _row_group_bounds(parquet: Any) -> list[tuple[int, int]]:
    """``(first_row, end_row)`` of every row group."""
    bounds, first = [], 0
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        bounds.append((first, first + rows))
        first += rows
    return bounds


def _line_starts(where: str, shard_rows: int) -> tuple[list[int], int]:
    """Byte offsets where lines ``0, shard_rows, 2 * shard_rows, ...`` start, and the number of
    lines (a last line without a newline counts), counting newlines a chunk at a time."""
    import numpy as np

    starts, lines, offset, last = [0], 0, 0, b"\n"
    with open_input(where) as handle:
        while chunk := handle.read(_CHUNK):
            ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            # the line after newline number n (counting from 1) is row n
            wanted = np.arange(-lines % shard_rows or shard_rows, len(ends) + 1, shard_rows)
            starts.extend(int(offset + ends[w - 1] + 1) for w in wanted if w >= 1)
            lines += len(ends)
            offset += len(chunk)
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return starts, lines


def _record_starts(source: Source, shard_rows: int) -> tuple[list[int], int]:
    """Byte offsets after every ``shard_rows``-th record of a tsv/csv file, and the number of
    records, from one pass of the source's own parser (which notes where each line ends)."""
    planner = copy.copy(source)
    position = [0]
    lines = planner._lines

    def noting(handle: Any) -> Iterator[bytes]:
        for line in lines(handle):
            position[0] = handle.tell()
            yield line

    planner._lines = noting  # type: ignore[method-assign]
    starts, count = [0], 0
    for _ in planner.rows():
        count += 1
        if count % shard_rows == 0:
            starts.append(position[0])
    return starts, count
