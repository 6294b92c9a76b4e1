// L2 normalisation of rows (the last axis), fused: the forward keeps x_hat and each row's
// divisor, the backward projects the incoming gradient off x_hat.
#include <cmath>

#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
struct L2NormalizeNode final : Node {
  Saved y;                   // x_hat (the output)
  std::vector<float> div;    // max(||x||, eps) per row
  std::vector<uint8_t> clamped;
  const char* name() const override { return "l2_normalize"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& Y = y.get();
    const int64_t D = Y.shape()[-1], R = D ? Y.numel() / D : 0;
    Tensor dx = empty(Y.shape());
    const float *py = Y.data(), *pg = g.data();
    float* d = dx.mutable_data();
    parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* yr = py + r * D;
        const float* gr = pg + r * D;
        double dot = 0.0;
        if (!clamped[static_cast<size_t>(r)])
          for (int64_t j = 0; j < D; ++j) dot += double{yr[j]} * gr[j];
        const float inv = 1.0f / div[static_cast<size_t>(r)];
        for (int64_t j = 0; j < D; ++j) d[r * D + j] = (gr[j] - yr[j] * static_cast<float>(dot)) * inv;
      }
    });
    return {dx};
  }
};
}  // namespace

Tensor l2_normalize(const Tensor& x, float eps) {
  detail::check_defined(x, "l2_normalize", "x");
  SOFTLAB_CHECK(x.rank() >= 1, "l2_normalize: expected at least one axis, got shape ", x.shape());
  SOFTLAB_CHECK(eps > 0.0f, "l2_normalize: eps must be > 0, got ", eps);
  const int64_t D = x.shape()[-1], R = D ? x.numel() / D : 0;
  Tensor y = empty(x.shape());
  std::vector<float> div(static_cast<size_t>(R));
  std::vector<uint8_t> clamped(static_cast<size_t>(R));
  const float* px = x.data();
  float* py = y.mutable_data();
  parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      double n2 = 0.0;
      for (int64_t j = 0; j < D; ++j) n2 += double{px[r * D + j]} * px[r * D + j];
      const double n = std::sqrt(n2);
      clamped[static_cast<size_t>(r)] = n < eps;
      const float dv = static_cast<float>(std::max(n, double{eps}));
      div[static_cast<size_t>(r)] = dv;
      for (int64_t j = 0; j < D; ++j) py[r * D + j] = px[r * D + j] / dv;
    }
  });
  if (needs_grad({&x})) {
    auto node = std::make_shared<L2NormalizeNode>();
    node->y = Saved(y);
    node->div = std::move(div);
    node->clamped = std::move(clamped);
    attach(y, node, {&x});
  }
  return y;
}

}  // namespace softlab
