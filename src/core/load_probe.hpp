#pragma once
// How busy the machine is with work that was there before this process: the start-up probe
// behind the softlab command's choice of OpenMP wait policy (src/cli/openmp_env.cpp).
//
// The CPU time of every process that started less than `young_seconds` before this one
// (the other end of a pipe, a shell's `$(...)`, a sibling of a sweep, this process itself)
// is taken out of the machine's busy time over the window, so a process starting alongside
// cannot make a quiet machine look busy. Processes this PID namespace cannot see (another
// container) still count: the busy time comes from /proc/stat, which sees them all.
#include <chrono>

namespace softlab::detail {

struct LoadSample {
  bool ok = false;            // false: /proc could not be read
  double other_cores = 0.0;   // busy cores, less the young processes
  double young_cores = 0.0;   // what the young processes (this one included) used
};

LoadSample sample_other_load(std::chrono::milliseconds window, double young_seconds = 1.0);

}  // namespace softlab::detail
