#!/usr/bin/env bash
# Builds softlab and runs the whole test suite (the command the README gives).
#   tools/test.sh             RelWithDebInfo (optimised, assertions on) in build/
#   tools/test.sh --sanitize  AddressSanitizer + UndefinedBehaviorSanitizer in build-sanitize/
# Extra arguments after the options go to ctest (e.g. -R Gradcheck).
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=0
if [ "${1:-}" = "--sanitize" ]; then
  sanitize=1
  shift
fi

bash tools/setup.sh

jobs=$(nproc 2>/dev/null || echo 2)
if [ $sanitize -eq 1 ]; then
  build=build-sanitize
  # Without MPI: this build is also the proof that softlab without MPI passes everything (its
  # MPI tests skip); the MPI code is tested, under mpirun, by the plain build.
  # Unity batches as in the plain build: on a 2-core Zen 5 this sanitized build took 9 min
  # against about 15 file by file. tools/fuzz.sh compiles every source on its own.
  flags=(-DSOFTLAB_SANITIZE=ON -DSOFTLAB_WITH_MPI=OFF -DSOFTLAB_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
    -DSOFTLAB_UNITY=ON)
  # oneDNN and libgomp keep process-lifetime allocations that LeakSanitizer would report.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
else
  build=build
  # A unity build (CMakeLists.txt, SOFTLAB_UNITY) as tools/quickstart.sh makes it, MPI
  # included.
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOFTLAB_UNITY=ON)
fi

cmake -S . -B "$build" "${flags[@]}" >/dev/null
cmake --build "$build" -j "$jobs"
# Passive OpenMP waiting: CI machines are shared; spinning threads slow everything down.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
cd "$build"
ctest --output-on-failure -j "$jobs" "$@"
