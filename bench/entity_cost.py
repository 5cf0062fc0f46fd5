"""What explaining entities costs: rows through the model per text, and seconds per entity of
the default against the plain gradient.

Every predicted entity of a seeded sample of AG News NER test texts is explained in one
``explain`` call per method (``batch_size`` rows a batch), with hooks on the model counting
what runs: forward calls and rows (one row: one text through the model once), backward
passes and rows (from the model's logits). Then the seconds per entity of the default
(``dls``, ``auto`` from the card) and of ``gradient``, in ``--repeats`` alternating runs
(median), after a warm-up: wall time, and the process's CPU time (with one thread, what the
work took; on a machine other jobs share, wall time also counts their turns).

Uses only the public API, so the same script measures another checkout:

    OMP_NUM_THREADS=1 nice python bench/entity_cost.py [--model models/agnews-minilm-ner]
        [--data ../shared/data/agnews-ner/test.jsonl] [--texts 60] [--seed 0] [--repeats 3]
    PYTHONPATH=../other/src python bench/entity_cost.py ...   # another version, same texts
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import layersal

REPO = Path(__file__).resolve().parents[1]


def read_texts(path: Path, n: int, seed: int) -> list[str]:
    """``n`` texts of a JSON-lines file (key ``text``), a seeded sample in file order (the
    sample ``bench/entity_evidence.py`` draws)."""
    rows = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    keep = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in keep]


class Counted:
    """Forward calls and rows of ``model``, and backward passes and rows from its logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls = self.rows = self.backward_calls = self.backward_rows = 0

    def __enter__(self) -> Counted:
        def before(module: Any, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                ids = kwargs["inputs_embeds"]
            self.calls += 1
            self.rows += int(ids.shape[0])

        def after(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if output.logits.requires_grad:
                output.logits.register_hook(self._backward)

        self.handles = [
            self.model.register_forward_pre_hook(before, with_kwargs=True),
            self.model.register_forward_hook(after, with_kwargs=True),
        ]
        return self

    def _backward(self, grad: torch.Tensor) -> None:
        self.backward_calls += 1
        self.backward_rows += int(grad.shape[0])

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "agnews-minilm-ner"))
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "agnews-ner" / "test.jsonl"
    )
    parser.add_argument("--texts", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    lm = layersal.load(args.model)
    texts = read_texts(args.data, args.texts, args.seed)
    jobs = {m: layersal.explainer(lm, m, batch_size=args.batch_size) for m in ("dls", "gradient")}
    print(f"layersal from {Path(layersal.__file__).parent}")
    print(f"model {args.model}, {len(texts)} texts of {args.data} (seed {args.seed})")
    print(f"torch threads {torch.get_num_threads()}, batch size {args.batch_size}\n")
    for job in jobs.values():
        job.explain(texts[:2])  # warm-up: lazy imports, settling from the card
    print("| method | entities | forward calls / text | forward rows / text | backward passes "
          "/ text | backward rows / text |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, job in jobs.items():
        with Counted(lm.model) as counted:
            found = job.explain(texts)
        n = len(texts)
        print(
            f"| {name} | {len(found)} | {counted.calls / n:.2f} | {counted.rows / n:.2f} "
            f"| {counted.backward_calls / n:.2f} | {counted.backward_rows / n:.2f} |"
        )
    wall: dict[str, list[float]] = {name: [] for name in jobs}
    cpu: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            found = job.explain(texts)
            wall[name].append((time.perf_counter() - start) / len(found))
            cpu[name].append((time.process_time() - start_cpu) / len(found))
    print(
        "\n| method | CPU s / entity (median) | wall s / entity (median) | CPU runs | wall runs |"
    )
    print("|---|---|---|---|---|")
    for name in jobs:
        print(
            f"| {name} | {statistics.median(cpu[name]):.4f} | {statistics.median(wall[name]):.4f} "
            f"| {', '.join(f'{s:.4f}' for s in cpu[name])} "
            f"| {', '.join(f'{s:.4f}' for s in wall[name])} |"
        )
    for kind, runs in (("CPU", cpu), ("wall", wall)):
        ratio = statistics.median(runs["dls"]) / statistics.median(runs["gradient"])
        print(f"default / gradient, {kind} seconds per entity: {ratio:.2f}")


if __name__ == "__main__":
    main()
