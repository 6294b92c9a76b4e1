// Inverted dropout and drop path (stochastic depth), with masks drawn from an explicit
// generator.
#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"
#include "softlab/random.hpp"

namespace softlab {

namespace {
struct DropoutNode final : Node {
  std::vector<float> mask;  // 0 or 1/(1-p)
  const char* name() const override { return "dropout"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx = empty(g.shape());
    float* d = dx.mutable_data();
    const float* pg = g.data();
    for (int64_t i = 0; i < g.numel(); ++i) d[i] = pg[i] * mask[static_cast<size_t>(i)];
    return {dx};
  }
};
}  // namespace

Tensor dropout(const Tensor& x, float p, Generator& gen) {
  detail::check_defined(x, "dropout", "x");
  SOFTLAB_CHECK(p >= 0.0f && p < 1.0f, "dropout: p must be in [0, 1), got ", p);
  if (p == 0.0f) return x;
  const int64_t n = x.numel();
  std::vector<float> mask(static_cast<size_t>(n));
  const float keep = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < n; ++i) mask[static_cast<size_t>(i)] = gen.uniform() < p ? 0.0f : keep;  // serial: reproducible
  Tensor y = empty(x.shape());
  float* py = y.mutable_data();
  const float* px = x.data();
  parallel_for(0, n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) py[i] = px[i] * mask[static_cast<size_t>(i)];
  });
  if (needs_grad({&x})) {
    auto node = std::make_shared<DropoutNode>();
    node->mask = std::move(mask);
    attach(y, node, {&x});
  }
  return y;
}

// Drop path (Huang et al. 2016, "Deep Networks with Stochastic Depth"; timm's drop_path):
// one draw per example, so a residual branch is either dropped for the whole example or
// kept and scaled by 1/(1-p). The mask is a [B, 1, ..., 1] constant and mul broadcasts it,
// so the backward is mul's: the gradient is masked and scaled the same way.
Tensor drop_path(const Tensor& x, float p, Generator& gen) {
  detail::check_defined(x, "drop_path", "x");
  SOFTLAB_CHECK(p >= 0.0f && p < 1.0f, "drop_path: p must be in [0, 1), got ", p);
  SOFTLAB_CHECK(x.rank() >= 1, "drop_path: x must have a batch dimension, got shape ", x.shape());
  if (p == 0.0f) return x;
  std::vector<int64_t> ms(static_cast<size_t>(x.rank()), 1);
  ms[0] = x.shape()[0];
  Tensor mask = empty(Shape(ms));
  float* m = mask.mutable_data();
  const float keep = 1.0f / (1.0f - p);
  for (int64_t b = 0; b < ms[0]; ++b) m[b] = gen.uniform() < p ? 0.0f : keep;
  return mul(x, mask);
}

}  // namespace softlab
