#pragma once
// Helpers shared by the linear-complexity attention kernels (linear.cpp, mala.cpp): the
// feature map phi = elu + 1 and its derivative, the q/k/v shape check, and the per-(b, h)
// parallel loop. Not part of the public API.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/tensor.hpp"

namespace softlab::detail {

// phi(x) = elu(x) + 1, computed as x + 1 for x > 0 and exp(x) otherwise: elu(x) + 1 =
// (e^x - 1) + 1 would cancel for x << 0 (spec/attention.md 3, numerics). phi > 0 always.
// Evaluated in double, as every quantity the kernels accumulate.
inline double elu1(float x) { return x > 0.0f ? static_cast<double>(x) + 1.0 : std::exp(static_cast<double>(x)); }
// phi'(x) = 1 for x > 0, e^x otherwise (so phi'(x) = phi(x) for x <= 0).
inline double elu1_grad(float x) { return x > 0.0f ? 1.0 : std::exp(static_cast<double>(x)); }

// phi of one row of n features into out[0, n).
inline void elu1_row(const float* x, double* out, int64_t n) {
  for (int64_t d = 0; d < n; ++d) out[d] = elu1(x[d]);
}

// The sizes of per-head q, k [B, H, N, Dh] and v [B, H, N, Dv].
struct HeadDims {
  int64_t B = 0, H = 0, N = 0, Dh = 0, Dv = 0;
  int64_t heads() const { return B * H; }  // independent (b, h) problems
};

// Checks that q, k, v are per-head tensors of one attention call; names all three shapes.
inline HeadDims check_qkv(const char* module, const Tensor& q, const Tensor& k, const Tensor& v) {
  SOFTLAB_CHECK(q.defined() && k.defined() && v.defined(), module, " attention: q, k and v must be defined tensors");
  SOFTLAB_CHECK(q.rank() == 4 && k.shape() == q.shape() && v.rank() == 4 && v.shape()[0] == q.shape()[0] &&
                    v.shape()[1] == q.shape()[1] && v.shape()[2] == q.shape()[2],
                module, " attention: q and k must be [B, H, N, Dh] and v [B, H, N, Dv] with the same B, H, N; got q ",
                q.shape(), ", k ", k.shape(), ", v ", v.shape());
  return {q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3], v.shape()[3]};
}

// Calls f(bh, scratch) for every (b, h) in [0, B*H), in parallel: one thread slot per
// contiguous range of heads, each slot owning `scratch_doubles` doubles of scratch that its
// heads reuse (the kernels reset what they read). The scratch is one tensor, so
// tensor_memory() (the inference-memory tests) sees it; it is allocated as floats, two per
// double (Storage is 64-byte aligned, and every slot starts at a multiple of 8 bytes).
template <class F>
void for_each_head(int64_t heads, int64_t scratch_doubles, const F& f) {
  if (heads <= 0) return;
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(heads, num_threads()));
  Tensor scratch = empty({slots, 2 * scratch_doubles});
  float* base = scratch.mutable_data();
  parallel_for(0, slots, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      double* mine = reinterpret_cast<double*>(base + t * 2 * scratch_doubles);
      for (int64_t bh = heads * t / slots; bh < heads * (t + 1) / slots; ++bh) f(bh, mine);
    }
  });
}

}  // namespace softlab::detail
