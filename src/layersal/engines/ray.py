"""The Ray engine: the same windows, explained by a pool of Ray Data actors.

The driver streams the input with :mod:`.sources` (so ids are row numbers exactly as in the
local engine), cuts it into the same windows, and hands them to Ray Data in waves
(``ray.data.from_items`` + ``map_batches`` over an actor pool of ``num_workers`` actors, each
loading the model once in its constructor). Each actor turns a window into the bytes of its
Parquet shard with :func:`~.work.explain_window`, as the local engine does; the driver writes the
shards with the same atomic commit, so a Ray run resumes like a local one (and either engine
can resume the other's run). Workers need no shared file system: only the driver writes.

A wave holds ``WAVE_WINDOWS_PER_WORKER * num_workers`` windows, which bounds the driver's
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
from .work import RunProgress, release_memory, windows

if TYPE_CHECKING:
    from . import DatasetJob, RunSummary, WindowCallback
    from .sink import ShardSink
    from .sources import Source

WAVE_WINDOWS_PER_WORKER = 16


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


class WindowExplainer:
    """A Ray Data actor: loads the model once, then explains one window per call."""

    def __init__(self, job: DatasetJob, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.job = job
        self.lm = job.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from .sink import table_bytes
        from .sources import Row
        from .work import explain_window

        windows_out, shards, errors_out = [], [], []
        for number, payload in zip(batch["window"], batch["rows"]):
            rows = [Row(**r) for r in json.loads(payload)]
            table, errors = explain_window(self.lm, self.job, rows)
            windows_out.append(int(number))
            shards.append(table_bytes(table))
            errors_out.append(json.dumps(errors, ensure_ascii=False))
            del table
            release_memory()
        return {"window": windows_out, "shard": shards, "errors": errors_out}


def _waves(
    source: Source, shard_rows: int, done: set[int], wave_size: int, bar: RunProgress
) -> Iterator[list[dict[str, Any]]]:
    wave: list[dict[str, Any]] = []
    for number, rows in windows(source.rows(), shard_rows):
        if number in done:
            bar.update(skipped=len(rows))
            continue
        payload = json.dumps([r.__dict__ for r in rows], ensure_ascii=False)
        wave.append({"window": number, "rows": payload, "count": len(rows)})
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
    on_window: WindowCallback | None,
    num_workers: int | None,
    ray_address: str | None,
    cpus_per_worker: float = 1,
) -> None:
    """Explain the windows without a shard through Ray Data; the driver commits each shard."""
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
            for wave in _waves(source, shard_rows, done, WAVE_WINDOWS_PER_WORKER * workers, bar):
                counts = {item["window"]: item["count"] for item in wave}
                dataset = _from_items(
                    ray, [{"window": w["window"], "rows": w["rows"]} for w in wave]
                )
                explained = dataset.map_batches(
                    WindowExplainer,
                    batch_size=1,
                    compute=_actor_pool(ray, min(workers, len(wave))),
                    fn_constructor_kwargs={"job": job, "threads": max(1, int(cpus_per_worker))},
                    num_cpus=cpus_per_worker,
                    num_gpus=gpus,
                    batch_format="numpy",
                )
                for batch in explained.iter_batches(batch_size=None, batch_format="numpy"):
                    for number, shard, errors_json in zip(
                        batch["window"], batch["shard"], batch["errors"]
                    ):
                        errors = json.loads(str(errors_json))
                        sink.write_window(int(number), bytes(shard), errors)
                        summary.explained += counts[int(number)]
                        bar.update(explained=counts[int(number)], errors=len(errors))
                        if on_window is not None:
                            on_window(
                                {
                                    "window": int(number),
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
    """One block per window, so the actors share a wave window by window."""
    import inspect

    parameters = inspect.signature(ray.data.from_items).parameters
    blocks = "override_num_blocks" if "override_num_blocks" in parameters else "parallelism"
    return ray.data.from_items(items, **{blocks: len(items)})


def _actor_pool(ray: Any, size: int) -> Any:
    """A fixed-size actor pool (``compute=``; Ray >= 2.9 has ``ActorPoolStrategy(size=...)``)."""
    return ray.data.ActorPoolStrategy(size=size)
