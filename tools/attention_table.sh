#!/usr/bin/env bash
# Trains configs/fmnist_vit.json once per attention module, changing only
# model.attention.type, and prints the Markdown table of docs/attention.md.
#
#   tools/attention_table.sh [out-dir] [extra softlab train arguments...]
#   env: TYPES="softmax sigmoid ..."  SOFTLAB=<softlab binary> (default build-release/softlab)
#        CONFIG=<config> (default configs/fmnist_vit.json)
#
# Each run goes to <out-dir>/<type> (default out-dir: runs/attention-table-<timestamp>);
# an existing run directory is resumed, not overwritten, so an interrupted table can be
# completed by running the same command again.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/attention-table-$(date +%Y%m%d-%H%M%S)}
shift || true
softlab=${SOFTLAB:-build-release/softlab}
config=${CONFIG:-configs/fmnist_vit.json}
types=${TYPES:-softmax sigmoid linear mala soft selective softplus relu power}
[ -x "$softlab" ] || { echo "no softlab binary at $softlab (run tools/quickstart.sh or set SOFTLAB)" >&2; exit 2; }
mkdir -p "$out"
for t in $types; do
  if [ -f "$out/$t/summary.json" ]; then
    echo "== $t: done already ($out/$t)"
    continue
  fi
  resume=()
  [ -f "$out/$t/last.ckpt" ] && resume=(--resume)
  echo "== $t"
  "$softlab" train "$config" --set "model.attention.type=$t" --out "$out/$t" "${resume[@]}" "$@"
done
echo
echo "| attention | test accuracy | best | epochs | s/epoch | train images/s | parameters |"
echo "|---|---|---|---|---|---|---|"
for t in $types; do
  s="$out/$t/summary.json"
  [ -f "$s" ] || { echo "| $t | (no summary) | | | | | |"; continue; }
  # summary.json is pretty-printed one key per line; read the fields without jq or Python.
  field() { sed -n "s/^  \"$1\": \\(.*\\),\$/\\1/p" "$s" | head -1; }
  acc=$(field test_accuracy); best=$(field best_test_accuracy); ep=$(field epochs)
  secs=$(field train_seconds); ips=$(field train_images_per_sec); params=$(field params)
  awk -v t="$t" -v a="$acc" -v b="$best" -v e="$ep" -v s="$secs" -v i="$ips" -v p="$params" \
    'BEGIN { printf "| %s | %.2f%% | %.2f%% | %d | %.1f | %.0f | %d |\n", t, 100*a, 100*b, e, s/e, i, p }'
done
