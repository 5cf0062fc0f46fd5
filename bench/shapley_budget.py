"""Error of budgeted Shapley estimates against exact Shapley values, at equal budgets.

For short texts (at most ``--max-tokens`` content tokens), every coalition of the text's
tokens is sent through the model once (the game the metrics play: the explained class's
probability with the tokens outside the coalition hidden by [MASK]), which gives the exact
Shapley values. Each estimator then reads that table instead of the model, ``--repeats``
times with different seeds, and is charged one pass per distinct coalition it reads:

- ``control variate``: ``shapley_control_variate``'s estimator (the default's one-pass
  scores as surrogate, cross-fitted, paired coalitions), ``budget`` passes;
- ``no surrogate``: the same estimator with a zero surrogate (plain paired importance
  sampling of coalitions), ``budget`` passes;
- ``permutations``: plain permutation sampling (Captum's ``shapley_sampling``), as many
  whole permutations as fit in the budget (none when one does not: then no figure);
- ``surrogate``: the default's scores, rescaled by least squares to the game (budget 1);
- ``regression ridge L``: ``correction=false``, the linear game fitted to the sampled
  coalitions with the surrogate as prior (:func:`layersal.shapley.regression_shapley`);
- ``logistic ridge L``: the same fitted in log-odds (``link="logit"``,
  :func:`layersal.shapley.logistic_shapley`).

With ``--rank``, a second table gives the mean Spearman correlation of each estimate with
the exact values (the order is what the faithfulness metrics read).

The error is the relative squared error ``|phi_hat - phi|^2 / |phi|^2`` per text and run,
averaged over runs then texts; its standard error is over texts.

    OMP_NUM_THREADS=1 nice python bench/shapley_budget.py --model models/sst2-minilm \
        --data ../shared/data/sst2/test.tsv --texts 40 --max-tokens 10 --repeats 50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import layersal
from layersal.datasets import read_labelled
from layersal.encoding import encode, model_input_names
from layersal.evaluate import hide_ids, predictor, row_inputs, segment_ids
from layersal.metrics import predict_variants
from layersal.shapley import (
    adjusted_shapley,
    all_coalitions,
    exact_shapley,
    logistic_shapley,
    permutation_shapley,
    regression_shapley,
    sample_coalitions,
    surrogate_scale,
)

BUDGETS = (4, 8, 16, 32, 64, 128)


def games(model: str, data: Path, texts: int, max_tokens: int, seed: int) -> list[dict]:
    """Exact game tables and surrogate scores of the first ``texts`` short texts."""
    lm = layersal.load(model)
    job = layersal.explainer(lm)
    rows = list(read_labelled(data).texts)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    inputs = model_input_names(lm.model)
    predict = predictor(lm)
    mask_id, pad_id = hide_ids(lm)
    out = []
    for index in order:
        encoded = encode(lm.tokenizer, [rows[index]], lm.max_length, inputs)
        players = lm.task.hideable(encoded)[0].numpy()
        positions = np.flatnonzero(players)
        if not 3 <= len(positions) <= max_tokens:
            continue
        attribution = job.attribute(encoded)
        target = int(attribution.targets[0])
        coalitions = all_coalitions(len(positions))
        hide = np.zeros((len(coalitions), players.shape[0]), dtype=bool)
        for k, coalition in enumerate(coalitions):
            hide[k, positions[~coalition]] = True
        probs = predict_variants(
            predict, encoded.input_ids, encoded.attention_mask,
            np.zeros(len(coalitions), dtype=np.int64), hide, "mask", mask_id, pad_id, 256,
            segment_ids(encoded), row_inputs(encoded),
        )  # fmt: skip
        values = probs[:, target]
        out.append(
            {
                "coalitions": coalitions,
                "values": values,
                "exact": exact_shapley(coalitions, values),
                "table": {row.tobytes(): float(v) for row, v in zip(coalitions, values)},
                "surrogate": attribution.scores[0, torch.from_numpy(positions)].double().numpy(),
            }
        )
        if len(out) == texts:
            break
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's correlation (ties broken by position: estimates rarely tie)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def estimate(game: dict, budget: int, kind: str, rng: np.random.Generator) -> np.ndarray | None:
    coalitions, values = game["coalitions"], game["values"]
    n = coalitions.shape[1]
    table = game["table"]
    empty, full = float(values[0]), float(values[-1])
    if kind == "permutations":
        permutations = (budget - 1) // n
        if permutations < 1:
            return None
        return permutation_shapley(n, table, permutations, rng)[0]
    if kind == "surrogate":
        a = game["surrogate"]
        c = surrogate_scale(a, full - empty, coalitions[:0], np.zeros(0))
        return c * a
    a = game["surrogate"] if kind != "no surrogate" else np.zeros(n)
    ridge = float(kind.split("ridge ")[1]) if "ridge" in kind else None
    sampled = sample_coalitions(n, budget - 1, rng)
    read = np.array([table[row.tobytes()] for row in sampled])
    if kind.startswith("regression"):
        assert ridge is not None, "regression needs 'ridge L'"
        return regression_shapley(a, empty, full, sampled, read, ridge=ridge).values
    if kind.startswith("logistic"):
        assert ridge is not None, "logistic needs 'ridge L'"
        return logistic_shapley(a, empty, full, sampled, read, ridge=ridge, rng=rng).values
    return adjusted_shapley(a, empty, full, sampled, read, ridge=ridge).values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/sst2-minilm")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sst2/test.tsv"))
    parser.add_argument("--texts", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--kinds",
        default="control variate,no surrogate,permutations,surrogate",
        help="estimators, comma-separated (also 'control variate ridge L', "
        "'regression ridge L', 'logistic ridge L')",
    )
    parser.add_argument("--rank", action="store_true", help="also the Spearman table")
    args = parser.parse_args()
    start = time.perf_counter()
    found = games(args.model, args.data, args.texts, args.max_tokens, args.seed)
    sizes = [g["coalitions"].shape[1] for g in found]
    print(
        f"{args.model}: {len(found)} texts of {min(sizes)}-{max(sizes)} tokens "
        f"(mean {np.mean(sizes):.1f}); exact tables in {time.perf_counter() - start:.0f} s\n"
    )
    kinds = tuple(args.kinds.split(","))
    tables: dict[str, list[str]] = {"relative squared error": [], "Spearman with exact": []}
    for budget in BUDGETS:
        cells: dict[str, list[str]] = {name: [] for name in tables}
        for kind in kinds:
            per_text: dict[str, list[float]] = {name: [] for name in tables}
            for t, game in enumerate(found):
                exact = game["exact"]
                norm = float(exact @ exact)
                errors, ranks = [], []
                for r in range(args.repeats if kind != "surrogate" else 1):
                    rng = np.random.default_rng([args.seed, t, r, budget])
                    phi = estimate(game, budget, kind, rng)
                    if phi is None:
                        break
                    errors.append(float((phi - exact) @ (phi - exact)) / norm)
                    ranks.append(spearman(phi, exact))
                if errors:
                    per_text["relative squared error"].append(float(np.mean(errors)))
                    per_text["Spearman with exact"].append(float(np.nanmean(ranks)))
            for name, values in per_text.items():
                if len(values) < len(found):
                    cells[name].append(f"- ({len(values)} texts)" if values else "-")
                    continue
                mean = float(np.nanmean(values))
                se = float(np.nanstd(values, ddof=1) / np.sqrt(len(values)))
                cells[name].append(f"{mean:.3f} ± {se:.3f}")
        for name in tables:
            tables[name].append(f"| {budget} | " + " | ".join(cells[name]) + " |")
    for name, rows in tables.items():
        if name != "relative squared error" and not args.rank:
            continue
        print(f"\n{name}:\n")
        print("| budget (passes) | " + " | ".join(kinds) + " |")
        print("|---" * (len(kinds) + 1) + "|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
