// relu: ReLU attention with sequence-length scaling (Wortsman et al. 2023, "Replacing
// softmax with ReLU in Vision Transformers", docs/attention.md),
//   o_i = (1/n_i) Σ_j relu(s q_i·k_j) v_j,
// n_i the keys query i sees. No normaliser: the 1/n_i factor is what the paper finds
// essential. The subgradient at 0 is taken as 0.
#include "attention/kernels.hpp"
#include "attention/reference_ops.hpp"
#include "attention/row_kernel.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

struct ReluMap {
  void forward(const float* x, float* p, int64_t n) const {
    const float inv = 1.0f / static_cast<float>(n);
    for (int64_t j = 0; j < n; ++j) p[j] = std::max(x[j], 0.0f) * inv;
  }
  void backward(const float* x, const float*, const float* dp, float, float* dx, int64_t n) const {
    const float inv = 1.0f / static_cast<float>(n);
    for (int64_t j = 0; j < n; ++j) dx[j] = x[j] > 0.0f ? dp[j] * inv : 0.0f;
  }
};

}  // namespace

AttentionEntry relu_attention_entry() {
  AttentionEntry e;
  e.name = "relu";
  e.help = "ReLU attention scaled by the number of keys, relu(s QK^T) V / n (Wortsman et al. 2023)";
  e.caps = {.causal = true, .padding = true};
  e.schema = {scale_param(), causal_param()};
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    return attention_kernel::row_map_attention("relu_attention", configured_scale(p), p["causal"].get<bool>(),
                                               ReluMap{});
  };
  e.reference = [](Attention&, const json& p, const AttentionContext&, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const int64_t n = q.shape()[2];
    const bool causal = p["causal"].get<bool>();
    const Tensor w = mul(relu(attention_ref::logits(p, q, k)), attention_ref::visibility(n, causal));
    return matmul(div(w, attention_ref::visible_counts(n, causal)), v);
  };
  e.golden = {
      "relu_bidir_n7",
      "relu_causal_n7",
  };
  return e;
}

}  // namespace softlab
