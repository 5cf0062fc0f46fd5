"""What an entity's explanation uses: the name itself, or its context.

For each method, every entity the NER model predicts in a seeded sample of AG News test texts
is explained; of each entity's top-3 words (by score), the share that lie inside the entity's
span against outside it. ``chance`` is what a random ranking gives: the share of a text's
words that lie in the span, averaged the same way (top 3 of a random order).

Also the seconds per entity of the default as a multiple of the plain gradient's, from the
same runs (what the entities of a text share, counted pass by pass: ``bench/entity_cost.py``).

    OMP_NUM_THREADS=1 nice python bench/entity_evidence.py [--model models/agnews-minilm-ner]
        [--data ../shared/data/agnews-ner/test.jsonl] [--texts 150] [--seed 0]
        [--methods dls,gradient,integrated_gradients:n_steps=50,shapley_sampling]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

import layersal
from layersal.benchmark import parse_spec

REPO = Path(__file__).resolve().parents[1]


def read_texts(path: Path, n: int, seed: int) -> list[str]:
    rows = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    keep = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in keep]


def inside_share(explanations: list, k: int = 3) -> tuple[float, float, int]:
    """(share of top-k words inside the span, chance share, entities) over explanations."""
    inside, chance = [], []
    for e in explanations:
        start, end = e.entity["start"], e.entity["end"]
        within = [start <= w.start and w.end <= end for w in e.words]
        top = sorted(range(len(e.words)), key=lambda i: e.words[i].score, reverse=True)[:k]
        inside.append(float(np.mean([within[i] for i in top])))
        chance.append(sum(within) / len(within))
    return float(np.mean(inside)), float(np.mean(chance)), len(explanations)


def bootstrap(values: list[float], seed: int = 0, resamples: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    data = np.asarray(values)
    means = [rng.choice(data, len(data)).mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "agnews-minilm-ner"))
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "agnews-ner" / "test.jsonl"
    )
    parser.add_argument("--texts", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods", default="dls,gradient,integrated_gradients:n_steps=50,shapley_sampling"
    )
    args = parser.parse_args()
    lm = layersal.load(args.model)
    texts = read_texts(args.data, args.texts, args.seed)
    print(f"model {args.model}, {len(texts)} texts of {args.data} (seed {args.seed})\n")
    print("| method | top-3 words inside the entity | chance | entities | s / entity |")
    print("|---|---|---|---|---|")
    seconds: dict[str, float] = {}
    for name in args.methods.split(","):
        spec = parse_spec(name)
        job = layersal.explainer(lm, spec.method, options=spec.options)
        job.explain(texts[:2])  # warm-up: lazy imports, settling
        start = time.perf_counter()
        found = job.explain(texts)
        seconds[name] = (time.perf_counter() - start) / max(1, len(found))
        per = [inside_share([e])[0] for e in found]
        low, high = bootstrap(per)
        share, chance, n = inside_share(found)
        print(
            f"| {name} | {share:.3f} [{low:.3f}, {high:.3f}] | {chance:.3f} | {n} "
            f"| {seconds[name]:.4f} |"
        )
    if "dls" in seconds and "gradient" in seconds:
        print(
            f"\ndefault / gradient, seconds per entity: {seconds['dls'] / seconds['gradient']:.2f}"
        )


if __name__ == "__main__":
    main()
