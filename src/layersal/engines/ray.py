"""The Ray engine: the same shards as the local engine, explained by one pool of Ray Data actors.

Two modes (``reads``; see ``docs/scale.md``):

``"workers"`` (distributed end to end): the driver only plans. It cuts the input into blocks
(:mod:`.blocks`: shard ``k`` is input rows ``k * shard_rows`` onwards, located from Parquet
footers or one pass over a text file, and kept in ``OUT/_blocks.json``), drops the blocks whose
file exists, and hands the block descriptors (a few numbers each, not the rows) to one
``map_batches`` over an actor pool of ``num_workers`` :class:`BlockExplainer` actors, each
loading the model once. An actor reads its block from the input itself, explains it and commits
``part-<k>.parquet`` (and its errors) into ``OUT`` itself, atomically; it sends back only
counts. Input and output must be paths every worker can open (one machine, or a shared file
system). Ray Data restarts a dead actor and retries its task (its actor pools default to
``max_restarts=-1``, ``max_task_retries=-1``); a retried task skips the shards its first
attempt committed, and rewriting a shard replaces it whole, so a run ends with every row
exactly once.

``"driver"`` (driver-routed, for inputs only the driver can read): the driver streams the input
with :mod:`layersal.inputs`, ships shards to the actors in waves (``from_items`` +
``map_batches``), receives each shard's Parquet bytes and writes them; a wave holds
``WAVE_SHARDS_PER_WORKER * num_workers`` shards, which bounds the driver's memory, and each wave
starts a new actor pool.

``"auto"``: ``workers`` when the input is a URI (``s3://...``: see :func:`.blocks.uri_source`)
or every node of the Ray cluster is this machine (a local Ray, or a test cluster), else
``driver``; pass ``"workers"`` for a multi-machine cluster on a shared file
system. Either mode writes the files the local engine writes, so any engine resumes any run.

Ray is optional: ``pip install layersal[ray]``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..errors import InputError, LayersalError
from .work import RunProgress, release_memory, shards

if TYPE_CHECKING:
    from ..inputs import Source
    from . import DatasetJob, DatasetRun
    from .blocks import Block
    from .sink import ShardSink
    from .store import Store

WAVE_SHARDS_PER_WORKER = 16
READS = ("auto", "workers", "driver")
MAX_RAY_BLOCKS = 10_000  # work items per Ray Data block stay 1 up to this many


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or a clear error saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise InputError(
            f"the Ray engine needs Ray Data ({exc.name or exc} is not installed): pip install "
            "'layersal[ray]'"
        ) from None
    return ray


def run_ray(
    run: DatasetRun,
    num_workers: int | None,
    ray_address: str | None,
    cpus_per_worker: float = 1,
    reads: str = "auto",
) -> None:
    """Explain the shards not yet written through Ray Data, in the ``reads`` mode."""
    job, source = run.job, run.source
    ray = require_ray()
    started_here = False
    if not ray.is_initialized():
        address = ray_address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        started_here = True
    try:
        # a worker's exception reaches the caller as one (see _reported): not also as a log
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own bar
        pool = _Pool.size(ray, job, num_workers, cpus_per_worker)
        mode = reads if reads != "auto" else _default_reads(ray, source)
        engine = _run_distributed if mode == "workers" else _run_driver_routed
        engine(ray, pool, run)
    finally:
        if started_here:
            ray.shutdown()


class _Pool:
    """The actor pool's shape: ``workers`` actors of ``cpus`` CPUs (torch threads) and
    ``gpus`` GPUs each (one per GPU when the job runs on CUDA)."""

    def __init__(self, workers: int, cpus: float, gpus: int) -> None:
        self.workers, self.cpus, self.gpus = workers, cpus, gpus

    @classmethod
    def size(cls, ray: Any, job: DatasetJob, workers: int | None, cpus: float) -> _Pool:
        resources = ray.cluster_resources()
        device = str(job.device)
        gpus = (
            1
            if device.startswith("cuda") or (device == "auto" and resources.get("GPU", 0) > 0)
            else 0
        )
        default = resources.get("GPU", 0) if gpus else resources.get("CPU", 1) // cpus
        return cls(workers or max(1, int(default)), cpus, gpus)

    def map_args(self, count: int) -> dict[str, Any]:
        """``map_batches`` arguments: one pool for the whole job. Ray Data's actor pools
        restart a dead actor and retry its tasks by default (``max_restarts=-1``,
        ``max_task_retries=-1``)."""
        return {
            "batch_size": 1,
            "concurrency": max(1, min(self.workers, count)),
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
            "batch_format": "numpy",
        }


def _default_reads(ray: Any, source: Source) -> str:
    """``workers`` for a URI input or a cluster that is all this machine, else ``driver``."""
    from .blocks import location
    from .store import is_uri

    return "workers" if is_uri(location(source)) or _one_machine(ray) else "driver"


def _one_machine(ray: Any) -> bool:
    """Whether every live node of the cluster runs on this machine (so workers read our paths)."""
    here = ray.util.get_node_ip_address()
    return all(n["NodeManagerAddress"] == here for n in ray.nodes() if n.get("Alive"))


# -- distributed: workers read and write ------------------------------------------------------


class BlockExplainer:
    """A Ray Data actor: loads the model once, then reads, explains and commits whole blocks."""

    def __init__(self, job: DatasetJob, source: Source, out: Store, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.job, self.source, self.out = job, source, out
        self.lm = job.load()
        self.explainer = job.explainer(self.lm)

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from .blocks import Block, ParquetRows, read_block
        from .sink import shard_name, write_shard_files
        from .work import explain_shard

        for item in batch["item"]:
            blocks = [Block(**b) for b in json.loads(str(item))]
            parquet = ParquetRows(self.source) if self.source.format == "parquet" else None
            for block in blocks:
                if self.out.exists(shard_name(block.number)):  # an earlier attempt wrote it
                    yield _result(block, errors=-1)
                    continue
                rows = read_block(self.source, block, parquet)
                table, errors = explain_shard(self.explainer, self.job, rows)
                write_shard_files(self.out, block.number, table, errors)
                del table, rows
                release_memory()
                yield _result(block, errors=len(errors))


def _result(block: Block, errors: int) -> dict[str, Any]:
    """One shard's report to the driver (``errors`` -1: committed by an earlier attempt)."""
    return {"number": [block.number], "rows": [block.rows], "errors": [errors]}


