#!/usr/bin/env bash
# LSSAR's inference-only re-weighting: evaluates the finished runs of one sweep variant
# (trained as LSSA, softplus with p = 1) again with model.attention.p set to each given power,
# at every evaluation length of the run, and prints a markdown table of test accuracy per
# length (mean ± sample std over the seeds). Nothing in the runs changes.
#   tools/inference_reweighting.sh RUNS_DIR P [P...]
#   e.g. tools/inference_reweighting.sh runs/ablations/05_softplus_length/lssa_log_n_p_1 1 2 4 8
# RUNS_DIR holds one run directory per seed (seed0, seed1, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,8p "$0" >&2; exit 2; }
dir=$1
shift
bin=${SOFTLAB:-build-release/softlab}
[ -x "$bin" ] || { echo "inference_reweighting: no $bin (build it, or set SOFTLAB)" >&2; exit 2; }
runs=$(find "$dir" -mindepth 1 -maxdepth 1 -type d -name 'seed*' | sort)
[ -n "$runs" ] || { echo "inference_reweighting: no seed*/ run directories in $dir" >&2; exit 2; }

# One line per (p, seed, length): "p length accuracy".
rows=$(for p in "$@"; do
  for r in $runs; do
    "$bin" eval "$r" --set "model.attention.p=$p" | awk -v p="$p" '
      /"test_by_length"/ { inside = 1; next }
      inside && /^    "[0-9]+": \{/ { gsub(/[^0-9]/, "", $1); len = $1 }
      inside && /"accuracy":/ { v = $2; gsub(/,/, "", v); print p, len, v }
      inside && /^  \}/ { inside = 0 }'
  done
done)
# Mean and sample std per (p, length), sorted, then one table row per p (plain awk: mawk has no asort).
echo "$rows" | awk '
  { key = $1 " " $2; n[key]++; s[key] += $3; ss[key] += $3 * $3 }
  END {
    for (key in n) {
      m = s[key] / n[key]; v = n[key] > 1 ? (ss[key] - n[key] * m * m) / (n[key] - 1) : 0
      printf "%s %.2f %.2f\n", key, 100 * m, 100 * sqrt(v > 0 ? v : 0)
    }
  }' | sort -k1,1g -k2,2n | awk '
  $1 != p { if (NR > 1) rows = rows "\n"; rows = rows "| " $1 " |"; p = $1; first = (NR == 1) }
  { rows = rows sprintf(" %s ± %s |", $3, $4); if (first) { head = head sprintf(" accuracy@%s (%%) |", $2); sep = sep " ---: |" } }
  END { print "| p at evaluation |" head; print "| --- |" sep; print rows }'
