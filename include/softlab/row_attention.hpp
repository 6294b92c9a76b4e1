#pragma once
// The public extension point for softmax-like attention maps: a module that turns each row
// of logits x_ij = s q_i·k_j into a row of weights p_ij = map(x_i)_j and returns P V runs
// in softlab's fused row kernel (the one softmax, sigmoid, softplus, ReLU and power attention
// use) by supplying the map alone. The kernel handles the tiling, threads, causal rows,
// bf16 products, the recomputing backward and the in-place q/k/v reads of the block's
// projection; the map sees one row at a time. docs/extending.md has a worked example.
//
//   struct SquaredRelu : softlab::RowMap {
//     void forward(const float* x, float* p, int64_t n) const override {
//       float sum = 0; for (int64_t j = 0; j < n; ++j) { p[j] = x[j] > 0 ? x[j] * x[j] : 0; sum += p[j]; }
//       for (int64_t j = 0; j < n; ++j) p[j] /= sum + 1e-6f;
//     }
//     void backward(...) const override { ... }
//   };
//   ... factory: return softlab::make_row_attention("squared_relu", attention_scale(p), p["causal"], map);
#include <cstdint>
#include <memory>
#include <string>

#include "softlab/attention.hpp"
#include "softlab/schema.hpp"

namespace softlab {

// One row's map and its derivative. Row i sees n logits (n = N, or i + 1 when causal).
// Calls come from several threads at once, so both functions must be const and reentrant.
struct RowMap {
  virtual ~RowMap() = default;
  // p[0..n) = map(x[0..n)).
  virtual void forward(const float* x, float* p, int64_t n) const = 0;
  // dx[0..n) = the gradient of the loss with respect to the logits of the row, given its
  // logits x, weights p, dp_j = dO_i·v_j and d = dO_i·o_i (o_i = Σ_j p_j v_j). For a map
  // that normalises, p_j = f(x_j) / Σ f, it is f'(x_j) (dp_j − d) / Σ f.
  virtual void backward(const float* x, const float* p, const float* dp, float d, float* dx, int64_t n) const = 0;
};

// An attention module running `map` in the fused row kernel: O = map(s Q Kᵀ) V, row by
// row. `name` names its autograd node (in errors and profiles); `scale` is s, or 0 for
// Dh^-1/2; `causal` limits row i to keys 0..i.
std::unique_ptr<Attention> make_row_attention(const std::string& name, float scale, bool causal,
                                              std::shared_ptr<const RowMap> map);

// The two keys most attention modules take, for their schemas: "scale" (nullable float,
// null = Dh^-1/2) and "causal" (bool, default false; a module with it sets caps.causal).
ParamSpec attention_scale_param();
ParamSpec attention_causal_param();
// The value of "scale" from validated params, as make_row_attention takes it (0 for null).
float attention_scale(const json& params);

}  // namespace softlab
