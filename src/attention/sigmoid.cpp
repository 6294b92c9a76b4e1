// sigmoid: sigmoid self-attention (Ramapuram et al. 2024, "Theory, Analysis, and Best
// Practices for Sigmoid Self-Attention", docs/attention.md),
//   P_ij = σ(s q_i·k_j + b),  O = P V,
// with no row normalisation: every weight is independent (FlashSigmoid's observation), so
// backward needs no row statistic, dS = P ∘ (1 − P) ∘ dP. The bias defaults to
// b = −log(n) with n the training sequence length, the paper's recommendation; it is a
// fixed constant as in the released code, not a parameter. QK-norm and LayerScale, which
// the paper's configs pair with it, are block options (model.qk_norm, model.layer_scale).
#include <cmath>

#include "attention/kernels.hpp"
#include "attention/reference_ops.hpp"
#include "attention/row_kernel.hpp"
#include "ops/fast_math.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

struct SigmoidMap {
  float bias = 0.0f;
  void forward(const float* x, float* p, int64_t n) const {
    // 1 / (1 + e^-u): fast_exp saturates instead of overflowing, so no branch is needed
    // for u << 0 and the loop vectorises.
    for (int64_t j = 0; j < n; ++j) p[j] = 1.0f / (1.0f + detail::fast_exp(-(x[j] + bias)));
  }
  void backward(const float*, const float* p, const float* dp, float, float* dx, int64_t n) const {
    for (int64_t j = 0; j < n; ++j) dx[j] = p[j] * (1.0f - p[j]) * dp[j];
  }
};

// The bias b from validated params: the number given, or -log of the training length.
float configured_bias(const json& p, const AttentionContext& ctx) {
  if (!p["bias"].is_null()) return p["bias"].get<float>();
  SOFTLAB_CHECK(ctx.seq_len > 0, "model.attention.bias: null means -log(sequence length), but this model has "
                                 "no fixed sequence length; give a number");
  return -std::log(static_cast<float>(ctx.seq_len));
}

}  // namespace

AttentionEntry sigmoid_attention_entry() {
  AttentionEntry e;
  e.name = "sigmoid";
  e.help = "sigmoid attention, sigmoid(s QK^T + b) V without normalisation (Ramapuram et al. 2024)";
  e.caps = {.causal = true, .padding = true};
  e.schema = {
      scale_param(),
      {.name = "bias", .type = ParamType::Float, .default_value = nullptr,
       .help = "logit bias b; null means -log(n), n the training sequence length", .nullable = true},
      causal_param(),
  };
  e.factory = [](const json& p, const AttentionContext& ctx) -> std::unique_ptr<Attention> {
    return attention_kernel::row_map_attention("sigmoid_attention", configured_scale(p), p["causal"].get<bool>(),
                                               SigmoidMap{configured_bias(p, ctx)});
  };
  e.reference = [](Attention&, const json& p, const AttentionContext& ctx, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const Tensor w = sigmoid(add_scalar(attention_ref::logits(p, q, k), configured_bias(p, ctx)));
    return matmul(mul(w, attention_ref::visibility(q.shape()[2], p["causal"].get<bool>())), v);
  };
  e.golden = {
      "sigmoid_bidir_n1",
      "sigmoid_bidir_n7",
      "sigmoid_bidir_n7_train50",
      "sigmoid_causal_n7",
      "sigmoid_causal_n7_bias",
  };
  return e;
}

}  // namespace softlab
