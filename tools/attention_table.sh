#!/usr/bin/env bash
# Trains configs/fmnist_vit_patch.json once per attention module, changing only
# model.attention.type, and prints the Markdown table of docs/attention.md.
#
#   tools/attention_table.sh [out-dir] [extra softlab train arguments...]
#   env: TYPES="softmax sigmoid ..." (default: every module the binary registers,
#          `softlab info --list attention`)
#        SOFTLAB=<softlab binary> (default build-release/softlab)
#        CONFIG=<config> (default configs/fmnist_vit_patch.json)
#
# Each run goes to <out-dir>/<type> (default out-dir: runs/attention-table-<timestamp>);
# an existing run directory is resumed, not overwritten (tools/variant_table.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/attention-table-$(date +%Y%m%d-%H%M%S)}
shift || true
[ "${1:-}" = "--" ] && shift  # "DIR -- --set ..." as for variant_table.sh
softlab=${SOFTLAB:-build-release/softlab}
types=${TYPES:-}
if [ -z "$types" ]; then
  [ -x "$softlab" ] || { echo "no softlab binary at $softlab (run tools/quickstart.sh or set SOFTLAB)" >&2; exit 2; }
  types=$("$softlab" info --list attention)
  [ -n "$types" ] || { echo "$softlab info --list attention listed no modules" >&2; exit 2; }
fi
variants=()
for t in $types; do
  variants+=("$t=model.attention.type=$t")
done
exec tools/variant_table.sh "$out" attention "${variants[@]}" -- "$@"
