#!/usr/bin/env bash
# PyTorch vs softlab, side by side: training images/s, batch-1 latency and batch-256
# inference images/s of the same ViT, fp32 and bf16, interleaved over several rounds, as a
# Markdown table. Never part of CI; see tools/compare/README.md.
#
#   tools/compare/compare.sh [--rounds R] [--threads T] [--softlab PATH] [--quick]
#                            [--out FILE.md] [--check] [--config FILE]... [--pytorch-omp auto|default]
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
py=/usr/bin/python3  # Debian's python, which python3-torch installs into

rounds=2
threads=2
softlab="$root/build-release/softlab"
quick=0
out=""
check=0
omp=auto
configs=()

usage() {
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF

Options:
  --rounds R      rounds; each round measures every variant once (default 2)
  --threads T     threads for both sides (default 2)
  --softlab PATH  the softlab binary (default build-release/softlab)
  --quick         3 timed steps after 1 warm-up step: a smoke check, not a measurement
  --out FILE.md   also write the report there (raw results go to FILE.raw/)
  --check         first compare vit.py's logits with softlab predict on the same weights
  --config FILE   a softlab config to measure (repeatable; default: configs/fmnist_vit_patch.json
                  and configs/cifar10_vit.json)
  --pytorch-omp auto|default
                  auto (default): PyTorch's OpenMP threads wait as softlab's do, chosen by
                  the same rule from the machine's load (spin when quiet, passive when busy);
                  default: libgomp's own default for PyTorch
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
    --rounds=*) rounds=${1#*=}; shift ;;
    --threads) threads=${2:?--threads needs a value}; shift 2 ;;
    --threads=*) threads=${1#*=}; shift ;;
    --softlab) softlab=${2:?--softlab needs a path}; shift 2 ;;
    --softlab=*) softlab=${1#*=}; shift ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --config) configs+=("${2:?--config needs a file}"); shift 2 ;;
    --config=*) configs+=("${1#*=}"); shift ;;
    --pytorch-omp) omp=${2:?--pytorch-omp needs auto or default}; shift 2 ;;
    --pytorch-omp=*) omp=${1#*=}; shift ;;
    --quick) quick=1; shift ;;
    --check) check=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
  esac
done

if ! [[ -x $py ]] || ! "$py" -c 'import torch' 2>/dev/null; then
  echo "compare.sh: $py cannot import torch. On Debian:" >&2
  echo "  apt-get install python3-torch libopenblas0-openmp" >&2
  exit 2
