#!/usr/bin/env bash
# Trains configs/fmnist_vit_patch.json once per head, changing only model.head, and prints the
# Markdown table of docs/heads.md.
#
#   tools/head_table.sh [out-dir] [extra softlab train arguments...]
#   env: HEADS="softmax svm ..." (default: every head the binary registers,
#          `softlab info --list heads`, with svm also run with Agarap's preset as
#          svm_agarap2017)
#        SOFTLAB=<softlab binary> (default build-release/softlab)
#        CONFIG=<config> (default configs/fmnist_vit_patch.json)
#
# For MNIST: tools/get_mnist.sh, then add --set data.dataset=mnist --set data.path=<its DEST>.
# Each run goes to <out-dir>/<label> (default out-dir: runs/head-table-<timestamp>); an
# existing run directory is resumed, not overwritten (tools/variant_table.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/head-table-$(date +%Y%m%d-%H%M%S)}
shift || true
[ "${1:-}" = "--" ] && shift  # "DIR -- --set ..." as for variant_table.sh
softlab=${SOFTLAB:-build-release/softlab}
heads=${HEADS:-}
if [ -z "$heads" ]; then
  [ -x "$softlab" ] || { echo "no softlab binary at $softlab (run tools/quickstart.sh or set SOFTLAB)" >&2; exit 2; }
  for h in $("$softlab" info --list heads); do
    heads+=" $h"
    # The preset is a different loss (docs/heads.md), worth its own row beside plain svm.
    [ "$h" = svm ] && heads+=" svm_agarap2017"
  done
  [ -n "$heads" ] || { echo "$softlab info --list heads listed no heads" >&2; exit 2; }
fi
variants=()
for h in $heads; do
  case $h in
    svm_agarap2017) variants+=("$h=model.head.type=svm;model.head.preset=agarap2017") ;;
    *) variants+=("$h=model.head.type=$h") ;;
  esac
done
exec tools/variant_table.sh "$out" head "${variants[@]}" -- "$@"
