"""Start-up cost of each command against the import floor (not a test: prints a table).

    OMP_NUM_THREADS=1 .venv/bin/python bench/startup.py [--reps 5]
    OMP_NUM_THREADS=1 .venv/bin/python bench/startup.py --before /tmp/old-checkout/src

The *import floor* is a Python process that imports torch, transformers and the BERT classes
and does nothing else; every command that loads a model pays at least that. Each command runs
as ``python -m layersal ...`` in a fresh process, ``--reps`` times, interleaved with the floor
(a loaded machine drifts: interleaving spreads the drift over every row), and the table shows
the medians of wall seconds and CPU seconds (user + system, of the process and its children),
and layersal's own CPU share: the command's CPU less the floor's. That difference of two noisy
medians is rough on a busy machine, so the commands that load a model are also run once more
per repetition in one process that first imports the floor and then runs the command: its CPU
seconds after the floor's imports are the last column, the same share measured directly.
``--before SRC`` also runs every command from another checkout's ``src`` (put first on
``PYTHONPATH``), interleaved with this one's, for a before/after table under the same load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = "a gripping, beautifully acted film"
FLOOR = (
    "import torch, transformers; "
    "from transformers import BertForSequenceClassification, BertForMaskedLM, AutoTokenizer"
)
COMMANDS = {
    "--version": ["--version"],
    "--help": ["--help"],
    "methods": ["methods"],
    "serve --help": ["serve", "--help"],
    "explain": ["explain", TEXT],
    "layers": ["layers", TEXT],
}
LOADS_MODEL = {"explain", "layers"}
AFTER_FLOOR = """
import sys, time
{floor}
start = time.process_time()
from layersal.cli import app
sys.argv = ["layersal", *{args!r}]
try:
    app()
except SystemExit:
    pass
print("cpu after floor:", time.process_time() - start, file=sys.stderr)
"""


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}


def timed(args: list[str], src: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``python args`` with ``src`` first on the path."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=_env(src), check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def after_floor(args: list[str], src: Path) -> float:
    """CPU seconds of the command in a process that has already imported the floor."""
    code = AFTER_FLOOR.format(floor=FLOOR.replace("; ", "\n"), args=args)
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(src), check=True, capture_output=True, text=True
    )
    return float(done.stderr.rsplit("cpu after floor:", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout's src, run as 'before'")
    args = parser.parse_args()
    trees = {"": ROOT / "src"}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": ROOT / "src"}
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    own: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        runs.setdefault(("", "floor"), []).append(timed(["-c", FLOOR], ROOT / "src"))
        for name, command in COMMANDS.items():
            for tree, src in trees.items():
                runs.setdefault((tree, name), []).append(timed(["-m", "layersal", *command], src))
                if name in LOADS_MODEL:
                    own.setdefault((tree, name), []).append(after_floor(command, src))
        runs[("", "floor")].append(timed(["-c", FLOOR], ROOT / "src"))
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    floor_wall = statistics.median(w for w, _ in runs[("", "floor")])
    floor_cpu = statistics.median(c for _, c in runs[("", "floor")])
    print(f"import floor: {floor_wall:.2f} s wall, {floor_cpu:.2f} s CPU (median)\n")
    print("| command | tree | wall s | CPU s | CPU - floor's CPU | CPU after the floor's imports |")
    print("|---|---|---:|---:|---:|---:|")
    for (tree, name), values in runs.items():
        if name == "floor":
            continue
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        direct = f"{statistics.median(own[tree, name]):.2f}" if (tree, name) in own else "-"
        print(f"| {name} | {tree} | {wall:.2f} | {cpu:.2f} | {cpu - floor_cpu:+.2f} | {direct} |")


if __name__ == "__main__":
    main()
