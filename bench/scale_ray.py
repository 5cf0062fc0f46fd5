"""Local vs Ray on the same rows, start-up apart from the steady rate (not a test: prints tables).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/scale_ray.py            # 50,000 rows
    OMP_NUM_THREADS=1 .venv/bin/python bench/scale_ray.py --rows 2000 --rate-rows 500
    .venv/bin/python bench/scale_ray.py --device cuda --bf16 --max-batch-tokens 16384 --workers 1

1. **Engines**: ``explain_dataset`` over the first ``--rows`` rows of SST-2 train
   (``sst2/train.tsv``), default DLS settings, with the local engine (this process, one torch
   thread) and the Ray engine (a local Ray of ``--workers`` CPUs, ``--workers`` actors of one
   CPU, workers reading their blocks and writing their shards). Each committed shard is
   timed: *start-up* is the time to the first committed shard (for Ray: starting Ray is
   reported on its own, then the time to the first shard: planning, Ray Data's set-up, actors
   loading the model, the first shard's work); the *steady rate* is the rows of every later
   shard over the time from the first shard to the last. Also: output bytes per row, the
   planning pass's rate, and the driver's CPU seconds (its load) during the Ray run.
2. **Per-worker rates** (one CPU core, the local engine) for ``--rate-models`` on the first
   ``--rate-rows`` rows: the input to the billion-text plan in ``docs/scale.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# the local Ray's workers inherit the environment: let them import this checkout too
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
)

import torch

from layersal.engines import explain_dataset
from layersal.engines.blocks import plan_blocks
from layersal.inputs import Source

DATA = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"


def first_rows(source: Path, rows: int, folder: Path) -> Path:
    """The header and the first ``rows`` rows of ``source``, as a file of their own."""
    path = folder / f"first-{rows}.tsv"
    with source.open("rb") as handle, path.open("wb") as out:
        out.write(handle.readline())
        for _, line in zip(range(rows), handle):
            out.write(line)
    return path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_run(source: Path, out: Path, **options: Any) -> dict[str, Any]:
    """One ``explain_dataset`` run with every committed shard timed."""
    marks: list[tuple[float, int]] = []
    last = [0]

    def on_shard(info: dict[str, Any]) -> None:
        marks.append((time.perf_counter(), info["explained"] - last[0]))
        last[0] = info["explained"]

    cpu, started = cpu_seconds(), time.perf_counter()
    summary = explain_dataset(source, out, on_shard=on_shard, progress=False, **options)
    ended = time.perf_counter()
    marks.sort()
    first = marks[0][0]
    later = sum(rows for _, rows in marks[1:])
    steady = later / (marks[-1][0] - first) if len(marks) > 1 else float("nan")
    data = sum(p.stat().st_size for p in out.glob("part-*.parquet"))
    return {
        "rows": summary.rows,
        "errors": summary.errors,
        "total_s": ended - started,
        "first_shard_s": first - started,
        "steady": steady,
        "overall": summary.explained / (ended - started),
        "bytes_per_row": data / max(summary.rows, 1),
        "driver_cpu_s": cpu_seconds() - cpu,
    }


def engines(args: argparse.Namespace, source: Path, work: Path) -> list[tuple[str, dict]]:
    common = {
        "model": args.model,
        "batch_size": args.batch_size,
        "shard_rows": args.shard_rows,
        "device": args.device,
        "precision": "bf16" if args.bf16 else "fp32",
        "max_batch_tokens": args.max_batch_tokens,
    }
    results = []
    if "local" in args.engines:
        torch.set_num_threads(1)
        local = timed_run(source, work / "local.parquet", engine="local", **common)
        results.append(("local, 1 process x 1 thread", local))
    if "ray" in args.engines:
        import ray

        started = time.perf_counter()
        gpus = args.workers if args.device.startswith("cuda") else 0
        ray.init(
            num_cpus=args.workers, num_gpus=gpus, include_dashboard=False, logging_level="WARNING"
        )
        ray_start = time.perf_counter() - started
        remote = timed_run(
            source,
            work / "ray.parquet",
            engine="ray",
            num_workers=args.workers,
            ray_reads="workers",
            **common,
        )
        remote["ray_init_s"] = ray_start
        ray.shutdown()
        unit = "GPU" if gpus else "CPU"
        results.append((f"Ray, {args.workers} workers x 1 {unit}", remote))
    return results


def planning_rate(source: Path, shard_rows: int) -> float:
    """Rows per second of the driver's planning pass over ``source`` (a TSV: parsed once)."""
    started = time.perf_counter()
    blocks = plan_blocks(Source(source), shard_rows)
    return sum(b.rows for b in blocks) / (time.perf_counter() - started)


def worker_rates(args: argparse.Namespace, data: Path, work: Path) -> list[tuple[str, float]]:
    source = first_rows(data, args.rate_rows, work)
    torch.set_num_threads(1)
    rates = []
    for model in args.rate_models:
        out = work / f"rate-{model.replace('/', '_')}.parquet"
        run = timed_run(
            source,
            out,
            model=model,
            batch_size=args.batch_size,
            shard_rows=args.rate_rows // 6 or 1,
            device=args.device,
            precision="bf16" if args.bf16 else "fp32",
            max_batch_tokens=args.max_batch_tokens,
        )
        rates.append((model, run["steady"]))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--model", default="sst2-tiny")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    parser.add_argument("--device", default="cpu", help="cuda: one Ray actor per GPU")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--max-batch-tokens", type=int, default=None)
    parser.add_argument("--rate-models", nargs="*", default=["sst2-tiny", "sst2-minilm"])
    parser.add_argument("--rate-rows", type=int, default=3000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scale-ray-"))
    try:
        source = first_rows(args.data, args.rows, work)
        print(f"# {args.rows} rows of {args.data}, model {args.model}, batch {args.batch_size}")
        print(f"# OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {os.cpu_count()} CPUs\n")
        results = engines(args, source, work)
        print(
            "| engine | rows | Ray start s | to first shard s | steady texts/s | per core | "
            "total s | overall texts/s | bytes/row | driver CPU s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in results:
            cores = args.workers if name.startswith("Ray") else 1
            ray_s = f"{r['ray_init_s']:.1f}" if "ray_init_s" in r else "-"
            print(
                f"| {name} | {r['rows']} | {ray_s} | {r['first_shard_s']:.1f} | "
                f"{r['steady']:.0f} | {r['steady'] / cores:.0f} | {r['total_s']:.1f} | "
                f"{r['overall']:.0f} | {r['bytes_per_row']:.0f} | {r['driver_cpu_s']:.1f} |"
            )
        if len(results) == 2:
            local, remote = results[0][1], results[1][1]
            ratio = remote["steady"] / args.workers / local["steady"]
            print(f"\nRay steady rate per core / local rate per core: {ratio:.2f}")
        print(f"planning pass (driver, TSV parsed once): {planning_rate(source, 1024):.0f} rows/s")
        if args.rate_models:
            print(f"\n| model | texts/s per worker (1 core, first {args.rate_rows} rows) |")
            print("|---|---|")
            for model, rate in worker_rates(args, args.data, work):
                print(f"| {model} | {rate:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
