// zloss head: the Z-loss of de Brebisson & Vincent (docs/heads.md).
//   o = h W^T + beta,  z = (o - mean o) / sqrt(var o + var_eps)   (population variance)
//   l = softplus(a (b - z_y)) / a,  scores = z
//   soft targets t: l = sum_k t_k softplus(a (b - z_k)) / a   (the label's loss, averaged over t)
// The loss depends on o only through its standardised form, so it is invariant to
// o -> alpha o + c (exactly when var_eps = 0).
#include <cmath>

#include "heads/row_loss.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

struct ZlossRule {
  double a = 1.0, b = 3.0, var_eps = 1e-6;
  int64_t C = 0;
  int64_t scratch() const { return 2 * C; }
  // One rule for labels and distributions: l = sum_k t_k softplus(x_k) / a, x_k = a (b - z_k),
  // summed over the non-zero t_k only (one term for a label).
  template <class Target>
  double row(const float* o, const Target* t, float* scores, float* g, double* s) const {
    double* z = s;      // [C] standardised outputs
    double* w = s + C;  // [C] dl/dz_k = -t_k sigmoid(x_k), written where t_k != 0
    const double inv_c = 1.0 / static_cast<double>(C);
    double mu = 0.0;
    for (int64_t k = 0; k < C; ++k) mu += o[k];
    mu *= inv_c;
    double var = 0.0;  // two passes: never E[o^2] - mu^2
    for (int64_t k = 0; k < C; ++k) var += (o[k] - mu) * (o[k] - mu);
    const double sigma = std::sqrt(var * inv_c + var_eps);
    for (int64_t k = 0; k < C; ++k) {
      z[k] = sigma > 0.0 ? (o[k] - mu) / sigma : 0.0;
      scores[k] = static_cast<float>(z[k]);
    }
    if (!t) return 0.0;
    double l = 0.0, w_sum = 0.0, wz = 0.0;
    t->for_each([&](int64_t k, double tk) {
      const double x = a * (b - z[k]);
      const double e = std::exp(-std::abs(x));
      l += tk * (std::max(x, 0.0) + std::log1p(e));  // stable softplus
      w[k] = -tk * (x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e));
      w_sum += w[k];
      wz += w[k] * z[k];
    });
    if (g) {
      // dz_j/do_k = ([j = k] - 1/C - z_j z_k / C) / sigma, so
      // dl/do_k = (w_k - (sum_j w_j) / C - z_k (sum_j w_j z_j) / C) / sigma.
      const double inv_sigma = sigma > 0.0 ? 1.0 / sigma : 0.0;
      for (int64_t k = 0; k < C; ++k) {
        const double wk = (*t)[k] != 0.0 ? w[k] : 0.0;
        g[k] = static_cast<float>(inv_sigma * (wk - (w_sum + z[k] * wz) * inv_c));
      }
    }
    return l / a;
  }
};

class ZlossHead final : public Head {
 public:
  ZlossHead(const HeadContext& ctx, const ZlossRule& rule) : rule_(rule) {
    auto init = heads::linear_init(ctx, ctx.num_classes, "zloss");
    w_ = register_parameter("weight", init.weight);
    b_ = register_parameter("bias", init.bias, false);
  }
  HeadOutput forward(const Tensor& h, std::span<const int32_t> labels) override {
    return heads::row_loss("zloss", linear(h, w_, b_), rule_.C, labels, rule_);
  }
  HeadOutput forward_soft(const Tensor& h, const Tensor& targets) override {
    return heads::row_loss_soft("zloss", linear(h, w_, b_), rule_.C, targets, rule_);
  }
  Tensor probabilities(const Tensor&) const override { return Tensor(); }

 private:
  ZlossRule rule_;
  Tensor w_, b_;
};

}  // namespace

HeadEntry zloss_head_entry() {
  HeadEntry e;
  e.name = "zloss";
  e.help = "Z-loss (de Brebisson & Vincent): softplus on standardised outputs, shift and scale invariant";
  e.schema = {
      {.name = "a", .type = ParamType::Float, .default_value = 1.0, .min = 0.0, .min_exclusive = true,
       .help = "sharpness of the softplus (a -> inf: hinge)"},
      {.name = "b", .type = ParamType::Float, .default_value = nullptr,
       .help = "knee of the softplus on the z scale; null means sqrt(C - 1), the largest reachable z_y",
       .nullable = true},
      {.name = "var_eps", .type = ParamType::Float, .default_value = 1e-6, .min = 0.0,
       .help = "added to the variance (0: exact invariance)"},
  };
  e.soft_targets = true;
  e.factory = [](const json& p, const HeadContext& ctx) -> std::unique_ptr<Head> {
    ZlossRule r;
    r.C = ctx.num_classes;
    r.a = p["a"].get<double>();
    r.b = p["b"].is_null() ? std::sqrt(static_cast<double>(ctx.num_classes - 1)) : p["b"].get<double>();
    r.var_eps = p["var_eps"].get<double>();
    return std::make_unique<ZlossHead>(ctx, r);
  };
  e.golden = {
      "zloss_a4_b1.5_vareps0",
      "zloss_default",
  };
  return e;
}

}  // namespace softlab