fi
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --rounds must be a positive integer, got '$rounds'" >&2; exit 2; }
[[ $threads =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --threads must be a positive integer, got '$threads'" >&2; exit 2; }
[[ $omp == auto || $omp == default ]] || { echo "compare.sh: --pytorch-omp must be auto or default, got '$omp'" >&2; exit 2; }
[[ ${#configs[@]} -gt 0 ]] || configs=("$root/configs/fmnist_vit_patch.json" "$root/configs/cifar10_vit.json")
for c in "${configs[@]}"; do
  [[ -f $c ]] || { echo "compare.sh: config $c not found" >&2; exit 2; }
done

if ! [[ -x $softlab ]]; then
  echo "compare.sh: no softlab binary at $softlab; build one (cmake -S . -B build-release" \
       "-DCMAKE_BUILD_TYPE=Release && cmake --build build-release --target softlab) or pass --softlab PATH" >&2
  exit 2
fi
softlab=$(cd "$(dirname "$softlab")" && pwd)/$(basename "$softlab")

if [[ $quick == 1 ]]; then steps=3; warmup=1; else steps=20; warmup=3; fi

if [[ -n $out ]]; then
  raw="${out%.md}.raw"
  rm -rf "$raw"
  mkdir -p "$raw" || exit 2
else
  raw=$(mktemp -d "${TMPDIR:-/tmp}/softlab-compare.XXXXXX") || exit 2
fi

# The configs' names: the "name" key, else the file's stem (as softlab does).
names=()
for c in "${configs[@]}"; do
  names+=("$("$py" -c 'import json, os, sys
p = sys.argv[1]
print(json.load(open(p)).get("name") or os.path.splitext(os.path.basename(p))[0])' "$c")") || exit 2
done

"$py" - "$raw/run.json" "$rounds" "$threads" "$softlab" "$steps" "$warmup" "$quick" "$(nproc)" \
      "$(date -u '+%Y-%m-%d %H:%M UTC')" "$omp" "${#configs[@]}" "${configs[@]}" "${names[@]}" "$root" <<'EOF'
import json, sys
a = sys.argv[1:]
n = int(a[10])
paths, names = a[11:11 + n], a[11 + n:11 + 2 * n]
json.dump({"rounds": int(a[1]), "threads": int(a[2]), "softlab": a[3], "steps": int(a[4]), "warmup": int(a[5]),
           "quick": a[6] == "1", "nproc": a[7], "date": a[8], "pytorch_omp": a[9], "root": a[11 + 2 * n],
           "configs": [{"path": p, "name": m} for p, m in zip(paths, names)]}, open(a[0], "w"), indent=2)
EOF

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

cat /proc/loadavg >"$raw/load_start" 2>/dev/null
log "raw results in $raw"
"$py" "$here/vit.py" probe --json >"$raw/probe.json" 2>"$raw/probe.err" || log "vit.py probe failed (see $raw/probe.err)"

if [[ $check == 1 ]]; then
  for i in "${!configs[@]}"; do
    tag="check__${names[$i]}"
    log "check: ${names[$i]}: vit.py's forward vs softlab predict"
    "$py" "$here/vit.py" check "${configs[$i]}" --softlab "$softlab" --threads "$threads" \
      >"$raw/$tag.json" 2>"$raw/$tag.err"
    echo $? >"$raw/$tag.rc"
    # Trained weights and the data set's own normalisation too, when the data set is here:
    # a 30-step run (a few seconds), then the same comparison on its checkpoint.
    tag="check__${names[$i]}__trained"
    if "$softlab" train "${configs[$i]}" --set train.max_steps=30 --set train.epochs=1 --set train.schedule.warmup_epochs=0 \
         --set train.max_eval_batches=1 --threads "$threads" --out "$raw/trained__${names[$i]}" \
         >"$raw/$tag.train.log" 2>&1; then
      log "check: ${names[$i]}: the same on a 30-step trained checkpoint"
      "$py" "$here/vit.py" check "$raw/trained__${names[$i]}/last.ckpt" --softlab "$softlab" \
        --threads "$threads" >"$raw/$tag.json" 2>"$raw/$tag.err"
      echo $? >"$raw/$tag.rc"
    else
      { grep -m1 -i 'error' "$raw/$tag.train.log" || grep -m1 -v '^\s*$' "$raw/$tag.train.log"; } | cut -c1-200 >"$raw/$tag.err"
      echo skip >"$raw/$tag.rc"
      log "check: ${names[$i]}: no trained checkpoint ($(cat "$raw/$tag.err"))"
    fi
  done
fi

# One measurement: stdout (JSON), stderr and the exit status under $raw.
measure() {
  local r=$1 i=$2 impl=$3 prec=$4 mode=$5
  local cfg=${configs[$i]} tag="r${r}__${names[$i]}__${impl}-${prec}__${mode}"
  local cmd
  if [[ $impl == pytorch ]]; then
    cmd=("$py" "$here/vit.py" bench "$cfg" --mode "$mode" --precision "$prec" --threads "$threads"
         --steps "$steps" --warmup "$warmup" --omp-wait "$omp" --json)
  else
    cmd=("$softlab" bench "$cfg" --mode "$mode" --threads "$threads" --steps "$steps" --warmup "$warmup" --json)
    [[ $prec == bf16 ]] && cmd+=(--set train.precision=bf16)
  fi
  log "round $r/$rounds ${names[$i]} $mode: $impl $prec (load $(cut -d' ' -f1 /proc/loadavg))"
  "${cmd[@]}" >"$raw/$tag.json" 2>"$raw/$tag.err"
  local rc=$?
  echo "$rc" >"$raw/$tag.rc"
  [[ $rc == 0 ]] || log "  exit $rc: $(grep -v '^\s*$' "$raw/$tag.err" | tail -n 1)"
}

# Interleaved: every round measures each (config, mode) for all four variants back to back;
# even rounds run the variants in the reverse order, so neither side always goes first.
order=("pytorch fp32" "softlab fp32" "pytorch bf16" "softlab bf16")
for ((r = 1; r <= rounds; r++)); do
  for i in "${!configs[@]}"; do
    for mode in train infer; do
      if ((r % 2 == 1)); then seq=(0 1 2 3); else seq=(3 2 1 0); fi
      for k in "${seq[@]}"; do
        # shellcheck disable=SC2086
        measure "$r" "$i" ${order[$k]} "$mode"
      done
    done
  done
done
cat /proc/loadavg >"$raw/load_end" 2>/dev/null

if [[ -n $out ]]; then
  "$py" "$here/report.py" "$raw" --out "$out" || exit 1
  echo
  log "report written to $out (raw results: $raw)"
else
  "$py" "$here/report.py" "$raw" || exit 1
  echo
  log "raw results kept in $raw"
fi