class _BlocksDone:
    """The bar's measure of a distributed run: the share of blocks committed."""

    def __init__(self, total: int, done: int) -> None:
        self.total, self.done = max(total, 1), done

    def progress(self) -> float:
        return self.done / self.total


def _run_distributed(ray: Any, pool: _Pool, run: DatasetRun) -> None:
    """Plan the blocks, let one actor pool read, explain and write the missing ones."""
    job, source, sink, shard_rows = run.job, run.source, run.sink, run.shard_rows
    done, summary, progress, on_shard = run.done, run.summary, run.progress, run.on_shard
    from .blocks import load_plan, work_items

    blocks = load_plan(sink.store, shard_rows, source)
    todo = [b for b in blocks if b.number not in done]
    items = work_items(source, todo)
    if not items:
        return
    counted = _BlocksDone(len(blocks), len(blocks) - len(todo))
    bar = RunProgress(progress, counted, f"explain-dataset on Ray ({pool.workers} workers)")
    records = [{"item": json.dumps([asdict(b) for b in item])} for item in items]
    seen: set[int] = set()
    try:
        results = _from_items(ray, records, min(len(records), MAX_RAY_BLOCKS)).map_batches(
            BlockExplainer,
            fn_constructor_kwargs={
                "job": job,
                "source": source,
                "out": sink.store,
                "threads": max(1, int(pool.cpus)),
            },
            **pool.map_args(len(items)),
        )
        for result in _reported(results):
            number, rows, errors = int(result["number"]), int(result["rows"]), int(result["errors"])
            if number in seen:  # a retried task reports its shards again
                continue
            seen.add(number)
            sink.store.renew()  # the run is alive: keep its claim on the output
            counted.done += 1
            summary.explained += rows
            bar.update(explained=rows, errors=max(errors, 0))
            if on_shard is not None:
                on_shard({"shard": number, "errors": errors, "explained": summary.explained})
    finally:
        bar.close()
    _check_all_written(sink, todo)


def _reported(results: Any) -> Iterator[dict[str, Any]]:
    """The workers' reports; a worker's failure that is the user's to fix (a
    :class:`~layersal.errors.LayersalError`, or a file it could not open) is raised as that
    error, not as Ray's traceback."""
    try:
        yield from results.iter_rows()
    except Exception as exc:
        mistake = worker_mistake(exc)
        if mistake is None:
            raise
        raise mistake from None


