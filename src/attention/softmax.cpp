// softmax: scaled dot-product attention (Vaswani et al. 2017), O = softmax(s Q K^T + M) V.
// Composed from primitive ops here; the attention issue replaces it with a fused kernel.
#include <cmath>
#include <limits>

#include "softlab/attention.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {
class SoftmaxAttention final : public Attention {
 public:
  SoftmaxAttention(float scale, bool causal) : scale_(scale), causal_(causal) {}
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) override {
    SOFTLAB_CHECK(q.rank() == 4 && q.shape() == k.shape() && q.shape()[-2] == v.shape()[-2],
                  "softmax attention: q, k, v must be [B, H, N, Dh] with equal N, got q ", q.shape(), ", k ",
                  k.shape(), ", v ", v.shape());
    const int64_t n = q.shape()[2];
    const float s = scale_ > 0 ? scale_ : 1.0f / std::sqrt(static_cast<float>(q.shape()[3]));
    Tensor logits = scale(matmul(q, k, false, true), s);
    if (causal_) logits = add(logits, causal_mask(n));
    return matmul(softmax(logits), v);
  }

 private:
  // [N, N]: 0 where key j <= query i, -inf above the diagonal.
  Tensor causal_mask(int64_t n) {
    if (mask_.defined() && mask_.shape()[0] == n) return mask_;
    mask_ = zeros({n, n});
    float* m = mask_.mutable_data();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) m[i * n + j] = -std::numeric_limits<float>::infinity();
    return mask_;
  }
  float scale_;
  bool causal_;
  Tensor mask_;
};
}  // namespace

AttentionEntry softmax_attention_entry() {
  AttentionEntry e;
  e.name = "softmax";
  e.help = "scaled dot-product attention, softmax(s QK^T) V (Vaswani et al. 2017)";
  e.schema = {
      {.name = "scale", .type = ParamType::Float, .default_value = nullptr, .min = 0.0, .min_exclusive = true,
       .help = "logit scale s; null means Dh^-1/2", .nullable = true},
      {.name = "causal", .type = ParamType::Bool, .default_value = false, .help = "query i sees keys 0..i only"},
  };
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    const float s = p["scale"].is_null() ? 0.0f : p["scale"].get<float>();
    return std::make_unique<SoftmaxAttention>(s, p["causal"].get<bool>());
  };
  return e;
}

}  // namespace softlab
