#pragma once
// Shared by the bench_*.cpp programs: thread selection, run context, random tensors.
//
// Threads: SOFTLAB_BENCH_THREADS, else OMP_NUM_THREADS, else softlab's default (physical
// cores). The count is applied through softlab::set_num_threads, which also sets OpenMP's,
// so softlab kernels, oneDNN primitives and dnnl_sgemm all run on the same count.
// (softlab's own default would otherwise override OMP_NUM_THREADS on its first call.)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "softlab/parallel.hpp"
#include "softlab/random.hpp"
#include "softlab/tensor.hpp"

namespace softlab_bench {

inline std::string read_first_line(const char* path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

inline int bench_threads() {
  for (const char* var : {"SOFTLAB_BENCH_THREADS", "OMP_NUM_THREADS"})
    if (const char* v = std::getenv(var); v && std::atoi(v) > 0) return std::atoi(v);
  return softlab::default_num_threads();
}

// Call at the start of main, before benchmark::Initialize.
inline void setup_run() {
  softlab::set_num_threads(bench_threads());
  benchmark::AddCustomContext("softlab_threads", std::to_string(softlab::num_threads()));
  benchmark::AddCustomContext("cpu_model", cpu_model());
  benchmark::AddCustomContext("loadavg_at_start", read_first_line("/proc/loadavg"));
  const char* wp = std::getenv("OMP_WAIT_POLICY");
  benchmark::AddCustomContext("OMP_WAIT_POLICY", wp ? wp : "(unset)");
}

// The fastest repetition: on a shared machine outside load only ever adds time, so the
// minimum is the least disturbed estimate. (Applied to rate counters too, where it is the
// slowest rate: bench/summarize.py derives rates from the minimum time instead.)
inline double min_of(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); }

inline softlab::Tensor rand_tensor(const softlab::Shape& s, uint64_t seed) {
  softlab::Generator gen(seed);
  return softlab::uniform(s, gen, -1.0f, 1.0f);
}

}  // namespace softlab_bench

#define SOFTLAB_BENCH_MAIN()                                             \
  int main(int argc, char** argv) {                                      \
    softlab_bench::setup_run();                                          \
    register_all();                                                      \
    benchmark::Initialize(&argc, argv);                                  \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;    \
    benchmark::RunSpecifiedBenchmarks();                                 \
    benchmark::Shutdown();                                               \
    return 0;                                                            \
  }
