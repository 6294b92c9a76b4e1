// Cross-entropy from logits with integer labels, fused with its softmax.
#include <cmath>

#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
struct CrossEntropyNode final : Node {
  Tensor probs;  // softmax(logits), owned by this node only
  std::vector<int32_t> labels;
  float eps = 0.0f;
  const char* name() const override { return "cross_entropy"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const int64_t N = probs.shape()[0], C = probs.shape()[1];
    const float scale = g.item() / static_cast<float>(N);
    Tensor dx = empty(probs.shape());
    float* d = dx.mutable_data();
    const float* p = probs.data();
    const float off = eps / static_cast<float>(C);
    // dl/dz = p - q with q = (1 - eps) onehot + eps / C
    parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t c = 0; c < C; ++c) d[n * C + c] = scale * (p[n * C + c] - off);
        d[n * C + labels[static_cast<size_t>(n)]] -= scale * (1.0f - eps);
      }
    });
    return {dx};
  }
};
}  // namespace

Tensor cross_entropy(const Tensor& logits, std::span<const int32_t> labels, float label_smoothing) {
  detail::check_defined(logits, "cross_entropy", "logits");
  SOFTLAB_CHECK(logits.rank() == 2, "cross_entropy: logits must be [batch, classes], got shape ", logits.shape());
  const int64_t N = logits.shape()[0], C = logits.shape()[1];
  SOFTLAB_CHECK(static_cast<int64_t>(labels.size()) == N, "cross_entropy: ", labels.size(),
                " labels for logits of shape ", logits.shape());
  SOFTLAB_CHECK(N > 0 && C > 0, "cross_entropy: empty logits of shape ", logits.shape());
  SOFTLAB_CHECK(label_smoothing >= 0.0f && label_smoothing < 1.0f,
                "cross_entropy: label_smoothing must be in [0, 1), got ", label_smoothing);
  for (int64_t n = 0; n < N; ++n)
    SOFTLAB_CHECK(labels[static_cast<size_t>(n)] >= 0 && labels[static_cast<size_t>(n)] < C, "cross_entropy: label ",
                  labels[static_cast<size_t>(n)], " of example ", n, " is outside [0, ", C, ") for logits of shape ",
                  logits.shape());
  const bool grad = needs_grad({&logits});
  Tensor probs = grad ? empty(logits.shape()) : Tensor();
  std::vector<double> row_loss(static_cast<size_t>(N));
  const float* z = logits.data();
  float* p = grad ? probs.mutable_data() : nullptr;
  const float eps = label_smoothing;
  parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const float* zr = z + n * C;
      float m = zr[0];
      for (int64_t c = 1; c < C; ++c) m = std::max(m, zr[c]);
      float l = 0.0f, zsum = 0.0f;
      for (int64_t c = 0; c < C; ++c) {
        const float e = std::exp(zr[c] - m);
        if (p) p[n * C + c] = e;
        l += e;
        zsum += zr[c];
      }
      if (p)
        for (int64_t c = 0; c < C; ++c) p[n * C + c] /= l;
      const float lse = m + std::log(l);
      // l = LSE - (1 - eps) z_y - (eps / C) sum_k z_k
      row_loss[static_cast<size_t>(n)] = static_cast<double>(lse) - (1.0 - eps) * zr[labels[static_cast<size_t>(n)]] -
                                         (eps / static_cast<double>(C)) * zsum;
    }
  });
  double total = 0.0;
  for (double v : row_loss) total += v;  // fixed order
  Tensor out = scalar(static_cast<float>(total / static_cast<double>(N)));
  if (grad) {
    auto node = std::make_shared<CrossEntropyNode>();
    node->probs = probs;
    node->labels.assign(labels.begin(), labels.end());
    node->eps = eps;
    attach(out, node, {&logits});
  }
  return out;
}

}  // namespace softlab
