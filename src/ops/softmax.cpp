// softmax and log-softmax over the last axis: fused, max-subtracted, hand-written backward.
// The row sums are `omp simd` reductions (one partial sum per vector lane, added at the end
// in an order fixed by the compiled code): GCC keeps a plain float sum scalar because it
// may not reorder the additions. The max stays a plain loop (NaN handling as written).
#include <cmath>
#include <limits>

#include "ops/fast_math.hpp"
#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
constexpr int64_t kSoftmaxRowGrain = 64;

// Per row: m = max x, l = sum exp(x - m). Rows of -inf only (fully masked) give zeros
// for softmax and -inf for log-softmax instead of NaN.
template <bool kLog>
void softmax_rows(const float* x, float* y, int64_t rows, int64_t n) {
  parallel_for(0, rows, kSoftmaxRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j]);
      if (m == -std::numeric_limits<float>::infinity()) {
        for (int64_t j = 0; j < n; ++j) yr[j] = kLog ? -std::numeric_limits<float>::infinity() : 0.0f;
        continue;
      }
      float l = 0.0f;
      if constexpr (kLog) {
#pragma omp simd reduction(+ : l)
        for (int64_t j = 0; j < n; ++j) l += detail::fast_exp(xr[j] - m);
        const float lse = m + std::log(l);
        for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] - lse;
      } else {
#pragma omp simd reduction(+ : l)
        for (int64_t j = 0; j < n; ++j) {
          yr[j] = detail::fast_exp(xr[j] - m);
          l += yr[j];
        }
        const float inv = 1.0f / l;
        for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
      }
    }
  });
}

template <bool kLog>
struct SoftmaxNode final : Node {
  Saved y;
  const char* name() const override { return kLog ? "log_softmax" : "softmax"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& Y = y.get();
    const int64_t n = Y.shape()[-1];
    const int64_t rows = n ? Y.numel() / n : 0;
    Tensor dx = empty(Y.shape());
    float* d = dx.mutable_data();
    const float* py = Y.data();
    const float* pg = g.data();
    parallel_for(0, rows, kSoftmaxRowGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* yr = py + r * n;
        const float* gr = pg + r * n;
        float* dr = d + r * n;
        float s = 0.0f;
        if constexpr (kLog) {
          // y = x - lse: dx = g - softmax * sum(g)
#pragma omp simd reduction(+ : s)
          for (int64_t j = 0; j < n; ++j) s += gr[j];
          for (int64_t j = 0; j < n; ++j) dr[j] = gr[j] - std::exp(yr[j]) * s;
        } else {
          // dx = y * (g - <g, y>)
#pragma omp simd reduction(+ : s)
          for (int64_t j = 0; j < n; ++j) s += gr[j] * yr[j];
          for (int64_t j = 0; j < n; ++j) dr[j] = yr[j] * (gr[j] - s);
        }
      }
    });
    return {dx};
  }
};

template <bool kLog>
Tensor softmax_op(const Tensor& x) {
  const char* op = kLog ? "log_softmax" : "softmax";
  detail::check_defined(x, op, "x");
  SOFTLAB_CHECK(x.rank() >= 1, op, ": needs at least one axis, got shape ", x.shape());
  const int64_t n = x.shape()[-1];
  Tensor y = empty(x.shape());
  softmax_rows<kLog>(x.data(), y.mutable_data(), n ? x.numel() / n : 0, n);
  if (needs_grad({&x})) {
    auto node = std::make_shared<SoftmaxNode<kLog>>();
    node->y = Saved(y);
    attach(y, node, {&x});
  }
  return y;
}
}  // namespace

Tensor softmax(const Tensor& x) { return softmax_op<false>(x); }
Tensor log_softmax(const Tensor& x) { return softmax_op<true>(x); }

}  // namespace softlab
