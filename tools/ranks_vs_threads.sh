#!/usr/bin/env bash
# One machine's cores as MPI ranks or as OpenMP threads: the training step time of
#   threads  1 process  x 2 threads
#   ranks    2 ranks    x 1 thread  (mpirun, default 2 MiB gradient buckets, overlapped)
#   ranks1b  2 ranks    x 1 thread  with one bucket (--bucket-mib 1024): the sum starts after backward
# interleaved round by round, medians of seconds_per_step from summary.json, printed as a
# Markdown table (docs/distributed.md).
#   tools/ranks_vs_threads.sh [BUILD_DIR] [ROUNDS] [STEPS] [CONFIG...]
# Defaults: build-release, 3 rounds, 100 steps, configs/fmnist_vit_patch.json configs/cifar10_vit.json.
# CIFAR-10 is looked for as datasets/README.md says (SOFTLAB_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-release}
rounds=${2:-3}
steps=${3:-100}
shift $(( $# < 3 ? $# : 3 ))
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(configs/fmnist_vit_patch.json configs/cifar10_vit.json)
softlab="$build/softlab"
[ -x "$softlab" ] || { echo "ranks_vs_threads: no $softlab (build it first)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "ranks_vs_threads: mpirun not found (tools/setup.sh installs Open MPI)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run() {  # run VARIANT CONFIG OUT
  local common=("$2" --set "train.max_steps=$steps" --set train.max_eval_batches=1 --out "$3" --quiet)
  case $1 in
    threads) "$softlab" train "${common[@]}" --threads 2 >/dev/null ;;
    ranks) mpirun -np 2 "$softlab" train "${common[@]}" --threads 1 >/dev/null ;;
    ranks1b) mpirun -np 2 "$softlab" train "${common[@]}" --threads 1 --bucket-mib 1024 >/dev/null ;;
  esac
  sed -n 's/.*"seconds_per_step": \([0-9.e+-]*\).*/\1/p' "$3/summary.json"
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $rounds rounds of $steps steps, interleaved"
echo
echo "| config | 1 process x 2 threads (ms/step) | 2 ranks x 1 thread | ratio | 2 ranks, one bucket | ratio |"
echo "|---|---|---|---|---|---|"
for cfg in "${configs[@]}"; do
  for v in threads ranks ranks1b; do : >"$tmp/$v"; done
  for r in $(seq "$rounds"); do
    for v in threads ranks ranks1b; do
      run "$v" "$cfg" "$tmp/run_${v}_$r" >>"$tmp/$v"
      rm -rf "$tmp/run_${v}_$r"
    done
  done
  t=$(median <"$tmp/threads"); a=$(median <"$tmp/ranks"); b=$(median <"$tmp/ranks1b")
  awk -v c="$(basename "$cfg" .json)" -v t="$t" -v a="$a" -v b="$b" \
    'BEGIN {printf "| %s | %.1f | %.1f | %.2f | %.1f | %.2f |\n", c, 1000*t, 1000*a, a/t, 1000*b, b/t}'
done
