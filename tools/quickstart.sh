#!/usr/bin/env bash
# Install, build, and run softlab's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DSOFTLAB_BUILD_TESTS=OFF -DSOFTLAB_BUILD_BENCH=OFF >/dev/null
cmake --build build-release -j "$(nproc 2>/dev/null || echo 2)" --target softlab_cli
./build-release/softlab info
