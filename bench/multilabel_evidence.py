"""Where a multi-label model's explanations look, when the evidence of each label is known.

Each input of ``bench/data/mix-test.jsonl`` (written by ``scripts/task_models.py``) joins an
SST-2 sentence and an AG News text; its labels are the sentence's sentiment and the news
text's topic, and the record says which characters each part spans. For every method, each
input is explained for each of its two gold labels, and the share of that label's top-3 words
(by signed score) lying inside the part the label came from is measured: 1 means the
explanation points at the label's own evidence, 0.5 at random between two equal parts.

    OMP_NUM_THREADS=1 python bench/multilabel_evidence.py --model mix-minilm-multilabel \\
        --sample 150 --methods "dls,gradient,integrated_gradients:n_steps=50,shapley_sampling"

Prints a markdown table: per method, the share for sentiment labels, topic labels and both,
with 95% bootstrap intervals, and seconds per explanation.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import layersal
from layersal.benchmark import parse_spec
from layersal.metrics import bootstrap_ci

HERE = Path(__file__).resolve().parent


def share_inside(explanation: layersal.Explanation, span: list[int], top: int = 3) -> float:
    """The share of the ``top`` highest-scoring words whose characters lie inside ``span``."""
    words = sorted(explanation.words, key=lambda w: -w.score)[:top]
    inside = [span[0] <= w.start and w.end <= span[1] for w in words]
    return sum(inside) / len(words) if words else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mix-minilm-multilabel")
    parser.add_argument("--data", type=Path, default=HERE / "data" / "mix-test.jsonl")
    parser.add_argument("--sample", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="dls,gradient,integrated_gradients:n_steps=50")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    records = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    random.Random(args.seed).shuffle(records)
    records = records[: args.sample]
    lm = layersal.load(args.model)
    print(
        f"Model `{args.model}`, {len(records)} inputs of `{args.data.name}` (seed {args.seed}); "
        "share of each gold label's top-3 words inside the part it came from, mean [95% CI].\n"
    )
    print("| method | sentiment labels | topic labels | both | s/explanation |")
    print("|---|---|---|---|---|")
    for text in args.methods.split(","):
        spec = parse_spec(text)
        job = layersal.explainer(lm, spec.method, batch_size=args.batch_size, **spec.options)
        shares: dict[str, list[float]] = {"sentiment": [], "topic": []}
        started = time.perf_counter()
        for kind, position in (("sentiment", 0), ("topic", 1)):
            texts = [r["text"] for r in records]
            targets = [r["labels"][position] for r in records]
            for record, e in zip(records, job.explain(texts, target=targets)):
                shares[kind].append(share_inside(e, record["spans"][kind]))
        seconds = (time.perf_counter() - started) / (2 * len(records))
        cells = [bootstrap_ci(shares[k]) for k in ("sentiment", "topic")]
        cells.append(bootstrap_ci(shares["sentiment"] + shares["topic"]))
        shown = " | ".join(f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in cells)
        print(f"| {spec.label} | {shown} | {seconds:.4f} |", flush=True)


if __name__ == "__main__":
    main()
