// fourier head: the Fourier head of Gillman et al. (ICLR 2025; docs/heads.md).
// A linear layer gives N+1 complex coefficients a_j = u_j + i v_j; the head's density on
// [-1, 1] is p(x) = |A(x)|^2 / (2 c_0) with A(x) = sum_j a_j e^{i pi j x} and
// c_0 = sum_j |a_j|^2. Class i is bin i of C equal bins, centre x_i = -1 + (2i + 1)/C:
//   q_i = p(x_i) / sum_j p(x_j),  scores S_i = log(q_i + eps_log),  l = CE(S, y)
//   training adds R = gamma * 2 * sum_k 2 pi^2 k^2 |c_k|^2 (c_k: autocorrelation of a).
//   soft targets t: l = -sum_k t_k log softmax(S)_k (+ R), softmax(S)_k = (q_k + eps_log) / (1 + C eps_log)
// p(x_i) is computed from A(x_i) (route B of docs/heads.md: non-negative by construction); the
// penalty needs the autocorrelation c_k and its gradient (route A).
#include <cmath>
#include <numbers>

#include "heads/row_loss.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

struct FourierRule {
  int64_t C = 0, N = 0;      // bins, frequencies (coefficients j = 0..N)
  double eps_log = 1e-5, gamma = 0.0;
  const double* cos_t = nullptr;  // [C, N+1]: cos(pi j x_i)
  const double* sin_t = nullptr;  // [C, N+1]: sin(pi j x_i)
  int64_t scratch() const { return 4 * C + 2 * (N + 1); }

  // One rule for labels and distributions: the data term is -sum_k t_k log softmax(S)_k
  // (one term for a label), the penalty does not depend on the target.
  template <class Target>
  double row(const float* o, const Target* t, float* scores, float* g, double* s) const {
    const int64_t J = N + 1;
    const float* u = o;       // real parts
    const float* v = o + J;   // imaginary parts
    double* re = s;           // [C] Re A(x_i)
    double* im = re + C;      // [C] Im A(x_i)
    double* p = im + C;       // [C] p(x_i)
    double* gp = p + C;       // [C] dl/dp
    double* gre = gp + C;     // [J] dl/dRe c_k (penalty)
    double* gim = gre + J;    // [J] dl/dIm c_k (penalty)
    double c0 = 0.0;
    for (int64_t j = 0; j < J; ++j) c0 += double{u[j]} * u[j] + double{v[j]} * v[j];
    c0 = std::max(c0, 1e-30);
    double psum = 0.0;
    for (int64_t i = 0; i < C; ++i) {
      double r = 0.0, m = 0.0;
      for (int64_t j = 0; j < J; ++j) {
        r += u[j] * cos_t[i * J + j] - v[j] * sin_t[i * J + j];
        m += u[j] * sin_t[i * J + j] + v[j] * cos_t[i * J + j];
      }
      re[i] = r;
      im[i] = m;
      p[i] = (r * r + m * m) / (2.0 * c0);
      psum += p[i];
    }
    for (int64_t i = 0; i < C; ++i) scores[i] = static_cast<float>(std::log(p[i] / psum + eps_log));
    if (!t) return 0.0;
    const double Ce = static_cast<double>(C) * eps_log, mass = t->mass();
    double l = mass * std::log1p(Ce);
    t->for_each([&](int64_t k, double tk) { l -= tk * std::log(p[k] / psum + eps_log); });
    // The smoothness penalty on the unnormalised autocorrelation (w_0 = 0, so k >= 1).
    const double pi2 = std::numbers::pi * std::numbers::pi;
    for (int64_t k = 0; k < J; ++k) {
      double cr = 0.0, ci = 0.0;
      for (int64_t j = 0; j + k < J; ++j) {
        cr += double{u[j + k]} * u[j] + double{v[j + k]} * v[j];
        ci += double{v[j + k]} * u[j] - double{u[j + k]} * v[j];
      }
      const double w = 2.0 * pi2 * static_cast<double>(k * k);
      l += gamma * 2.0 * w * (cr * cr + ci * ci);
      gre[k] = gamma * 4.0 * w * cr;
      gim[k] = gamma * 4.0 * w * ci;
    }
    if (!g) return l;
    // Data term: dl/dlam = (sum t) pi - t with pi = (q + eps)/(1 + C eps), then through
    // q = p / psum and p = (Re^2 + Im^2) / (2 c_0).
    double gq_q = 0.0;
    for (int64_t i = 0; i < C; ++i) {
      const double q = p[i] / psum;
      const double glam = mass * (q + eps_log) / (1.0 + Ce) - (*t)[i];
      gp[i] = glam / (q + eps_log);  // dl/dq_i for now
      gq_q += gp[i] * q;
    }
    double gp_p = 0.0;
    for (int64_t i = 0; i < C; ++i) {
      gp[i] = (gp[i] - gq_q) / psum;
      gp_p += gp[i] * p[i];
    }
    for (int64_t j = 0; j < J; ++j) {
      double gu = 0.0, gv = 0.0;
      for (int64_t i = 0; i < C; ++i) {
        gu += gp[i] * (re[i] * cos_t[i * J + j] + im[i] * sin_t[i * J + j]);
        gv += gp[i] * (im[i] * cos_t[i * J + j] - re[i] * sin_t[i * J + j]);
      }
      gu = (gu - 2.0 * u[j] * gp_p) / c0;
      gv = (gv - 2.0 * v[j] * gp_p) / c0;
      // Penalty: back from c_k to the coefficients (indices outside 0..N read as 0).
      for (int64_t k = 1; k < J; ++k) {
        const double up = j + k < J ? u[j + k] : 0.0, um = j - k >= 0 ? u[j - k] : 0.0;
        const double vp = j + k < J ? v[j + k] : 0.0, vm = j - k >= 0 ? v[j - k] : 0.0;
        gu += gre[k] * (up + um) + gim[k] * (vp - vm);
        gv += gre[k] * (vp + vm) + gim[k] * (um - up);
      }
      g[j] = static_cast<float>(gu);
      g[J + j] = static_cast<float>(gv);
    }
    return l;
  }
};

