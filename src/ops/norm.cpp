// Layer normalisation over the last axis, fused, with the llm.c-style backward that
// reuses the per-row mean and reciprocal standard deviation saved by the forward.
//
// The row sums keep 16 partial sums, one per vector lane (fast_math.hpp's lanes16): GCC
// keeps the source order of float additions and so leaves a plain `s += x[j]` loop scalar,
// one dependent add per ~4 cycles, which was most of this op's cost at D = 64. The order
// (lanes, then lanes summed, then the tail) depends only on D: bit-identical results from
// run to run and for any thread count. A missing gamma or beta is a row of ones or zeros,
// so the loops carry no per-element branch.
#include <algorithm>
#include <cmath>

#include "ops/fast_math.hpp"
#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
constexpr int64_t kNormRowGrain = 32;
// Backward: rows per dgamma/dbeta partial sum. Fixed (not per thread), so the partials and
// their sum in block order are the same for any thread count.
constexpr int64_t kParamBlock = 32;

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
    std::vector<float> ones;  // gamma when there is none
    if (!gamma.defined()) ones.assign(static_cast<size_t>(D), 1.0f);
    const float* pw = gamma.defined() ? gamma.get().data() : ones.data();
    const int64_t Dv = D - D % detail::kLanes;  // summed lane-wise; the rest is the tail
    Tensor dx, dgamma, dbeta;
    if (need_x) dx = empty(X.shape());
    if (need_gamma) dgamma = zeros(Shape{D});
    if (need_beta) dbeta = zeros(Shape{D});
    float* d = need_x ? dx.mutable_data() : nullptr;
    float* dw = need_gamma ? dgamma.mutable_data() : nullptr;
    float* db = need_beta ? dbeta.mutable_data() : nullptr;
    // One parallel pass over blocks of kParamBlock rows: each block writes its rows of dx
    // and its own partial dgamma / dbeta (vectorised over D); the partials are summed in
    // block order afterwards. x and g are read once for all three gradients.
    const int64_t blocks = (R + kParamBlock - 1) / kParamBlock;
    std::vector<float> part_w(dw ? static_cast<size_t>(blocks * D) : 0, 0.0f);
    std::vector<float> part_b(db ? static_cast<size_t>(blocks * D) : 0, 0.0f);
    parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        float* pw_k = dw ? part_w.data() + k * D : nullptr;
        float* pb_k = db ? part_b.data() + k * D : nullptr;
        for (int64_t r = k * kParamBlock; r < std::min(R, (k + 1) * kParamBlock); ++r) {
          const float* xr = px + r * D;
          const float* gr = pg + r * D;
          const float mh = mean_hi[static_cast<size_t>(r)], ml = mean_lo[static_cast<size_t>(r)];
          const float rs = rstd[static_cast<size_t>(r)];
          if (d) {
            // dnorm = g * gamma; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
            detail::lanes16 a1 = {}, a2 = {};
            for (int64_t j = 0; j < Dv; j += detail::kLanes) {
              const detail::lanes16 dn = detail::load_lanes(gr + j) * detail::load_lanes(pw + j);
              a1 += dn;
              a2 += dn * ((detail::load_lanes(xr + j) - mh) - ml) * rs;
            }
            float s1 = detail::sum_lanes(a1), s2 = detail::sum_lanes(a2);
            for (int64_t j = Dv; j < D; ++j) {
              const float dn = gr[j] * pw[j];
              s1 += dn;
              s2 += dn * ((xr[j] - mh) - ml) * rs;
            }
            s1 /= static_cast<float>(D);
            s2 /= static_cast<float>(D);
            float* dr = d + r * D;
            for (int64_t j = 0; j < D; ++j) {
              const float dn = gr[j] * pw[j];
              dr[j] = rs * (dn - s1 - ((xr[j] - mh) - ml) * rs * s2);
            }
          }
          if (pw_k)
            for (int64_t c = 0; c < D; ++c) pw_k[c] += gr[c] * ((xr[c] - mh) - ml) * rs;
          if (pb_k)
            for (int64_t c = 0; c < D; ++c) pb_k[c] += gr[c];
        }
      }
    });
    for (int64_t k = 0; k < blocks; ++k) {  // block order: thread-count independent
      if (dw)
        for (int64_t c = 0; c < D; ++c) dw[c] += part_w[static_cast<size_t>(k * D + c)];
      if (db)
        for (int64_t c = 0; c < D; ++c) db[c] += part_b[static_cast<size_t>(k * D + c)];
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
  std::vector<float> ones, zero;  // gamma and beta when there are none
  if (!gamma.defined()) ones.assign(static_cast<size_t>(D), 1.0f);
  if (!beta.defined()) zero.assign(static_cast<size_t>(D), 0.0f);
  const float* pw = gamma.defined() ? gamma.data() : ones.data();
  const float* pb = beta.defined() ? beta.data() : zero.data();
  const int64_t Dv = D - D % detail::kLanes;  // summed lane-wise; the rest is the tail
  parallel_for(0, R, kNormRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = px + r * D;
      float* yr = py + r * D;
      // Centring in two float stages, then the centred variance: no cancellation for
      // large offsets. A plain float mean of rows like 1e4 + noise is off by up to
      // ulp(1e4) ~ 1e-3, which would shift every normalised value of the row by that much
      // over the noise's standard deviation. So: mh = float mean; x - mh is exact
      // (Sterbenz) for such rows; ml = mean(x - mh) corrects it, and (x - mh) - ml is
      // accurate to float rounding of the small residual. All float, so it vectorises.
      detail::lanes16 acc = {};
      for (int64_t j = 0; j < Dv; j += detail::kLanes) acc += detail::load_lanes(xr + j);
      float mh = detail::sum_lanes(acc);
      for (int64_t j = Dv; j < D; ++j) mh += xr[j];
      mh /= static_cast<float>(D);
      acc = detail::lanes16{};
      for (int64_t j = 0; j < Dv; j += detail::kLanes) acc += detail::load_lanes(xr + j) - mh;
      float ml = detail::sum_lanes(acc);
      for (int64_t j = Dv; j < D; ++j) ml += xr[j] - mh;
      ml /= static_cast<float>(D);
      acc = detail::lanes16{};
      for (int64_t j = 0; j < Dv; j += detail::kLanes) {
        const detail::lanes16 c = (detail::load_lanes(xr + j) - mh) - ml;
        acc += c * c;
      }
      float v = detail::sum_lanes(acc);
      for (int64_t j = Dv; j < D; ++j) {
        const float c = (xr[j] - mh) - ml;
        v += c * c;
      }
      v /= static_cast<float>(D);
      const float rs = 1.0f / std::sqrt(v + eps);
      for (int64_t j = 0; j < D; ++j) {
        const float nv = ((xr[j] - mh) - ml) * rs;
        yr[j] = nv * pw[j] + pb[j];
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
