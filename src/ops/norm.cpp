// Layer normalisation over the last axis, fused, with the llm.c-style backward that
// reuses the per-row mean and reciprocal standard deviation saved by the forward.
#include <cmath>

#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
constexpr int64_t kRowGrain = 32;

struct LayerNormNode final : Node {
  Saved x, gamma;
  std::vector<float> mean_hi, mean_lo;  // one pair per row; the row mean is hi + lo (see the forward)
  std::vector<float> rstd;
  bool need_x = false, need_gamma = false, need_beta = false;
  const char* name() const override { return "layer_norm"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& X = x.get();
    const int64_t D = X.shape()[-1];
    const int64_t R = D ? X.numel() / D : 0;
    const float* px = X.data();
    const float* pg = g.data();
    const float* pw = gamma.defined() ? gamma.get().data() : nullptr;
    Tensor dx, dgamma, dbeta;
    if (need_x) {
      dx = empty(X.shape());
      float* d = dx.mutable_data();
      parallel_for(0, R, kRowGrain, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float* xr = px + r * D;
          const float* gr = pg + r * D;
          float* dr = d + r * D;
          const float mh = mean_hi[static_cast<size_t>(r)], ml = mean_lo[static_cast<size_t>(r)];
          const float rs = rstd[static_cast<size_t>(r)];
          // dnorm = g * gamma; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
          float s1 = 0.0f, s2 = 0.0f;
          for (int64_t j = 0; j < D; ++j) {
            const float dn = gr[j] * (pw ? pw[j] : 1.0f);
            s1 += dn;
            s2 += dn * ((xr[j] - mh) - ml) * rs;
          }
          s1 /= static_cast<float>(D);
          s2 /= static_cast<float>(D);
          for (int64_t j = 0; j < D; ++j) {
            const float dn = gr[j] * (pw ? pw[j] : 1.0f);
            dr[j] = rs * (dn - s1 - ((xr[j] - mh) - ml) * rs * s2);
          }
        }
      });
    }
    if (need_gamma || need_beta) {
      // One pass in row order, vectorised over D: cheap (R x D FMAs), and the same bits for
      // any thread count.
      if (need_gamma) dgamma = zeros(Shape{D});
      if (need_beta) dbeta = zeros(Shape{D});
      float* dw = need_gamma ? dgamma.mutable_data() : nullptr;
      float* db = need_beta ? dbeta.mutable_data() : nullptr;
      for (int64_t r = 0; r < R; ++r) {
        const float* xr = px + r * D;
        const float* gr = pg + r * D;
        const float mh = mean_hi[static_cast<size_t>(r)], ml = mean_lo[static_cast<size_t>(r)];
        const float rs = rstd[static_cast<size_t>(r)];
        if (dw)
          for (int64_t c = 0; c < D; ++c) dw[c] += gr[c] * ((xr[c] - mh) - ml) * rs;
        if (db)
          for (int64_t c = 0; c < D; ++c) db[c] += gr[c];
      }
    }
    return {dx, dgamma, dbeta};
  }
};
}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  detail::check_defined(x, "layer_norm", "x");
  SOFTLAB_CHECK(x.rank() >= 1, "layer_norm: x needs at least one axis, got shape ", x.shape());
  const int64_t D = x.shape()[-1];
  SOFTLAB_CHECK(!gamma.defined() || gamma.shape() == Shape{D}, "layer_norm: gamma has shape ", gamma.shape(),
                ", expected [", D, "] for x of shape ", x.shape());
  SOFTLAB_CHECK(!beta.defined() || beta.shape() == Shape{D}, "layer_norm: beta has shape ", beta.shape(),
                ", expected [", D, "] for x of shape ", x.shape());
  SOFTLAB_CHECK(eps >= 0.0f, "layer_norm: eps must be >= 0, got ", eps);
  const int64_t R = D ? x.numel() / D : 0;
  Tensor y = empty(x.shape());
  std::vector<float> mean_hi(static_cast<size_t>(R)), mean_lo(static_cast<size_t>(R));
  std::vector<float> rstd(static_cast<size_t>(R));
  const float* px = x.data();
  float* py = y.mutable_data();
  const float* pw = gamma.defined() ? gamma.data() : nullptr;
  const float* pb = beta.defined() ? beta.data() : nullptr;
  parallel_for(0, R, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = px + r * D;
      float* yr = py + r * D;
      // Centring in two float stages, then the centred variance: no cancellation for
      // large offsets. A plain float mean of rows like 1e4 + noise is off by up to
      // ulp(1e4) ~ 1e-3, which would shift every normalised value of the row by that much
      // over the noise's standard deviation. So: mh = float mean; x - mh is exact
      // (Sterbenz) for such rows; ml = mean(x - mh) corrects it, and (x - mh) - ml is
      // accurate to float rounding of the small residual. All float, so it vectorises.
      float mh = 0.0f;
      for (int64_t j = 0; j < D; ++j) mh += xr[j];
      mh /= static_cast<float>(D);
      float ml = 0.0f;
      for (int64_t j = 0; j < D; ++j) ml += xr[j] - mh;
      ml /= static_cast<float>(D);
      float v = 0.0f;
      for (int64_t j = 0; j < D; ++j) {
        const float c = (xr[j] - mh) - ml;
        v += c * c;
      }
      v /= static_cast<float>(D);
      const float rs = 1.0f / std::sqrt(v + eps);
      for (int64_t j = 0; j < D; ++j) {
        const float nv = ((xr[j] - mh) - ml) * rs;
        yr[j] = nv * (pw ? pw[j] : 1.0f) + (pb ? pb[j] : 0.0f);
      }
      mean_hi[static_cast<size_t>(r)] = mh;
      mean_lo[static_cast<size_t>(r)] = ml;
      rstd[static_cast<size_t>(r)] = rs;
    }
  });
  if (needs_grad({&x, &gamma, &beta})) {
    auto node = std::make_shared<LayerNormNode>();
    node->x = Saved(x);
    if (gamma.defined()) node->gamma = Saved(gamma);
    node->mean_hi = std::move(mean_hi);
    node->mean_lo = std::move(mean_lo);
    node->rstd = std::move(rstd);
    node->need_x = x.requires_grad();
    node->need_gamma = gamma.defined() && gamma.requires_grad();
    node->need_beta = beta.defined() && beta.requires_grad();
    attach(y, node, {&x, &gamma, &beta});
  }
  return y;
}

}  // namespace softlab
