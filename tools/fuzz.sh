#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang (ASan + UBSan, in build-fuzz/) and
# runs each for SECONDS on a copy of its seed corpus, two or more at a time.
#   tools/fuzz.sh [SECONDS] [TARGET...]     SECONDS defaults to 30; TARGETs default to all
# Exits non-zero when any harness finds a crash, a leak, an out-of-memory or a timeout, and
# says which harness and where the input that caused it was saved. Nothing is written to
# the source tree: corpora, logs and findings go to a work directory under the build
# directory (SOFTLAB_FUZZ_BUILD_DIR, default build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)

seconds=${1:-30}
[ $# -gt 0 ] && shift
case "$seconds" in
  ''|*[!0-9]*) echo "fuzz: SECONDS must be a whole number, found '$seconds'" >&2; exit 2 ;;
esac

# The longest input each harness tries: a little above its largest valid seed, so the
# fuzzer can grow inputs without spending its time on megabytes of padding.
declare -A max_len=([config]=4096 [set]=1024 [idx]=4096 [cifar]=8192 [image]=8192 [checkpoint]=16384 [sweep]=4096)
all=(config set idx cifar image checkpoint sweep)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { echo "fuzz: unknown target '$t' (targets: ${all[*]})" >&2; exit 2; }
  [ -d "tests/fuzz/corpus/$t" ] || { echo "fuzz: no seed corpus tests/fuzz/corpus/$t" >&2; exit 2; }
done

bash tools/setup.sh --fuzz

build=${SOFTLAB_FUZZ_BUILD_DIR:-build-fuzz}
jobs=$(nproc 2>/dev/null || echo 2)
start=$(date +%s)
# Only the library and the harnesses, plus the command's sources compiled one by one but
# not linked (softlab_cli_objects, tests/fuzz/CMakeLists.txt): no tests, no benchmarks. The
# compiler is chosen when the directory is first configured (naming it again would make
# CMake start the directory afresh).
compiler=()
[ -f "$build/CMakeCache.txt" ] || compiler=(-DCMAKE_CXX_COMPILER=clang++)
cmake -S . -B "$build" "${compiler[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOFTLAB_FUZZ=ON \
  -DSOFTLAB_BUILD_TESTS=OFF -DSOFTLAB_BUILD_BENCH=OFF -DSOFTLAB_WITH_MPI=OFF >/dev/null
cmake --build "$build" --target softlab_fuzzers softlab_cli_objects -j "$jobs"
built=$(date +%s)
echo "fuzz: built in $((built - start)) s"

build=$(cd "$build" && pwd)
work="$build/fuzz-work"
rm -rf "$work"
mkdir -p "$work"

# Leaks are checked after every input (libFuzzer's -detect_leaks); the check at exit would
# also report what oneDNN and the OpenMP runtime keep for the life of the process.
export ASAN_OPTIONS=${ASAN_OPTIONS:-leak_check_at_exit=0:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

run_one() {
  local t=$1 dir="$work/$1"
  mkdir -p "$dir/corpus" "$dir/findings"
  cp -r "$src/tests/fuzz/corpus/$t/." "$dir/corpus/"
  # The working directory is the target's own: readers that resolve relative paths (a
  # sweep's base, say) look there and not in the checkout.
  (cd "$dir" && "$build/tests/fuzz/fuzz_$t" corpus -max_total_time="$seconds" -rss_limit_mb=1024 \
    -max_len="${max_len[$t]}" -timeout=10 -artifact_prefix="$dir/findings/" -print_final_stats=1 \
    >"$dir/log.txt" 2>&1)
}

declare -A pid_of
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "fuzz: $t for $seconds s"
  run_one "$t" &
  pid_of[$t]=$!
done

failed=()
for t in "${targets[@]}"; do
  rc=0
  wait "${pid_of[$t]}" || rc=$?
  dir="$work/$t"
  found=$(find "$dir/findings" -type f | sort)
  if [ $rc -eq 0 ] && [ -z "$found" ]; then
    echo "fuzz: $t: ok ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log.txt" | grep -o '[0-9]*$' || echo '?') inputs)"
    continue
  fi
  failed+=("$t")
  echo "fuzz: $t: FAILED (exit code $rc); log: $dir/log.txt"
  grep -m3 -E 'FINDING|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' "$dir/log.txt" | sed 's/^/  /' || true
  for f in $found; do
    echo "  input saved as $f"
    echo "  reproduce: $build/tests/fuzz/fuzz_$t $f"
  done
done

echo "fuzz: done in $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}; minimise with -minimize_crash=1, then add the input to tests/fuzz/regressions/<target>/" >&2
  exit 1
fi
