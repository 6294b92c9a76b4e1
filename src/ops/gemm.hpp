#pragma once
// The one place softlab calls oneDNN's matmul. Primitives are created once per shape
// and cached; a call builds only the memory objects around the caller's pointers.
#include <cstdint>
#include <vector>

namespace softlab::kernels {

struct GemmArgs {
  int64_t batch = 1;          // number of independent products
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false;       // A stored as [K, M] per batch
  bool trans_b = false;       // B stored as [N, K] per batch
  bool b_shared = false;      // one B for every batch (broadcast)
  bool accumulate = false;    // C += A B instead of C = A B
  const float* a = nullptr;   // [batch, M, K] (or [batch, K, M])
  const float* b = nullptr;   // [batch or 1, K, N] (or [.., N, K])
  const float* bias = nullptr;  // [N] or null, added to every row
  float* c = nullptr;         // [batch, M, N]
};

// In bf16 mode (softlab/precision.hpp) A and B are rounded to bfloat16 first and the
// product accumulates in f32; C, the bias and the sum post-op stay f32.
void gemm(const GemmArgs& args);

// Reference triple loop with double accumulation, for tests.
void gemm_reference(const GemmArgs& args);

// While a sink is set, every gemm() call appends its arguments to it (nullptr: off).
// `softlab bench` uses it to list the products of one training step. Not thread-safe:
// set it from the thread that runs the model.
void set_gemm_trace(std::vector<GemmArgs>* sink);

// Number of cached oneDNN primitives (tests: the cache is hit, not grown, per call).
int64_t gemm_cache_size();

}  // namespace softlab::kernels
