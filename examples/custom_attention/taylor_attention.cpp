// "taylor": softmax with exp replaced by its second-order Taylor expansion,
//   f(x) = 1 + x + x^2/2,   p_ij = f(x_ij) / sum_j f(x_ij),   x_ij = s q_i.k_j
// (de Brebisson and Vincent, "An Exploration of Softmax Alternatives Belonging to the
// Spherical Loss Family", ICLR 2016). f >= 1/2 everywhere, so rows normalise without a max.
//
// A row map: softlab's fused row kernel does the tiling, threads, causal rows, bf16 and the
// recomputing backward; this file supplies one row's map and its derivative.
#include <softlab/row_attention.hpp>

#include "modules.hpp"

namespace {

struct TaylorMap final : softlab::RowMap {
  void forward(const float* x, float* p, int64_t n) const override {
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      p[j] = 1.0f + x[j] + 0.5f * x[j] * x[j];
      sum += p[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) p[j] *= inv;
  }
  // p_j = f(x_j) / S: dx_j = f'(x_j) (dp_j - d) / S with f' = 1 + x and d = sum_j p_j dp_j.
  // S is recovered from any one weight: S = f(x_0) / p_0.
  void backward(const float* x, const float* p, const float* dp, float d, float* dx, int64_t n) const override {
    const float inv_sum = p[0] / (1.0f + x[0] + 0.5f * x[0] * x[0]);
    for (int64_t j = 0; j < n; ++j) dx[j] = (1.0f + x[j]) * (dp[j] - d) * inv_sum;
  }
};

}  // namespace

softlab::AttentionEntry taylor_attention_entry() {
  softlab::AttentionEntry e;
  e.name = "taylor";
  e.help = "second-order Taylor softmax, (1 + x + x^2/2) normalised per row (de Brebisson and Vincent 2016)";
  e.caps = {.causal = true};
  e.schema = {softlab::attention_scale_param(), softlab::attention_causal_param()};
  e.factory = [](const softlab::json& p, const softlab::AttentionContext&) {
    return softlab::make_row_attention("taylor_attention", softlab::attention_scale(p), p["causal"].get<bool>(),
                                       std::make_shared<TaylorMap>());
  };
  return e;
}
