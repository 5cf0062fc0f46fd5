"""The Ray engine: the same shards, explained by a pool of Ray Data actors.

The driver streams the input with :mod:`layersal.inputs` (so ids are row numbers exactly as in the
local engine), cuts it into the same shards, and hands them to Ray Data in waves
(``ray.data.from_items`` + ``map_batches`` over an actor pool of ``num_workers`` actors, each
loading the model once in its constructor). Each actor turns a shard into the bytes of its
Parquet file with :func:`~.work.explain_shard`, as the local engine does; the driver writes the
files with the same atomic commit, so a Ray run resumes like a local one (and either engine
can resume the other's run). Workers need no shared file system: only the driver writes.

A wave holds ``WAVE_SHARDS_PER_WORKER * num_workers`` shards, which bounds the driver's
memory; the actors of a wave load the model again at the start of the next wave.

Ray is optional: ``pip install layersal[ray]``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .work import RunProgress, release_memory, shards

if TYPE_CHECKING:
    from ..inputs import Source
    from . import DatasetJob, RunSummary, ShardCallback
    from .sink import ShardSink

WAVE_SHARDS_PER_WORKER = 16


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


class ShardExplainer:
    """A Ray Data actor: loads the model once, then explains one shard per call."""

    def __init__(self, job: DatasetJob, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.job = job
        self.lm = job.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from ..inputs import Row
        from .sink import table_bytes
        from .work import explain_shard

        numbers, data, errors_out = [], [], []
        for number, payload in zip(batch["number"], batch["rows"]):
            rows = [Row(**r) for r in json.loads(payload)]
            table, errors = explain_shard(self.lm, self.job, rows)
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


def run_ray(
    job: DatasetJob,
    source: Source,
    sink: ShardSink,
    shard_rows: int,
    done: set[int],
    summary: RunSummary,
    progress: bool,
    on_shard: ShardCallback | None,
    num_workers: int | None,
    ray_address: str | None,
    cpus_per_worker: float = 1,
) -> None:
    """Explain the shards not yet written through Ray Data; the driver commits each one."""
    ray = require_ray()
    started_here = False
    if not ray.is_initialized():
        address = ray_address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        started_here = True
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own bar
        resources = ray.cluster_resources()
        device = str(job.device)
        gpus = (
            1
            if device.startswith("cuda") or (device == "auto" and resources.get("GPU", 0) > 0)
            else 0
        )
        default = resources.get("GPU", 0) if gpus else resources.get("CPU", 1) // cpus_per_worker
        workers = num_workers or max(1, int(default))
        bar = RunProgress(progress, source, f"explain-dataset on Ray ({workers} workers)")
        try:
            for wave in _waves(source, shard_rows, done, WAVE_SHARDS_PER_WORKER * workers, bar):
                counts = {item["number"]: item["count"] for item in wave}
                dataset = _from_items(
                    ray, [{"number": w["number"], "rows": w["rows"]} for w in wave]
                )
                explained = dataset.map_batches(
                    ShardExplainer,
                    batch_size=1,
                    compute=_actor_pool(ray, min(workers, len(wave))),
                    fn_constructor_kwargs={"job": job, "threads": max(1, int(cpus_per_worker))},
                    num_cpus=cpus_per_worker,
                    num_gpus=gpus,
                    batch_format="numpy",
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
                del wave, dataset, explained
        finally:
            bar.close()
    finally:
        if started_here:
            ray.shutdown()


def _from_items(ray: Any, items: list[dict[str, Any]]) -> Any:
    """One block per shard, so the actors share a wave shard by shard."""
    import inspect

    parameters = inspect.signature(ray.data.from_items).parameters
    blocks = "override_num_blocks" if "override_num_blocks" in parameters else "parallelism"
    return ray.data.from_items(items, **{blocks: len(items)})


def _actor_pool(ray: Any, size: int) -> Any:
    """A fixed-size actor pool (``compute=``; Ray >= 2.9 has ``ActorPoolStrategy(size=...)``)."""
    return ray.data.ActorPoolStrategy(size=size)
