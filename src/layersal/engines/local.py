"""The local engine: read, explain and write one shard at a time in this process (the unit
of work is :func:`~.work.explain_shard`, which the Ray engine shares)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import NoSpaceError
from .work import RunProgress, explain_shard, release_memory, shards

if TYPE_CHECKING:
    from . import DatasetRun


def run_local(run: DatasetRun, lm: Any = None) -> None:
    """Explain the shards of the run's input not yet written to its output, one after another."""
    job, source, sink, shard_rows = run.job, run.source, run.sink, run.shard_rows
    done, summary, progress, on_shard = run.done, run.summary, run.progress, run.on_shard
    lm = lm if lm is not None else job.load()
    explainer = job.explainer(lm)
    bar = RunProgress(
        progress,
        source,
        f"explain-dataset ({len(done)} shards done before)" if done else "explain-dataset",
    )
    try:
        for number, rows in shards(source.rows(), shard_rows):
            if number in done:
                bar.update(skipped=len(rows))
                continue
            table, errors = explain_shard(explainer, job, rows)
            try:
                sink.write_shard(number, table, errors)
            except NoSpaceError as exc:
                first = number * shard_rows  # the shard's first row
                needed = rest_of_run(exc.attempted, len(rows), first, source.progress())
                raise NoSpaceError(exc.folder, exc.attempted, exc.free, needed) from None
            summary.explained += len(rows)
            bar.update(explained=len(rows), errors=len(errors))
            info = {
                "shard": number,
                "rows": table.num_rows,
                "errors": len(errors),
                "explained": summary.explained,
            }
            del table, errors, rows
            release_memory()
            if on_shard is not None:
                on_shard(info)
    finally:
        bar.close()


def rest_of_run(shard_bytes: int, shard_rows: int, first_row: int, read: float) -> int:
    """Bytes the run still needs from shard ``first_row`` on: this shard's bytes per row times
    the rows left, the input's total rows estimated from the share of it ``read`` so far."""
    rows_read = first_row + shard_rows
    total = rows_read / read if read > 0 else rows_read
    return int(shard_bytes / max(shard_rows, 1) * max(total - first_row, shard_rows))
