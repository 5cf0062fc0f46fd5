"""One frontier plot (passes per text against comprehensiveness AOPC) from saved
``layersal bench`` runs on the same texts, e.g. a main run and a budget sweep run apart.

    python bench/frontier.py --title "sst2-minilm, 200 texts" --out docs/bench/x/frontier.png \
        bench-results/a/results.json bench-results/b/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from layersal.report.bench import frontier_figure, frontier_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--title", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    seen: dict[str, object] = {}
    for path in args.runs:
        for point in frontier_points(json.loads(path.read_text(encoding="utf-8"))):
            seen.setdefault(point.label, point)  # the first run's copy of a repeated method
    points = sorted(seen.values(), key=lambda p: p.passes)  # type: ignore[attr-defined]
    print("\n".join(str(p) for p in frontier_figure(points, args.title, args.out)))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
