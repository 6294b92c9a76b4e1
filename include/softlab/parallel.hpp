#pragma once
// Threading. OpenMP underneath; softlab code parallelises its outer independent loop
// through parallel_for with a grain size, partitions writes by output index and reduces
// in a fixed order, so results do not depend on scheduling.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace softlab {

// Threads used by softlab kernels and oneDNN. n <= 0 means the default.
void set_num_threads(int n);
int num_threads();
// The default: OMP_NUM_THREADS when it names a count; otherwise the physical cores among
// the CPUs this process may run on (sched_getaffinity), capped by a cgroup CPU quota
// (rounded down, at least 1). Read once per process.
int default_num_threads();
std::string default_threads_reason();  // e.g. "physical cores in the affinity mask (2 CPUs)"
bool in_parallel_region();

// What default_num_threads() decides from, so the rule can be tested on any machine.
struct ThreadInputs {
  std::string cpuinfo;                         // /proc/cpuinfo text
  std::vector<int> allowed_cpus;               // the affinity mask; empty: unknown (all)
  std::optional<double> cgroup_quota;          // CPUs per period; nullopt: no quota
  std::optional<std::string> omp_num_threads;  // the variable's text, when set
};
struct ThreadDefault {
  int threads = 1;
  std::string reason;
};
ThreadDefault choose_default_threads(const ThreadInputs& in);

namespace detail {
void parallel_run(int64_t n_chunks, void (*fn)(void*, int64_t), void* ctx);
}

// Calls f(b, e) on disjoint ranges that cover [begin, end). Each range holds at least
// `grain` items (except a short last one); ranges are a fixed partition of the interval
// for a given thread count, so work assignment is deterministic.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  const int64_t g = std::max<int64_t>(grain, 1);
  const int64_t max_chunks = (n + g - 1) / g;
  const int64_t chunks = std::min<int64_t>(max_chunks, num_threads());
  if (chunks <= 1 || in_parallel_region()) {
    f(begin, end);
    return;
  }
  struct Ctx {
    const F* f;
    int64_t begin, n, chunks;
  } ctx{&f, begin, n, chunks};
  detail::parallel_run(
      chunks,
      [](void* p, int64_t c) {
        auto* x = static_cast<Ctx*>(p);
        const int64_t b = x->begin + x->n * c / x->chunks;
        const int64_t e = x->begin + x->n * (c + 1) / x->chunks;
        if (b < e) (*x->f)(b, e);
      },
      &ctx);
}

}  // namespace softlab
