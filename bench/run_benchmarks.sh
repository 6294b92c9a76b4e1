#!/usr/bin/env bash
# Runs the Google Benchmark programs for each thread count and writes one JSON file per
# (program, threads) plus /proc/loadavg before and after each run, then the tables of
# docs/performance.md (bench/summarize.py).
#
#   bench/run_benchmarks.sh [build-dir] [out-dir]        (defaults: build-bench, <build-dir>/results)
#   env: THREADS="1 2"  REPS=5  MIN_TIME=0.2  PROGRAMS="bench_matmul bench_norm"
#        BIN_DIR=<dir holding the programs> (default <build-dir>/bench)  FILTER=<regex>
#        WAIT_QUIET=1: before each run, wait (at most WAIT_MAX=1800 s) for the 1-minute load
#        average to fall below QUIET_LOAD=0.5
#
# The machine may be shared: the load is recorded beside every figure, and repetitions of
# all benchmarks are randomly interleaved so that a burst of outside load does not land on
# one variant only.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
out=${2:-$build/results}
bin_dir=${BIN_DIR:-$build/bench}
mkdir -p "$out"
wait_quiet() {
  [ "${WAIT_QUIET:-0}" = 1 ] || return 0
  local waited=0
  while awk -v q="${QUIET_LOAD:-0.5}" '{ exit !($1 >= q) }' /proc/loadavg && [ "$waited" -lt "${WAIT_MAX:-1800}" ]; do
    sleep 10
    waited=$((waited + 10))
  done
}
for t in ${THREADS:-1 2}; do
  for prog in ${PROGRAMS:-bench_matmul bench_norm}; do
    base="$out/$prog.t$t"
    wait_quiet
    echo "== $prog, $t thread(s), load before: $(cat /proc/loadavg)"
    cat /proc/loadavg > "$base.load"
    SOFTLAB_BENCH_THREADS=$t OMP_NUM_THREADS=$t "$bin_dir/$prog" \
      --benchmark_repetitions="${REPS:-5}" --benchmark_min_time="${MIN_TIME:-0.2}" \
      --benchmark_enable_random_interleaving=true \
      --benchmark_report_aggregates_only=true \
      --benchmark_filter="${FILTER:-.}" \
      --benchmark_out="$base.json" --benchmark_out_format=json >"$base.txt"
    cat /proc/loadavg >> "$base.load"
    echo "   load after:  $(tail -1 "$base.load")"
  done
done
python3 bench/summarize.py "$out"
