#!/usr/bin/env bash
# softlab's main job on a fresh Debian machine: install what is missing, build, train the
# default config (configs/fmnist_vit.json) on Fashion-MNIST and print the test accuracy.
# Each call trains into a new run directory, so earlier runs are never overwritten.
# Extra arguments go to `softlab train` (e.g. --set train.epochs=3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DSOFTLAB_BUILD_TESTS=OFF -DSOFTLAB_BUILD_BENCH=OFF >/dev/null
cmake --build build-release -j "$(nproc 2>/dev/null || echo 2)" --target softlab_cli
out="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
./build-release/softlab train configs/fmnist_vit.json --out "$out" "$@"
acc=$(sed -n 's/.*"test_accuracy": \([0-9.eE+-]*\).*/\1/p' "$out/summary.json" | head -n 1)
printf '\nFashion-MNIST test accuracy: %.2f%%  (run directory: %s)\n' "$(awk -v a="$acc" 'BEGIN{print 100*a}')" "$out"
