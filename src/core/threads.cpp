// Thread count and the OpenMP runner behind parallel_for.
#include <omp.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "softlab/parallel.hpp"

namespace softlab {

namespace {
int g_threads = 0;  // 0: not set yet, use the default

// Physical cores: distinct (physical id, core id) pairs in /proc/cpuinfo; falls back to
// the logical CPU count. Hyper-threads share an FMA unit, so they do not help GEMMs.
int count_physical_cores() {
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<int, int>> cores;
  int phys = 0, core = -1;
  std::string line;
  while (std::getline(in, line)) {
    auto value = [&]() { return std::stoi(line.substr(line.find(':') + 1)); };
    if (line.rfind("physical id", 0) == 0) phys = value();
    else if (line.rfind("core id", 0) == 0) core = value();
    else if (line.empty() && core >= 0) {
      cores.insert({phys, core});
      core = -1;
    }
  }
  if (core >= 0) cores.insert({phys, core});
  const long logical = sysconf(_SC_NPROCESSORS_ONLN);
  if (cores.empty()) return logical > 0 ? static_cast<int>(logical) : 1;
  return static_cast<int>(cores.size());
}
}  // namespace

int default_num_threads() {
  static const int n = count_physical_cores();
  return n;
}

void set_num_threads(int n) {
  g_threads = n <= 0 ? default_num_threads() : n;
  omp_set_num_threads(g_threads);  // oneDNN (OpenMP runtime) follows this too
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

bool in_parallel_region() { return omp_in_parallel() != 0; }

namespace detail {
void parallel_run(int64_t n_chunks, void (*fn)(void*, int64_t), void* ctx) {
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(n_chunks))
  for (int64_t c = 0; c < n_chunks; ++c) fn(ctx, c);
}
}  // namespace detail

}  // namespace softlab
