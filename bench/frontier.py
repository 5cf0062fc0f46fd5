"""One frontier plot (passes per text against comprehensiveness AOPC) from saved
``layersal bench`` runs on the same texts, e.g. a main run and a budget sweep run apart.

    python bench/frontier.py --title "sst2-minilm, 200 texts" --out docs/bench/x/frontier.png \
        bench-results/a/results.json bench-results/b/results.json [--card models/sst2-minilm]

``--card`` adds the points of the model card's ``frontier`` that no run has (measured on the
same texts; the card keeps means only, so they are drawn without a CI). ``--ceiling`` draws
each method's fraction of the comprehensiveness ceiling instead (runs with ``--ceilings``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from layersal.benchmark import FrontierPoint
from layersal.report.bench import frontier_figure, frontier_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--title", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--card", help="a model (folder or bundled name) whose card's points to add"
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="the fraction of the ceiling, not the AOPC"
    )
    args = parser.parse_args()
    if args.ceiling and args.card:
        parser.error("--card holds AOPC means, not fractions of the ceiling: not with --ceiling")
    seen: dict[str, FrontierPoint] = {}
    for path in args.runs:
        saved = json.loads(path.read_text(encoding="utf-8"))
        fractions = {
            row["label"]: tuple(row["ceiling_fraction"])
            for row in (saved.get("ceilings") or {}).get("methods", [])
        }
        for point in frontier_points(saved):
            if args.ceiling:
                if point.label not in fractions:
                    continue
                point = replace(point, comprehensiveness=fractions[point.label])
            seen.setdefault(point.label, point)  # the first run's copy of a repeated method
    if args.card:
        for point in card_points(args.card):
            seen.setdefault(point.label, point)
    points = sorted(seen.values(), key=lambda p: p.passes)
    ylabel = "fraction of the comprehensiveness ceiling (higher is better)"
    drawn = frontier_figure(
        points, args.title, args.out, **({"ylabel": ylabel} if args.ceiling else {})
    )
    print("\n".join(str(p) for p in drawn))


def card_points(model: str) -> list[FrontierPoint]:
    """The model card's frontier points (as ``explain(budget=N)`` reads them: only for the
    weights they were measured on), their means as a zero-width CI."""
    import layersal
    from layersal.budget_choice import card_frontier

    out = []
    for p in card_frontier(layersal.load(model)) or []:
        comp, suff = p["aopc_comprehensiveness"], p["aopc_sufficiency"]
        out.append(
            FrontierPoint(
                p.get("label") or p["method"],
                p["method"],
                p["passes_per_text"],
                (comp, comp, comp),
                (suff, suff, suff),
                False,
                dict(p.get("options") or {}),
            )
        )
    return out


if __name__ == "__main__":
    main()
