// softmax: scaled dot-product attention (Vaswani et al. 2017, docs/attention.md),
//   O = softmax(s Q Kᵀ + M) V,
// as one fused kernel (row_kernel.hpp): logits for a block of queries, the max-subtracted
// softmax of each row, and P V, without an N x N tensor. Backward recomputes P per row and
// uses dS = P ∘ (dP − d), d_i = dO_i·o_i.
#include "attention/kernels.hpp"
#include "attention/reference_ops.hpp"
#include "attention/row_kernel.hpp"
#include "ops/fast_math.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

struct SoftmaxMap {
  void forward(const float* x, float* p, int64_t n) const {
    const float m = attention_kernel::row_max(x, n);
    for (int64_t j = 0; j < n; ++j) p[j] = detail::fast_exp(x[j] - m);
    const float inv = 1.0f / attention_kernel::row_sum(p, n);  // >= 1: the maximal logit gives exp(0)
    for (int64_t j = 0; j < n; ++j) p[j] *= inv;
  }
  void backward(const float*, const float* p, const float* dp, float d, float* dx, int64_t n) const {
    for (int64_t j = 0; j < n; ++j) dx[j] = p[j] * (dp[j] - d);
  }
};

}  // namespace

Tensor softmax_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal) {
  return detail::fused_attention("softmax_attention", q, k, v,
                                 attention_kernel::RowOp<SoftmaxMap>{scale, causal, SoftmaxMap{}});
}

AttentionEntry softmax_attention_entry() {
  AttentionEntry e;
  e.name = "softmax";
  e.help = "scaled dot-product attention, softmax(s QK^T) V (Vaswani et al. 2017)";
  e.caps = {.causal = true, .padding = true};
  e.schema = {scale_param(), causal_param()};
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    return attention_kernel::row_map_attention("softmax_attention", configured_scale(p), p["causal"].get<bool>(),
                                               SoftmaxMap{});
  };
  e.reference = [](Attention&, const json& p, const AttentionContext&, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const Tensor mask = attention_ref::causal_mask(q.shape()[2], p["causal"].get<bool>());
    return matmul(softmax(add(attention_ref::logits(p, q, k), mask)), v);
  };
  e.golden = {
      "softmax_bidir_n1",
      "softmax_bidir_n7",
      "softmax_causal_n13_d8",
      "softmax_causal_n7",
  };
  return e;
}

}  // namespace softlab
