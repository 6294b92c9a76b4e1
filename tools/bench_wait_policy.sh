#!/usr/bin/env bash
# Training images/s of one config under each OpenMP wait / thread setting, on a quiet
# machine and with one core taken by another process (`yes`, started 2 s before), for
# docs/performance.md ("Threads and how they wait"). Each run is a real `softlab train`
# of STEPS steps (so the default includes the trainer's own choices), evaluated on one
# batch; the figure is summary.json's train_images_per_sec.
#   tools/bench_wait_policy.sh [CONFIG] [STEPS] [ROUNDS]     (default: fmnist_vit, 150, 2)
# Uses build-release/softlab (SOFTLAB=path to override); CIFAR-10 is looked for as
# datasets/README.md says (e.g. SOFTLAB_DATA_DIR). Prints one line per run:
#   round  quiet|busy  setting  images/s  threads  wait-policy  load-before
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/fmnist_vit_patch.json}
steps=${2:-150}
rounds=${3:-2}
softlab=${SOFTLAB:-build-release/softlab}
# name|environment|threads ("default": the softlab command's own choice)
settings=("default||0" "spin10k|GOMP_SPINCOUNT=10000|2" "spin1k|GOMP_SPINCOUNT=1000|2"
          "passive|OMP_WAIT_POLICY=PASSIVE|2" "one_thread|OMP_WAIT_POLICY=PASSIVE|1")
hog=
out=$(mktemp -d)
trap '[ -n "$hog" ] && kill "$hog" 2>/dev/null; rm -rf "$out"' EXIT
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
      rm -rf "$out/run"
      if ! env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT $envs "$softlab" train "$config" --threads "$threads" \
          --out "$out/run" --quiet --set train.max_steps="$steps" --set train.epochs=1 \
          --set train.schedule.warmup_epochs=0 --set train.max_eval_batches=1 >/dev/null 2>"$out/err"; then
        echo "bench_wait_policy: softlab train failed:" >&2
        cat "$out/err" >&2
        exit 2
      fi
      json=$(cat "$out/run/summary.json")
      fields=$(tr -d '\n' <<<"$json" |
               sed -E 's/.*"train_images_per_sec": *([0-9.e+]+).*"threads": *([0-9]+).*"openmp_wait": *"([^"]*)".*/\1 \2 \3/')
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
