// power: Power-Softmax (Zimerman et al. 2024, "Power-Softmax: Towards Secure LLM Inference
// over Encrypted Data", docs/attention.md),
//   z_ij = s q_i·k_j,  a_ij = z_ij^p / (Σ_j z_ij^p + eps),  O = A V,
// p a positive even integer, so weights are non-negative and the map is a polynomial.
// Each row is divided by its largest |z| before the power (exact: the ratio is
// homogeneous of degree 0, with eps rescaled to match), so z^p cannot overflow.
#include <cmath>

#include "attention/kernels.hpp"
#include "attention/reference_ops.hpp"
#include "attention/row_kernel.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

inline float ipow(float x, int p) {
  float r = 1.0f;
  for (int e = 0; e < p; ++e) r *= x;
  return r;
}

struct PowerMap {
  int power = 2;
  float eps = 0.0f;

  // Row scale m = max|z| and the denominator Σ (z/m)^p + eps/m^p; 0 when the row is all zeros.
  float scale_and_den(const float* x, int64_t n, float* m) const {
    float zmax = 0.0f;
    for (int64_t j = 0; j < n; ++j) zmax = std::max(zmax, std::fabs(x[j]));
    *m = zmax;
    if (zmax == 0.0f) return 0.0f;
    const float inv = 1.0f / zmax;
    float g = 0.0f;
    for (int64_t j = 0; j < n; ++j) g += ipow(x[j] * inv, power);
    return g + (eps > 0.0f ? eps / std::pow(zmax, static_cast<float>(power)) : 0.0f);
  }
  void forward(const float* x, float* p, int64_t n) const {
    float m = 0.0f;
    const float den = scale_and_den(x, n, &m);
    if (den == 0.0f || !std::isfinite(den)) {  // all logits 0 (or eps dominates beyond float range)
      std::fill(p, p + n, 0.0f);
      return;
    }
    const float inv = 1.0f / m, inv_den = 1.0f / den;
    for (int64_t j = 0; j < n; ++j) p[j] = ipow(x[j] * inv, power) * inv_den;
  }
  // ∂a/∂z: dz_j = p z_j^(p-1) (dA_j − d) / (Σ z^p + eps) = p (z_j/m)^(p-1) / (m · den) (dA_j − d).
  void backward(const float* x, const float*, const float* dp, float d, float* dx, int64_t n) const {
    float m = 0.0f;
    const float den = scale_and_den(x, n, &m);
    if (den == 0.0f || !std::isfinite(den)) {
      std::fill(dx, dx + n, 0.0f);
      return;
    }
    const float inv = 1.0f / m, c = static_cast<float>(power) / (m * den);
    for (int64_t j = 0; j < n; ++j) dx[j] = c * ipow(x[j] * inv, power - 1) * (dp[j] - d);
  }
};

}  // namespace

AttentionEntry power_attention_entry() {
  AttentionEntry e;
  e.name = "power";
  e.help = "Power-Softmax, (s QK^T)^p / sum (s QK^T)^p with p even (Zimerman et al. 2024)";
  e.caps = {.causal = true, .padding = true};
  e.schema = {
      scale_param(),
      causal_param(),
      {.name = "p", .type = ParamType::Int, .default_value = 2, .min = 2.0, .max = 64.0,
       .help = "the power, a positive even integer"},
      {.name = "eps", .type = ParamType::Float, .default_value = 0.0, .min = 0.0,
       .help = "added to each row's denominator"},
  };
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    PowerMap map;
    map.power = p["p"].get<int>();
    SOFTLAB_CHECK(map.power % 2 == 0, "model.attention.p: Power-Softmax needs an even power, got ", map.power);
    map.eps = p["eps"].get<float>();
    return attention_kernel::row_map_attention("power_attention", configured_scale(p), p["causal"].get<bool>(),
                                               map);
  };
  // z^p as p - 1 products, without the kernel's rescaling by the row's largest |z|.
  e.reference = [](Attention&, const json& p, const AttentionContext&, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const Tensor z = attention_ref::logits(p, q, k);
    Tensor g = z;
    for (int t = 1; t < p["p"].get<int>(); ++t) g = mul(g, z);
    g = mul(g, attention_ref::visibility(q.shape()[2], p["causal"].get<bool>()));
    return matmul(div(g, add_scalar(sum(g, -1, true), p["eps"].get<float>())), v);
  };
  e.golden = {
      "power_bidir_n7",
      "power_bidir_n7_p4",
      "power_causal_n7",
  };
  return e;
}

}  // namespace softlab
