// stablemax head: StableMax cross-entropy (Prieto et al. 2025; docs/heads.md).
//   z = h W^T + b,  s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0),  P_k = s(z_k) / sum_j s(z_j)
//   l = -log P_y, scores = z;  soft targets t: l = -sum_k t_k log P_k
// Evaluated through log s(x) = +-log1p(|x|) and a log-sum-exp of those, so no exponential
// of a logit is ever formed: finite even at |z| = 1e30 in float32.
#include <cmath>

#include "heads/row_loss.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

double log_s(double x) { return x >= 0.0 ? std::log1p(x) : -std::log1p(-x); }

// log s(z_k) of one row into ls[C]; returns log sum_j s(z_j) (a log-sum-exp of the ls).
double log_s_row(const float* z, int64_t C, double* ls) {
  double m = -INFINITY;
  for (int64_t k = 0; k < C; ++k) m = std::max(m, ls[k] = log_s(z[k]));
  double sum = 0.0;
  for (int64_t k = 0; k < C; ++k) sum += std::exp(ls[k] - m);
  return m + std::log(sum);
}

// One rule for labels and distributions: l = (sum t) log sum_j s(z_j) - sum_k t_k log s(z_k),
// which is lse - log s(z_y) for a label.
struct StablemaxRule {
  int64_t C = 0;
  int64_t scratch() const { return C; }
  template <class Target>
  double row(const float* z, const Target* t, float* scores, float* g, double* ls) const {
    for (int64_t k = 0; k < C; ++k) scores[k] = z[k];
    if (!t) return 0.0;
    const double lse = log_s_row(z, C, ls), mass = t->mass();
    if (g)  // dl/dz_k = ((sum t) P_k - t_k) s'(z_k)/s(z_k), and s'/s = 1 / (1 + |z|)
      for (int64_t k = 0; k < C; ++k)
        g[k] = static_cast<float>((mass * std::exp(ls[k] - lse) - (*t)[k]) / (1.0 + std::abs(double{z[k]})));
    double l = mass * lse;
    t->for_each([&](int64_t k, double tk) { l -= tk * ls[k]; });
    return l;
  }
};

class StablemaxHead final : public Head {
 public:
  explicit StablemaxHead(const HeadContext& ctx) : C_(ctx.num_classes) {
    auto init = heads::linear_init(ctx, ctx.num_classes, "stablemax");
    w_ = register_parameter("weight", init.weight);
    b_ = register_parameter("bias", init.bias, false);
  }
  HeadOutput forward(const Tensor& h, std::span<const int32_t> labels) override {
    Tensor z = linear(h, w_, b_);
    HeadOutput out = heads::row_loss("stablemax", z, C_, labels, StablemaxRule{C_});
    out.scores = z;  // the logits, with their autograd history
    return out;
  }
  HeadOutput forward_soft(const Tensor& h, const Tensor& targets) override {
    Tensor z = linear(h, w_, b_);
    HeadOutput out = heads::row_loss_soft("stablemax", z, C_, targets, StablemaxRule{C_});
    out.scores = z;
    return out;
  }
  // P_k = s(z_k) / sum_j s(z_j), in double through log s.
  Tensor probabilities(const Tensor& scores) const override {
    const int64_t B = scores.shape()[0];
    Tensor out = empty(scores.shape());
    const float* z = scores.data();
    float* p = out.mutable_data();
    std::vector<double> ls(static_cast<size_t>(C_));
    for (int64_t n = 0; n < B; ++n) {
      const double lse = log_s_row(z + n * C_, C_, ls.data());
      for (int64_t k = 0; k < C_; ++k) p[n * C_ + k] = static_cast<float>(std::exp(ls[static_cast<size_t>(k)] - lse));
    }
    return out;
  }

 private:
  int64_t C_;
  Tensor w_, b_;
};

}  // namespace

HeadEntry stablemax_head_entry() {
  HeadEntry e;
  e.name = "stablemax";
  e.help = "StableMax cross-entropy (Prieto et al.): s(x) = x+1 or 1/(1-x) instead of exp; no overflow";
  e.schema = {};
  e.soft_targets = true;
  e.factory = [](const json&, const HeadContext& ctx) -> std::unique_ptr<Head> {
    return std::make_unique<StablemaxHead>(ctx);
  };
  e.golden = {
      "stablemax_default",
      "stablemax_large_logits",
  };
  return e;
}

}  // namespace softlab
