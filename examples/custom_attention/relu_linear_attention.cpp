// "relu_linear": linear attention with a ReLU feature map,
//   o_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i) . sum_j phi(k_j) + eps),  phi = relu
// (the ReLU kernel of linear-attention ablations, e.g. Qin et al., "cosFormer", ICLR 2022).
//
// Composed from softlab's differentiable ops, so autograd gives the backward: no kernel
// code. Cost O(N Dh Dv) per head: phi(K)^T V is formed first. Bidirectional only (a causal
// form needs prefix sums), so the entry claims no causal capability and has no "causal" key.
#include <softlab/ops.hpp>

#include "modules.hpp"

namespace {

class ReluLinearAttention final : public softlab::Attention {
 public:
  explicit ReluLinearAttention(float eps) : eps_(eps) {}
  softlab::Tensor forward(const softlab::Tensor& q, const softlab::Tensor& k, const softlab::Tensor& v) override {
    using namespace softlab;
    const Tensor fq = relu(q), fk = relu(k);                        // [B, H, N, Dh]
    const Tensor kv = matmul(fk, v, /*trans_a=*/true);              // [B, H, Dh, Dv]
    const Tensor num = matmul(fq, kv);                              // [B, H, N, Dv]
    const Tensor ksum = sum(fk, 2, /*keepdim=*/true);               // [B, H, 1, Dh]
    const Tensor den = matmul(fq, ksum, false, /*trans_b=*/true);   // [B, H, N, 1]
    return div(num, add_scalar(den, eps_));
  }

 private:
  float eps_;
};

}  // namespace

softlab::AttentionEntry relu_linear_attention_entry() {
  softlab::AttentionEntry e;
  e.name = "relu_linear";
  e.help = "linear attention with a ReLU feature map, phi(q)^T (phi(K)^T V) / (phi(q) . sum phi(k) + eps)";
  e.schema = {{.name = "eps", .type = softlab::ParamType::Float, .default_value = 1e-6, .min = 0.0,
               .min_exclusive = true, .help = "added to the normaliser (a query with no positive feature)"}};
  e.factory = [](const softlab::json& p, const softlab::AttentionContext&) -> std::unique_ptr<softlab::Attention> {
    return std::make_unique<ReluLinearAttention>(p["eps"].get<float>());
  };
  return e;
}
