"""The local engine: read, explain and write one shard at a time in this process (the unit
of work is :func:`~.work.explain_shard`, which the Ray engine shares)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .work import RunProgress, explain_shard, release_memory, shards

if TYPE_CHECKING:
    from ..inputs import Source
    from . import DatasetJob, RunSummary, ShardCallback
    from .sink import ShardSink


def run_local(
    job: DatasetJob,
    source: Source,
    sink: ShardSink,
    shard_rows: int,
    done: set[int],
    summary: RunSummary,
    progress: bool,
    on_shard: ShardCallback | None,
    lm: Any = None,
) -> None:
    """Explain the shards of ``source`` not yet written to ``sink``, one after another."""
    lm = lm if lm is not None else job.load()
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
            table, errors = explain_shard(lm, job, rows)
            sink.write_shard(number, table, errors)
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
