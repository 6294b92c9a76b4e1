#pragma once
// Threading. OpenMP underneath; softlab code parallelises its outer independent loop
// through parallel_for with a grain size, partitions writes by output index and reduces
// in a fixed order, so results do not depend on scheduling.
#include <algorithm>
#include <cstdint>

namespace softlab {

// Threads used by softlab kernels and oneDNN. n <= 0 means the default (physical cores).
void set_num_threads(int n);
int num_threads();
int default_num_threads();  // physical cores, read from the machine
bool in_parallel_region();

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