def worker_mistake(exc: BaseException) -> LayersalError | None:
    """The user's mistake behind an exception from Ray workers (following Ray's wrapping:
    ``cause`` and ``__cause__``), or None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        original = cause if isinstance(cause, BaseException) else current
        if isinstance(original, LayersalError):
            return type(original)(*original.args)
        if isinstance(original, OSError):
            return InputError(
                f"a Ray worker could not open a file ({original}): input and output must be "
                "URIs (s3://, gs://, ...) or paths on a file system every node shares, or let the "
                "driver read and write (`--ray-reads driver`)"
            )
        current = current.__cause__ or (original if original is not current else None)
    return None


def _check_all_written(sink: ShardSink, todo: list[Block]) -> None:
    """Every planned block's file is in ``OUT`` as the driver sees it; else the workers wrote
    to a folder of their own machine (no shared file system)."""
    from .sink import shard_name

    missing = [b.number for b in todo if not sink.store.exists(shard_name(b.number))]
    if missing:
        raise InputError(
            f"the Ray workers did not leave shards {missing[:5]} in {sink.out}: input and output "
            "must be on a file system every node shares; rerun with the driver reading "
            "(`--ray-reads driver`)"
        )


# -- driver-routed: the driver reads and writes --------------------------------------------------


class ShardExplainer:
    """A Ray Data actor: loads the model once, then explains one shard per call."""

    def __init__(self, job: DatasetJob, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.job = job
        self.lm = job.load()
        self.explainer = job.explainer(self.lm)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from ..inputs import Row
        from .sink import table_bytes
        from .work import explain_shard

        numbers, data, errors_out = [], [], []
        for number, payload in zip(batch["number"], batch["rows"]):
            rows = [Row(**r) for r in json.loads(payload)]
            table, errors = explain_shard(self.explainer, self.job, rows)
            numbers.append(int(number))
            data.append(table_bytes(table))
            errors_out.append(json.dumps(errors, ensure_ascii=False))
            del table
            release_memory()
        return {"number": numbers, "data": data, "errors": errors_out}


def _waves(
    source: Source, shard_rows: int, done: set[int], wave_size: int, bar: RunProgress
) -> Iterator[list[dict[str, Any]]]:
    wave: list[dict[str, Any]] = []
    for number, rows in shards(source.rows(), shard_rows):
        if number in done:
            bar.update(skipped=len(rows))
            continue
        payload = json.dumps([r.__dict__ for r in rows], ensure_ascii=False)
        wave.append({"number": number, "rows": payload, "count": len(rows)})
        if len(wave) == wave_size:
            yield wave
            wave = []
    if wave:
        yield wave


def _run_driver_routed(ray: Any, pool: _Pool, run: DatasetRun) -> None:
    """Stream the input here, explain it in waves on the actors, commit each shard here."""
    job, source, sink, shard_rows = run.job, run.source, run.sink, run.shard_rows
    done, summary, progress, on_shard = run.done, run.summary, run.progress, run.on_shard
    bar = RunProgress(progress, source, f"explain-dataset on Ray ({pool.workers} workers)")
    try:
        for wave in _waves(source, shard_rows, done, WAVE_SHARDS_PER_WORKER * pool.workers, bar):
            counts = {item["number"]: item["count"] for item in wave}
            items = [{"number": w["number"], "rows": w["rows"]} for w in wave]
            explained = _from_items(ray, items, len(items)).map_batches(
                ShardExplainer,
                fn_constructor_kwargs={"job": job, "threads": max(1, int(pool.cpus))},
                **pool.map_args(len(wave)),
            )
            for batch in explained.iter_batches(batch_size=None, batch_format="numpy"):
                for number, shard, errors_json in zip(
                    batch["number"], batch["data"], batch["errors"]
                ):
                    errors = json.loads(str(errors_json))
                    sink.write_shard(int(number), bytes(shard), errors)
                    summary.explained += counts[int(number)]
                    bar.update(explained=counts[int(number)], errors=len(errors))
                    if on_shard is not None:
                        on_shard(
                            {
                                "shard": int(number),
                                "errors": len(errors),
                                "explained": summary.explained,
                            }
                        )
            del wave, explained
    finally:
        bar.close()


def _from_items(ray: Any, items: list[dict[str, Any]], blocks: int) -> Any:
    """``items`` as a dataset of ``blocks`` Ray blocks (one item each, up to a limit), so the
    actors share the work item by item."""
    return ray.data.from_items(items, override_num_blocks=max(1, blocks))
