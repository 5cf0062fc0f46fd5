#!/usr/bin/env bash
# The propagation-rules benchmark of docs/benchmarks.md: for each bundled model, on the same
# seeded samples as the earlier tables, (1) every DLS configuration (bench/rule_grid.py) and
# (2) the headline methods with all metrics (layersal bench). Single-threaded, niced.
# Usage: bash bench/rules_benchmark.sh [model ...]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
METHODS='dls,dls:rule=gradient;decode=true,gradient,input_x_gradient,input_x_gradient:rule=cp,input_x_gradient:rule=cp_id,lrp,integrated_gradients'
declare -A DATA=(
  [sst2-tiny]="../shared/data/sst2/test.tsv"
  [agnews-tiny]="../shared/data/agnews/test.tsv --sample 1000 --seed 0"
  [sst2-minilm]="../shared/data/sst2/test.tsv --sample 500 --seed 0"
  [agnews-minilm]="../shared/data/agnews/test.tsv --sample 300 --seed 0"
)
for model in "${@:-sst2-tiny agnews-tiny sst2-minilm agnews-minilm}"; do
  for m in $model; do
    mkdir -p "docs/bench/$m"
    # shellcheck disable=SC2086
    nice .venv/bin/python bench/rule_grid.py --model "$m" --data ${DATA[$m]} --out "docs/bench/$m/rule-grid.md"
    # shellcheck disable=SC2086
    nice .venv/bin/layersal bench --model "$m" --data ${DATA[$m]} --no-loo --methods "$METHODS" \
      --out "bench-results/rules/$m"
    cp "bench-results/rules/$m/results.md" "docs/bench/$m/results-rules.md"
  done
done