class FourierHead final : public Head {
 public:
  FourierHead(const HeadContext& ctx, int64_t frequencies, double gamma, double eps_log, float init_div)
      : C_(ctx.num_classes), N_(frequencies), gamma_(gamma), eps_log_(eps_log) {
    auto init = heads::linear_init(ctx, 2 * (N_ + 1), "fourier", init_div);
    w_ = register_parameter("weight", init.weight);
    b_ = register_parameter("bias", init.bias, false);
    const int64_t J = N_ + 1;
    cos_.resize(static_cast<size_t>(C_ * J));
    sin_.resize(cos_.size());
    for (int64_t i = 0; i < C_; ++i) {
      const double x = -1.0 + (2.0 * static_cast<double>(i) + 1.0) / static_cast<double>(C_);
      for (int64_t j = 0; j < J; ++j) {
        cos_[static_cast<size_t>(i * J + j)] = std::cos(std::numbers::pi * static_cast<double>(j) * x);
        sin_[static_cast<size_t>(i * J + j)] = std::sin(std::numbers::pi * static_cast<double>(j) * x);
      }
    }
  }
  HeadOutput forward(const Tensor& h, std::span<const int32_t> labels) override {
    FourierRule rule{C_, N_, eps_log_, training() ? gamma_ : 0.0, cos_.data(), sin_.data()};
    return heads::row_loss("fourier", linear(h, w_, b_), C_, labels, rule);
  }
  HeadOutput forward_soft(const Tensor& h, const Tensor& targets) override {
    FourierRule rule{C_, N_, eps_log_, training() ? gamma_ : 0.0, cos_.data(), sin_.data()};
    return heads::row_loss_soft("fourier", linear(h, w_, b_), C_, targets, rule);
  }
  // The density over the bins, q_i = exp(S_i) - eps_log (>= 0, sums to 1 up to rounding).
  Tensor probabilities(const Tensor& scores) const override {
    Tensor q = empty(scores.shape());
    const float* s = scores.data();
    float* out = q.mutable_data();
    for (int64_t i = 0; i < scores.numel(); ++i)
      out[i] = static_cast<float>(std::max(0.0, std::exp(double{s[i]}) - eps_log_));
    return q;
  }

 private:
  int64_t C_, N_;
  double gamma_, eps_log_;
  std::vector<double> cos_, sin_;
  Tensor w_, b_;
};

}  // namespace

HeadEntry fourier_head_entry() {
  HeadEntry e;
  e.name = "fourier";
  e.help = "Fourier head (Gillman et al.): a Fourier-series density over C ordered bins of [-1, 1]";
  e.schema = {
      {.name = "frequencies", .type = ParamType::Int, .default_value = nullptr, .min = 1.0,
       .help = "N, the number of frequencies, 1..C-1; null means C-1 (every pmf on the bins representable)",
       .nullable = true},
      {.name = "gamma", .type = ParamType::Float, .default_value = 1e-6, .min = 0.0,
       .help = "weight of the smoothness penalty (training loss only)"},
      {.name = "eps_log", .type = ParamType::Float, .default_value = 1e-5, .min = 0.0, .min_exclusive = true,
       .help = "scores = log(q + eps_log)"},
      {.name = "init_div", .type = ParamType::Float, .default_value = 100.0, .min = 0.0, .min_exclusive = true,
       .help = "the linear layer's default init is divided by this (weight and bias), as the authors do"},
  };
  e.soft_targets = true;
  e.factory = [](const json& p, const HeadContext& ctx) -> std::unique_ptr<Head> {
    const int64_t C = ctx.num_classes;
    const int64_t n = p["frequencies"].is_null() ? C - 1 : p["frequencies"].get<int64_t>();
    SOFTLAB_CHECK(n >= 1 && n <= C - 1, "model.head.frequencies: ", n, " is outside 1..", C - 1,
                  " (with ", C, " bins, frequencies >= C alias on the bin centres)");
    return std::make_unique<FourierHead>(ctx, n, p["gamma"].get<double>(), p["eps_log"].get<double>(),
                                         p["init_div"].get<float>());
  };
  e.golden = {
      "fourier_default",
      "fourier_n1_gamma0.1",
      "fourier_n2_gamma0_epslog1e-3",
  };
  return e;
}

}  // namespace softlab
