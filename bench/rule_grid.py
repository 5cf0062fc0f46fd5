"""Every DLS configuration (rule set x layer x decoding) on a benchmark sample, in hindsight.

    OMP_NUM_THREADS=1 .venv/bin/python bench/rule_grid.py --model sst2-minilm \
        --data ../shared/data/sst2/test.tsv --sample 500 --seed 0 \
        --out docs/bench/sst2-minilm/rule-grid.md

Scores each configuration by ``auto``'s criterion, comprehensiveness minus sufficiency AOPC
(the benchmark's definitions: token level, [MASK], budgets 1/5/10/20/50%, predicted class),
and by each of the two, on the same seeded sample as ``layersal bench``, one forward and one
backward per rule set, with 95% bootstrap CIs. It answers whether decoding helps under each
rule set and at which layers, and how far ``auto``'s choice (read from the model card,
calibrated on other texts) is from the best configuration in hindsight. Prints markdown
tables and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import layersal
from layersal.datasets import read_labelled
from layersal.metrics import bootstrap_ci
from layersal.saliency.auto_configs import CRITERION, config_key, parse_key, rules_for
from layersal.saliency.auto_race import score_configs
from layersal.saliency.dls import DLSOptions
from layersal.saliency.layer_choice import resolve_auto


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sample", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lm = layersal.load(args.model)
    data = read_labelled(args.data).sample(args.sample, args.seed)
    options = DLSOptions()
    started = time.perf_counter()
    order = sorted(range(len(data.texts)), key=lambda i: len(data.texts[i]))
    per_config = score_configs(lm, [data.texts[i] for i in order], options, None, args.batch_size)
    seconds = time.perf_counter() - started
    per_text = {
        key: {
            CRITERION: np.array(v["comprehensiveness"]) - np.array(v["sufficiency"]),
            "comprehensiveness": np.array(v["comprehensiveness"]),
            "sufficiency": np.array(v["sufficiency"]),
        }
        for key, v in per_config.items()
    }
    choice = resolve_auto(lm, lambda: [], options)
    picked = config_key(choice.rule, choice.layer, choice.decode)
    places = ["input", *[str(layer) for layer in range(lm.num_layers + 1)]]
    lines = [
        (
            f"Model `{args.model}`, data `{data.source}`, {len(data.texts)} texts "
            f"({seconds:.0f} s, {len(rules_for(options, lm))} forward+backward passes per text). "
            f"auto's choice ({choice.source}): `{picked}`."
        ),
    ]
    for metric, sign in ((CRITERION, 1), ("comprehensiveness", 1), ("sufficiency", -1)):
        stats = {k: bootstrap_ci(v[metric]) for k, v in per_text.items()}
        best = max(stats, key=lambda k: sign * stats[k][0])
        better = "higher" if sign > 0 else "lower"
        lines += [
            "",
            f"**{metric}** ({better} is better), mean [95% bootstrap CI]:",
            "",
            "| rule | decoding | " + " | ".join(f"layer {p}" for p in places) + " |",
            "|---|---|" + "---|" * len(places),
        ]
        for rule in rules_for(options, lm):
            for decode in (False, True):
                cells = []
                for place in places:
                    key = f"{rule}/{place}/{'decoded' if decode else 'plain'}"
                    if key not in stats:
                        cells.append("-")
                        continue
                    mean, low, high = stats[key]
                    mark = "**" if key == best else ""
                    pick = " (auto)" if key == picked else ""
                    cells.append(f"{mark}{mean:.3f}{mark} [{low:.3f}, {high:.3f}]{pick}")
                lines.append(
                    f"| {rule} | {'decoded' if decode else 'plain'} | " + " | ".join(cells) + " |"
                )
        gap = sign * (stats[picked][0] - stats[best][0])
        lines += [
            "",
            (
                f"Best in hindsight: `{best}` {stats[best][0]:.3f}; auto's `{picked}` "
                f"{stats[picked][0]:.3f}, gap {gap:+.3f}."
            ),
        ]
    lines += [
        "",
        f"Decoding minus not decoding, {CRITERION}, paired over texts (mean [95% CI]):",
        "",
        "| rule | " + " | ".join(f"layer {layer}" for layer in range(lm.num_layers + 1)) + " |",
        "|---|" + "---|" * (lm.num_layers + 1),
    ]
    gains = []
    for key in per_text:
        rule, layer, decode = parse_key(key)
        twin = config_key(rule, layer, not decode)
        if decode and twin in per_text:
            paired = per_text[key][CRITERION] - per_text[twin][CRITERION]
            gains.append((rule, layer, *bootstrap_ci(paired)))
    for rule in rules_for(options, lm):
        row = {layer: (g, lo, hi) for r, layer, g, lo, hi in gains if r == rule}
        cells = [
            f"{row[layer][0]:+.3f} [{row[layer][1]:+.3f}, {row[layer][2]:+.3f}]"
            if layer in row
            else "-"
            for layer in range(lm.num_layers + 1)
        ]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
