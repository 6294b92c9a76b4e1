#!/usr/bin/env bash
# Training images/s of one config under each OpenMP wait / thread setting, on a quiet
# machine and with one core taken by another process (`yes`, started 2 s before), for
# docs/performance.md ("Threads and how they wait").
#   tools/bench_wait_policy.sh [CONFIG] [STEPS] [ROUNDS]     (default: fmnist_vit, 40, 2)
# Uses build-release/softlab (SOFTLAB=path to override). Prints one line per run:
#   round  quiet|busy  setting  images/s  threads  wait-policy  load-before
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/fmnist_vit.json}
steps=${2:-40}
rounds=${3:-2}
softlab=${SOFTLAB:-build-release/softlab}
# name|environment|threads ("default": the softlab command's own choice)
settings=("default||0" "spin10k|GOMP_SPINCOUNT=10000|2" "spin1k|GOMP_SPINCOUNT=1000|2"
          "passive|OMP_WAIT_POLICY=PASSIVE|2" "one_thread|OMP_WAIT_POLICY=PASSIVE|1")
hog=
trap '[ -n "$hog" ] && kill "$hog" 2>/dev/null' EXIT
for round in $(seq "$rounds"); do
  for load in quiet busy; do
    if [ "$load" = busy ]; then
      (exec yes >/dev/null) &
      hog=$!
      sleep 2
    fi
    for s in "${settings[@]}"; do
      IFS='|' read -r name envs threads <<<"$s"
      before=$(cut -d' ' -f1 /proc/loadavg)
      json=$(env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT $envs "$softlab" bench "$config" --threads "$threads" \
             --steps "$steps" --warmup 2 --json 2>/dev/null)
      fields=$(sed -E 's/.*"threads":([0-9]+).*"openmp_wait":"([^"]*)".*"images_per_sec":([0-9.]+).*/\3 \1 \2/' <<<"$json")
      read -r ips th wait <<<"$fields"
      printf '%s %s %s %.0f %s %s load=%s\n' "$round" "$load" "$name" "$ips" "$th" "${wait// /_}" "$before"
    done
    if [ "$load" = busy ]; then
      kill "$hog"
      wait "$hog" 2>/dev/null || true
      hog=
      sleep 1
    fi
  done
done
