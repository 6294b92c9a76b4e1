#include "attention/reference_ops.hpp"

#include <cmath>
#include <limits>

#include "attention/kernels.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"

namespace softlab::attention_ref {

Tensor visibility(int64_t n, bool causal) {
  Tensor m = ones({n, n});
  if (causal)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) m.mutable_data()[i * n + j] = 0.0f;
  return m;
}

Tensor causal_mask(int64_t n, bool causal) {
  Tensor m = zeros({n, n});
  if (causal)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) m.mutable_data()[i * n + j] = -std::numeric_limits<float>::infinity();
  return m;
}

Tensor visible_counts(int64_t n, bool causal) {
  Tensor c = empty({n, 1});
  for (int64_t i = 0; i < n; ++i) c.mutable_data()[i] = static_cast<float>(causal ? i + 1 : n);
  return c;
}

float scale_of(const json& params, const Tensor& q) {
  return scale_for(params.contains("scale") ? configured_scale(params) : 0.0f, q);
}

Tensor logits(const json& params, const Tensor& q, const Tensor& k) {
  return scale(matmul(q, k, false, true), scale_of(params, q));
}

Tensor l1_rows(const Tensor& g) { return div(g, sum(g, -1, true)); }

Tensor left_matmul(const Tensor& m, const Tensor& x) { return transpose(matmul(x, m, true, true), -1, -2); }

Tensor elu_plus_one(const Tensor& x) { return add_scalar(elu(x), 1.0f); }

Tensor parameter(Attention& module, const std::string& name) {
  std::string names;
  for (auto& p : module.parameters()) {
    if (p.name == name) return p.tensor;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  throw Error(detail::cat("composed reference: the module has no parameter '", name, "' (it has: ",
                          names.empty() ? std::string("none") : names, ")"));
}

}  // namespace softlab::attention_ref
