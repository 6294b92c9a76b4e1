#pragma once
// Pieces the attention modules share (internal to softlab): the fused softmax kernel that
// selective attention builds on, and the "scale" and "causal" parameters most modules take.
#include <cmath>

#include "softlab/attention.hpp"
#include "softlab/error.hpp"
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

namespace detail {
// The sizes of per-head q, k [B, H, N, Dh] and v [B, H, N, Dv].
struct HeadDims {
  int64_t B = 0, H = 0, N = 0, Dh = 0, Dv = 0;
  int64_t heads() const { return B * H; }  // independent (b, h) problems
};

// Checks that q, k, v are per-head tensors of one attention call; names all three shapes.
inline HeadDims check_qkv(const char* module, const Tensor& q, const Tensor& k, const Tensor& v) {
  SOFTLAB_CHECK(q.defined() && k.defined() && v.defined(), module, ": q, k and v must be defined tensors");
  SOFTLAB_CHECK(q.rank() == 4 && k.shape() == q.shape() && v.rank() == 4 && v.shape()[0] == q.shape()[0] &&
                    v.shape()[1] == q.shape()[1] && v.shape()[2] == q.shape()[2],
                module, ": q and k must be [B, H, N, Dh] and v [B, H, N, Dv] with the same B, H, N; got q ",
                q.shape(), ", k ", k.shape(), ", v ", v.shape());
  return {q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3], v.shape()[3]};
}

}  // namespace detail

}  // namespace softlab
