#!/usr/bin/env bash
# Install, build, and run softlab's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSOFTLAB_BUILD_TESTS=OFF -DSOFTLAB_BUILD_BENCH=OFF >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target softlab_cli
./build/softlab info
