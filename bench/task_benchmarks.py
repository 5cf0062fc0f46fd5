"""Faithfulness of every method on the pair, zero-shot and entity benchmark models.

Three runs of :func:`layersal.benchmark.run_benchmark`, each writing ``results.md`` and
``results.json`` into ``--out/<run>``:

- ``pairs``: ``models/esnli-minilm-nli`` on a seeded sample of e-SNLI test pairs
  (``explain((premise, hypothesis))``), target the model's predicted class; ``auto``
  from the model card (calibrated on the selection pairs).
- ``zero-shot``: the same model as a zero-shot classifier of AG News test texts, candidate
  labels :data:`TOPICS` (hypothesis ``"This example is {}."``, ``multi_label=False``), each
  text's top label explained; ``auto`` calibrated on 64 texts of ``agnews/dev.tsv``. Also the
  zero-shot accuracy against the gold topics on ``--accuracy-texts`` test texts.
- ``entities``: ``models/agnews-minilm-ner`` on a seeded sample of AG News NER test texts,
  every predicted entity explained (``n_texts`` counts entities); ``auto`` from the card.

    OMP_NUM_THREADS=1 nice python bench/task_benchmarks.py [--only pairs] [--sample 150]
        [--methods dls,gradient,integrated_gradients:n_steps=50,shapley_sampling]
        [--data ../shared/data] [--out bench-results/tasks]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import layersal
from layersal.benchmark import parse_spec, run_benchmark
from layersal.datasets import LabelledTexts, read_labelled
from layersal.report.bench import markdown, write

REPO = Path(__file__).resolve().parents[1]
TOPICS = {
    "World": "world politics",
    "Sports": "sports",
    "Business": "business",
    "Sci/Tech": "science and technology",
}
"""AG News topics and the candidate label each is asked as (a hypothesis reads
``"This example is science and technology."``, not ``"... is Sci/Tech."``)."""


def esnli_pairs(path: Path) -> LabelledTexts:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    return LabelledTexts([(r[0], r[1]) for r in rows], [r[2] for r in rows], str(path))  # type: ignore[misc]


def ner_texts(path: Path) -> LabelledTexts:
    rows = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    return LabelledTexts(rows, [None] * len(rows), str(path))


def zero_shot_accuracy(lm: layersal.LoadedModel, data: LabelledTexts) -> float:
    """Share of texts whose top zero-shot label is their gold topic (one batch of pairs per
    text, all labels)."""
    from layersal.rows import zero_shot_rows

    job = layersal.explainer(lm, "gradient", batch_size=64)
    right = 0
    for start in range(0, len(data), 64):
        texts = data.texts[start : start + 64]
        plans = zero_shot_rows(job, list(texts), None)
        for plan, gold in zip(plans, data.labels[start : start + 64]):
            right += plan[0].shown.prediction == TOPICS[str(gold)]  # type: ignore[union-attr]
    return right / len(data)


def run(name: str, lm, data: LabelledTexts, specs, out: Path, calibration=None) -> None:
    started = time.perf_counter()
    result = run_benchmark(lm, data, specs, batch_size=16, metric_options={"loo": False},
                           calibration=calibration)  # fmt: skip
    folder = out / name
    write(result, folder)
    print(f"## {name} ({time.perf_counter() - started:.0f} s)\n")
    print(markdown(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["pairs", "zero-shot", "entities"], action="append")
    parser.add_argument("--sample", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accuracy-texts", type=int, default=1000)
    parser.add_argument(
        "--methods", default="dls,gradient,integrated_gradients:n_steps=50,shapley_sampling"
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tasks"))
    parser.add_argument("--models", type=Path, default=REPO / "models")
    args = parser.parse_args()
    specs = [parse_spec(m) for m in args.methods.split(",")]
    chosen = args.only or ["pairs", "zero-shot", "entities"]
    nli = args.models / "esnli-minilm-nli"
    if "pairs" in chosen:
        data = esnli_pairs(args.data / "esnli" / "test.tsv").sample(args.sample, args.seed)
        run("pairs", layersal.load(nli), data, specs, args.out)
    if "zero-shot" in chosen:
        lm = layersal.load(nli, task="zero-shot", labels=list(TOPICS.values()))
        test = read_labelled(args.data / "agnews" / "test.tsv")
        accuracy_data = test.sample(args.accuracy_texts, args.seed)
        started = time.perf_counter()
        accuracy = zero_shot_accuracy(lm, accuracy_data)
        print(
            f"zero-shot accuracy on {len(accuracy_data)} AG News test texts (seed {args.seed}): "
            f"{accuracy:.4f} ({time.perf_counter() - started:.0f} s); labels "
            f"{list(TOPICS.values())}\n"
        )
        dev = read_labelled(args.data / "agnews" / "dev.tsv")
        calibration = [dev.texts[i] for i in sorted(random.Random(1).sample(range(len(dev)), 64))]
        data = test.sample(args.sample, args.seed)
        run("zero-shot", lm, data, specs, args.out, calibration=calibration)
    if "entities" in chosen:
        data = ner_texts(args.data / "agnews-ner" / "test.jsonl").sample(args.sample, args.seed)
        run("entities", layersal.load(args.models / "agnews-minilm-ner"), data, specs, args.out)


if __name__ == "__main__":
    main()
