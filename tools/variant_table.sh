#!/usr/bin/env bash
# Trains one config once per variant and prints a Markdown table of the results: the
# machinery behind tools/attention_table.sh and tools/head_table.sh (until `softlab sweep`).
#
#   tools/variant_table.sh OUT_DIR COLUMN VARIANT... [-- extra softlab train arguments...]
#   VARIANT is LABEL or LABEL=KEY=VALUE[;KEY=VALUE...]: the run LABEL with those --set
#   overrides (in order), e.g. "svm_agarap=model.head.type=svm;model.head.preset=agarap2017".
#   env: SOFTLAB=<softlab binary> (default build-release/softlab)
#        CONFIG=<config> (default configs/fmnist_vit_patch.json)
#
# Each run goes to OUT_DIR/LABEL; a finished run is skipped and an interrupted one resumed,
# so an interrupted table is completed by running the same command again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,12p "$0" >&2; exit 2; }
out=$1 column=$2
shift 2
variants=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do variants+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
softlab=${SOFTLAB:-build-release/softlab}
config=${CONFIG:-configs/fmnist_vit_patch.json}
[ -x "$softlab" ] || { echo "no softlab binary at $softlab (run tools/quickstart.sh or set SOFTLAB)" >&2; exit 2; }
mkdir -p "$out"
for v in "${variants[@]}"; do
  label=${v%%=*}
  sets=()
  if [ "$label" != "$v" ]; then
    IFS=';' read -r -a kvs <<< "${v#*=}"
    for kv in "${kvs[@]}"; do sets+=(--set "$kv"); done
  fi
  if [ -f "$out/$label/summary.json" ]; then
    echo "== $label: done already ($out/$label)"
    continue
  fi
  resume=()
  [ -f "$out/$label/last.ckpt" ] && resume=(--resume)
  echo "== $label ${sets[*]}"
  "$softlab" train "$config" "${sets[@]}" --out "$out/$label" "${resume[@]}" "$@"
done
echo
echo "| $column | test accuracy | best | epochs | s/epoch | train images/s | parameters |"
echo "|---|---|---|---|---|---|---|"
for v in "${variants[@]}"; do
  label=${v%%=*}
  s="$out/$label/summary.json"
  [ -f "$s" ] || { echo "| $label | (no summary) | | | | | |"; continue; }
  # summary.json is pretty-printed one key per line; read the fields without jq or Python.
  field() { sed -n "s/^  \"$1\": \\(.*\\),\$/\\1/p" "$s" | head -1; }
  acc=$(field test_accuracy); best=$(field best_test_accuracy); ep=$(field epochs)
  secs=$(field train_seconds); ips=$(field train_images_per_sec); params=$(field params)
  awk -v t="$label" -v a="$acc" -v b="$best" -v e="$ep" -v s="$secs" -v i="$ips" -v p="$params" \
    'BEGIN { printf "| %s | %.2f%% | %.2f%% | %d | %.1f | %.0f | %d |\n", t, 100*a, 100*b, e, s/e, i, p }'
done
