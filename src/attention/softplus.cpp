// softplus: length-scaled softplus attention with re-weighting (Gao, Spratling, Gionfrida
// 2025, "Softplus Attention with Re-weighting Boosts Length Extrapolation", LSSA/LSSAR,
// docs/attention.md),
//   λ_i = log n_i,  f_ij = softplus(λ_i s q_i·k_j),  a_ij = f_ij^p / Σ_j f_ij^p,  O = A V,
// n_i the keys query i sees. p = 1 is LSSA; p > 1 is the re-weighting of LSSAR, whose
// per-row factor n_i cancels in the l1 normalisation. One pass per row, no max needed
// (softplus cannot overflow); for p != 1 the row is divided by its largest f before the
// power, which the normalisation makes exact, so f^p cannot underflow to an all-zero row.
#include <cmath>
#include <string>

#include "attention/kernels.hpp"
#include "attention/reference_ops.hpp"
#include "attention/row_kernel.hpp"
#include "ops/fast_math.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

enum class LengthScale { LogN, LogNOverLogTrain, None };

// softplus(z) = max(z, 0) + log1p(e^-|z|): no overflow, no cancellation, and branch-free
// so the row loops vectorise (with glibc's log1pf this module ran 10x slower than softmax).
// fast_exp saturates at ~1e-38 for |z| > 87, which keeps f > 0 and every denominator positive.
inline float softplus_stable(float z) {
  return std::max(z, 0.0f) + detail::fast_log1p_unit(detail::fast_exp(-std::fabs(z)));
}

struct SoftplusMap {
  LengthScale length_scale = LengthScale::LogN;
  float inv_log_train = 1.0f;
  float power = 1.0f;

  float lambda(int64_t n) const {
    switch (length_scale) {
      case LengthScale::LogN: return std::log(static_cast<float>(n));
      case LengthScale::LogNOverLogTrain: return std::log(static_cast<float>(n)) * inv_log_train;
      case LengthScale::None: break;
    }
    return 1.0f;
  }
  void forward(const float* x, float* p, int64_t n) const {
    const float lam = lambda(n);
    for (int64_t j = 0; j < n; ++j) p[j] = softplus_stable(lam * x[j]);
    if (power != 1.0f) {
      const float inv = 1.0f / attention_kernel::row_max(p, n);
      for (int64_t j = 0; j < n; ++j) p[j] = std::pow(p[j] * inv, power);
    }
    const float inv = 1.0f / attention_kernel::row_sum(p, n);
    for (int64_t j = 0; j < n; ++j) p[j] *= inv;
  }
  // a = g / G, g = f^p:  ∂L/∂f_j = p (a_j / f_j)(dA_j − d),  ∂f/∂z = σ(z),  z = λ x.
  // a_j / f_j equals 1/Σf for p = 1; in general it needs no second pass over the row.
  void backward(const float* x, const float* p, const float* dp, float d, float* dx, int64_t n) const {
    const float lam = lambda(n);
    for (int64_t j = 0; j < n; ++j) {
      const float z = lam * x[j];
      const float f = softplus_stable(z);
      const float sig = 1.0f / (1.0f + detail::fast_exp(-z));
      dx[j] = lam * sig * power * (p[j] / f) * (dp[j] - d);
    }
  }
};

// The row map from validated params and the context (the training length for
// "log_n_over_log_train").
SoftplusMap configured_map(const json& p, const AttentionContext& ctx) {
  SoftplusMap map;
  const std::string ls = p["length_scale"].get<std::string>();
  map.length_scale = ls == "log_n"  ? LengthScale::LogN
                     : ls == "none" ? LengthScale::None
                                    : LengthScale::LogNOverLogTrain;
  if (map.length_scale == LengthScale::LogNOverLogTrain) {
    SOFTLAB_CHECK(ctx.seq_len > 1, "model.attention.length_scale: \"log_n_over_log_train\" needs a training "
                                   "sequence length above 1, got ", ctx.seq_len);
    map.inv_log_train = 1.0f / std::log(static_cast<float>(ctx.seq_len));
  }
  map.power = p["p"].get<float>();
  return map;
}

}  // namespace

AttentionEntry softplus_attention_entry() {
  AttentionEntry e;
  e.name = "softplus";
  e.help = "length-scaled softplus attention with re-weighting, softplus(log(n) s QK^T)^p, l1-normalised "
           "(Gao et al. 2025)";
  e.caps = {.causal = true, .padding = true};
  e.schema = {
      scale_param(),
      causal_param(),
      {.name = "length_scale", .type = ParamType::String, .default_value = "log_n",
       .choices = {"log_n", "log_n_over_log_train", "none"},
       .help = "the row scale λ_i: log n_i, log n_i / log(training length), or 1"},
      {.name = "p", .type = ParamType::Float, .default_value = 1.0, .min = 1.0,
       .help = "re-weighting power: 1 is LSSA, > 1 sharpens (LSSAR); may change at evaluation (softlab eval "
               "--set model.attention.p=...): LSSAR's inference-only re-weighting",
       .inference_safe = true},
  };
  e.factory = [](const json& p, const AttentionContext& ctx) -> std::unique_ptr<Attention> {
    return attention_kernel::row_map_attention("softplus_attention", configured_scale(p), p["causal"].get<bool>(),
                                               configured_map(p, ctx));
  };
  // The length scale λ_i as an [N, 1] factor, and the power through exp(p log f).
  e.reference = [](Attention&, const json& p, const AttentionContext& ctx, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const SoftplusMap map = configured_map(p, ctx);
    const int64_t n = q.shape()[2];
    const bool causal = p["causal"].get<bool>();
    Tensor lambda = ones({n, 1});
    if (map.length_scale != LengthScale::None)
      lambda = scale(log(attention_ref::visible_counts(n, causal)), map.inv_log_train);
    Tensor f = softplus(mul(attention_ref::logits(p, q, k), lambda));
    if (map.power != 1.0f) f = exp(scale(log(f), map.power));
    return matmul(attention_ref::l1_rows(mul(f, attention_ref::visibility(n, causal))), v);
  };
  e.golden = {
      "softplus_bidir_n7",
      "softplus_bidir_n7_none",
      "softplus_bidir_n7_p2.5",
      "softplus_causal_n7",
      "softplus_causal_n7_over_train",
      "softplus_causal_n7_p2.5",
  };
  return e;
}

}  // namespace softlab
