#include "attention/soft_reference.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attention/reference_ops.hpp"
#include "softlab/ops.hpp"

namespace softlab::attention_ref {

namespace {

Tensor eye(int64_t m) {
  Tensor t = zeros({m, m});
  for (int64_t i = 0; i < m; ++i) t.mutable_data()[i * m + i] = 1.0f;
  return t;
}

// alpha per matrix as a constant [..., 1, 1] (no gradient flows through it, as in the op).
Tensor newton_alpha(const Tensor& k, double reg) {
  const int64_t m = k.shape()[-1], batch = k.numel() / (m * m);
  std::vector<int64_t> d = k.shape().dims();
  d[d.size() - 1] = 1;
  d[d.size() - 2] = 1;
  Tensor a = empty(Shape(d));
  for (int64_t t = 0; t < batch; ++t) {
    double rs = 0.0, pn = 0.0;  // infinity-norms of k and of k + reg I
    for (int64_t i = 0; i < m; ++i) {
      double sk = 0.0, sp = 0.0;
      for (int64_t j = 0; j < m; ++j) {
        const double x = k.data()[(t * m + i) * m + j];
        sk += std::fabs(x);
        sp += std::fabs(x + (i == j ? reg : 0.0));
      }
      rs = std::max(rs, sk);
      pn = std::max(pn, sp);
    }
    double alpha = 1.8 / (rs * rs);
    if (!(rs > 0.0) || alpha * pn * pn > 1.9) alpha = 1.8 / (pn * pn);
    a.mutable_data()[t] = static_cast<float>(alpha);
  }
  return a;
}

// A constant selection matrix [m, gh*gw]: row (py, px) picks grid token (py r + dy, px r + dx).
Tensor window_selector(int64_t gh, int64_t gw, int64_t r, int64_t dy, int64_t dx) {
  const int64_t hp = gh / r, wp = gw / r;
  Tensor s = zeros({hp * wp, gh * gw});
  for (int64_t py = 0; py < hp; ++py)
    for (int64_t px = 0; px < wp; ++px)
      s.mutable_data()[(py * wp + px) * gh * gw + (py * r + dy) * gw + (px * r + dx)] = 1.0f;
  return s;
}

}  // namespace

Tensor gaussian_composed(const Tensor& a, const Tensor& b) {
  std::vector<int64_t> da = a.shape().dims(), db = b.shape().dims();
  da.insert(da.end() - 1, 1);  // [..., N, 1, D]
  db.insert(db.end() - 2, 1);  // [..., 1, M, D]
  const Tensor diff = sub(reshape(a, da), reshape(b, db));
  return exp(scale(sum(mul(diff, diff), -1), -0.5f));
}

Tensor newton_schulz_composed(const Tensor& k, double reg, int64_t iters) {
  const Tensor p = add(k, scale(eye(k.shape()[-1]), static_cast<float>(reg)));
  Tensor v = mul(p, newton_alpha(k, reg));
  for (int64_t t = 0; t < iters; ++t) v = sub(scale(v, 2.0f), matmul(matmul(v, p), v));
  return v;
}

// Landmarks as sums over the offsets (dy, dx) of the r x r window: one selection product
// per offset, for conv times the weight's [:, :, dy, dx] slice.
Tensor soft_reference(Attention& module, const json& params, const AttentionContext& ctx, const Tensor& q,
                      const Tensor&, const Tensor& v) {
  const int64_t D = q.shape()[3], r = params["ratio"].get<int64_t>();
  const int64_t gh = ctx.grid_h, gw = ctx.grid_w, prefix = ctx.prefix_tokens;
  const bool conv = params["landmark"].get<std::string>() == "conv";
  const Tensor qt = scale(q, static_cast<float>(std::pow(static_cast<double>(D), -0.25)));
  const Tensor grid = slice(qt, 2, prefix, prefix + gh * gw);
  const Tensor w3 = conv ? reshape(parameter(module, "landmark_weight"), {D, D, r * r}) : Tensor();
  Tensor lm;
  for (int64_t dy = 0; dy < r; ++dy)
    for (int64_t dx = 0; dx < r; ++dx) {
      Tensor y = left_matmul(window_selector(gh, gw, r, dy, dx), grid);
      if (conv) y = linear(y, reshape(slice(w3, 2, dy * r + dx, dy * r + dx + 1), {D, D}));
      lm = lm.defined() ? add(lm, y) : y;
    }
  if (conv)
    lm = gelu(layer_norm(lm, parameter(module, "landmark_norm.weight"), parameter(module, "landmark_norm.bias"), 1e-5f),
              GeluKind::Exact);
  else
    lm = scale(lm, 1.0f / static_cast<float>(r * r));
  const bool newton = params["inverse"].get<std::string>() == "newton";
  const Tensor k1 = gaussian_composed(qt, lm);
  const Tensor k2 = gaussian_composed(lm, lm);
  Tensor w = newton_schulz_composed(k2, params["reg"].get<double>(), newton ? params["newton_iters"].get<int64_t>() : 40);
  if (params["normalization"].get<bool>()) {  // SOFT++: D^-1/2 W D^-1/2, d = rowsum K2
    const Tensor rs = sum(k2, -1, true);
    w = mul(mul(w, div(ones({1}), sqrt(rs))), div(ones({1}), sqrt(transpose(rs, -1, -2))));
  }
  return matmul(matmul(k1, w), matmul(k1, v, true, false));
}

}  // namespace softlab::attention_ref
