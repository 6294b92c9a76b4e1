#!/usr/bin/env bash
# Runs the papers' ablations (configs/ablations/*.json) and copies each sweep's report into
# docs/results/<sweep>/ (report.md, results.csv and the SVG plots), which docs/results.md
# links to. Finished runs are skipped, so this resumes after an interruption.
#   tools/ablations.sh [--jobs N] [SWEEP_NAME...]     e.g. tools/ablations.sh 02_linear_mala_fmnist
#   tools/ablations.sh --report-only [SWEEP_NAME...]  copy the reports of what has run so far
# MNIST and CIFAR-10 are looked for as datasets/README.md says (e.g. SOFTLAB_DATA_DIR holding
# mnist/ from tools/get_mnist.sh and cifar10/).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=1
run=1
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=$2; shift 2 ;;
    --report-only) run=0; shift ;;
    *) names+=("$1"); shift ;;
  esac
done
if [ ${#names[@]} -eq 0 ]; then
  for f in configs/ablations/*.json; do names+=("$(basename "$f" .json)"); done
fi

bin=${SOFTLAB:-build-release/softlab}
if [ ! -x "$bin" ]; then
  cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DSOFTLAB_BUILD_TESTS=OFF >/dev/null
  cmake --build build-release -j "$(nproc)" --target softlab_cli
fi

for name in "${names[@]}"; do
  sweep=configs/ablations/$name.json
  [ -f "$sweep" ] || { echo "ablations: no sweep file $sweep" >&2; exit 2; }
  out=runs/ablations/$name
  if [ $run -eq 1 ]; then
    "$bin" sweep "$sweep" --jobs "$jobs"
  fi
  [ -f "$out/sweep.json" ] || { echo "ablations: $name has not run yet"; continue; }
  "$bin" report "$out" >/dev/null
  mkdir -p "docs/results/$name"
  cp "$out"/report.md "$out"/results.csv "docs/results/$name/"
  cp "$out"/*.svg "docs/results/$name/" 2>/dev/null || true
  echo "ablations: docs/results/$name/"
done
