#!/usr/bin/env bash
# softlab's main job on a fresh Debian machine: install what is missing, build, train the
# default config (configs/fmnist_vit.json) on Fashion-MNIST and print the test accuracy.
# It trains in bf16 where the CPU has bf16 matrix products, in fp32 elsewhere.
# Each call trains into a new run directory, so earlier runs are never overwritten.
# Extra arguments go to `softlab train` (e.g. --set train.epochs=3).
#   tools/quickstart.sh --resume [RUN_DIR]   continues an interrupted quickstart run (default:
#                                            the newest runs/quickstart-*)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# A unity build: from scratch it compiles in about a quarter of the time (CMakeLists.txt).
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DSOFTLAB_BUILD_TESTS=OFF -DSOFTLAB_BUILD_BENCH=OFF \
  -DSOFTLAB_UNITY=ON >/dev/null
cmake --build build-release -j "$(nproc 2>/dev/null || echo 2)" --target softlab_cli
resume=()
if [ "${1:-}" = "--resume" ]; then
  shift
  if [ $# -gt 0 ] && [ -d "$1" ]; then
    out=$1
    shift
  else
    out=$(ls -d runs/quickstart-* 2>/dev/null | sort | tail -n 1)
    [ -n "$out" ] || { echo "quickstart: no runs/quickstart-* to resume" >&2; exit 2; }
  fi
  resume=(--resume)
else
  out="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
fi
# bf16 matrix products where the CPU runs them natively (AVX512-BF16 or AMX), fp32 elsewhere;
# a later --set train.precision=... among the arguments wins.
precision=fp32
info=$(./build-release/softlab info)
grep -q '^bf16 matrix products.*: \(AVX512-BF16\|AMX-BF16\)$' <<< "$info" && precision=bf16
echo "quickstart: train.precision=$precision"
code=0
./build-release/softlab train configs/fmnist_vit.json --out "$out" "${resume[@]}" --set train.precision=$precision "$@" || code=$?
if [ $code -eq 130 ]; then
  echo "quickstart: interrupted; continue with: tools/quickstart.sh --resume $out" >&2
  exit 130
fi
[ $code -eq 0 ] || exit $code
acc=$(sed -n 's/.*"test_accuracy": \([0-9.eE+-]*\).*/\1/p' "$out/summary.json" | head -n 1)
printf '\nFashion-MNIST test accuracy: %.2f%%  (run directory: %s)\n' "$(awk -v a="$acc" 'BEGIN{print 100*a}')" "$out"
