#pragma once
// Pieces the attention modules share (internal to softlab): the fused softmax kernel that
// selective attention builds on, and the "scale" and "causal" parameters most modules take.
#include <cmath>

#include "softlab/attention.hpp"
#include "softlab/tensor.hpp"

namespace softlab {

// O = softmax(scale · Q Kᵀ + M) V on [B, H, N, Dh]; M is the causal mask when causal.
// Fused, O(N·Dh) memory; see row_kernel.hpp.
Tensor softmax_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal);

inline ParamSpec scale_param() {
  return {.name = "scale", .type = ParamType::Float, .default_value = nullptr, .min = 0.0, .min_exclusive = true,
          .help = "logit scale s; null means Dh^-1/2", .nullable = true};
}
inline ParamSpec causal_param() {
  return {.name = "causal", .type = ParamType::Bool, .default_value = false, .help = "query i sees keys 0..i only"};
}
// The configured scale, or 0 for "Dh^-1/2", resolved by scale_for once q's shape is known.
inline float configured_scale(const json& params) {
  return params["scale"].is_null() ? 0.0f : params["scale"].get<float>();
}
inline float scale_for(float configured, const Tensor& q) {
  return configured > 0.0f ? configured : 1.0f / std::sqrt(static_cast<float>(q.shape()[-1]));
}

}  // namespace softlab
