"""Write a model card's ``frontier`` from ``layersal bench`` runs on that model.

Every benchmarked method becomes a point: its measured passes per text (forward + backward)
and its comprehensiveness and sufficiency AOPC (means). ``explain(..., budget=N)`` picks
among them (``layersal.budget_choice``). The entry records the weights' SHA-256, so it
counts only for these weights, and the runs it came from.

    python scripts/card_frontier.py --model models/sst2-minilm bench-results/a/results.json \
        [bench-results/b/results.json ...]

``--add`` keeps the points already on the card (measured on the same weights: refused
otherwise) and adds those of the runs, a run's point replacing the card's of the same label:
for a method measured later on the same texts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import layersal
from layersal.checkpoints import CARD_FILE
from layersal.saliency.auto_store import model_digest


def points(paths: list[Path]) -> tuple[list[dict], list[str]]:
    found: dict[str, dict] = {}
    sources = []
    for path in paths:
        run = json.loads(path.read_text(encoding="utf-8"))
        sources.append(f"{run['data']}, {run['n_texts']} texts")
        for method in run["methods"]:
            summary = method.get("summary") or {}
            if "aopc_comprehensiveness" not in summary:
                continue  # not run
            found[method["label"]] = {
                "label": method["label"],
                "method": method["method"],
                "options": method["options"],
                "passes_per_text": round(
                    method["forward_passes_per_text"] + method["backward_passes_per_text"], 1
                ),
                "aopc_comprehensiveness": round(summary["aopc_comprehensiveness"][0], 4),
                "aopc_sufficiency": round(summary["aopc_sufficiency"][0], 4),
            }
    return sorted(found.values(), key=lambda p: p["passes_per_text"]), sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model's folder (or bundled name)")
    parser.add_argument("runs", nargs="+", type=Path, help="results.json of bench runs")
    parser.add_argument(
        "--add", action="store_true", help="keep the card's points, add (or replace) the runs'"
    )
    args = parser.parse_args()
    lm = layersal.load(args.model)
    if lm.path is None:
        raise SystemExit(f"{args.model} has no folder to write a card into")
    found, sources = points(args.runs)
    card_path = lm.path / CARD_FILE
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    digest = model_digest(lm)
    if args.add:
        old = card.get("frontier") or {}
        if old and old.get("weights_sha256") != digest:
            raise SystemExit("--add: the card's frontier was measured on other weights")
        merged = {p["label"]: p for p in old.get("points", [])}
        merged.update({p["label"]: p for p in found})
        found = sorted(merged.values(), key=lambda p: p["passes_per_text"])
        sources = [*old.get("measured_on", []), *(s for s in sources if s not in old.get(
            "measured_on", []))]  # fmt: skip
    card["frontier"] = {
        "weights_sha256": digest,
        "criterion": "comprehensiveness AOPC minus sufficiency AOPC ([MASK], token level)",
        "measured_on": sources,
        "points": found,
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    for p in found:
        print(
            f"{p['label']:45s} {p['passes_per_text']:7.1f} passes  "
            f"comp {p['aopc_comprehensiveness']:.3f}  suff {p['aopc_sufficiency']:.3f}"
        )
    print(f"wrote {card_path}")


if __name__ == "__main__":
    main()
