#pragma once
// Finite-difference gradient checking for tests.
//
// The output y = f(inputs) is projected onto a fixed random direction w, L = <w, y>, so
// that every element of y's gradient matters. The analytic gradient comes from
// y.backward(w); the numeric one from central differences of L, evaluated in double from
// float32 forwards. Tolerances are per element: |analytic - numeric| <= atol + rtol*|numeric|.
#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "softlab/softlab.hpp"

namespace softlab::test {

struct GradcheckOptions {
  float eps = 1e-3f;
  double atol = 2e-3;
  double rtol = 2e-2;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_err = 0.0;
  std::string report;  // the worst element per input
};

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

inline double project(const Tensor& y, const Tensor& w) {
  double s = 0.0;
  for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.data()[i]) * w.data()[i];
  return s;
}

inline GradcheckResult gradcheck(const Fn& f, std::vector<Tensor> inputs, GradcheckOptions opt = {}) {
  GradcheckResult res;
  for (auto& x : inputs) {
    x.zero_grad();
  }
  Tensor y = f(inputs);
  Generator gen(opt.seed);
  Tensor w = uniform(y.shape(), gen, -1.0f, 1.0f);
  y.backward(w);
  std::ostringstream rep;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor ga = x.grad();
    double worst = 0.0;
    int64_t worst_i = -1;
    double worst_a = 0, worst_n = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      float* p = x.mutable_data();
      const float orig = p[i];
      double lp, lm;
      {
        NoGradGuard ng;
        p[i] = orig + opt.eps;
        lp = project(f(inputs), w);
        p[i] = orig - opt.eps;
        lm = project(f(inputs), w);
      }
      p[i] = orig;
      const double num = (lp - lm) / (2.0 * static_cast<double>(opt.eps));
      const double ana = ga.defined() ? ga.data()[i] : 0.0;
      const double err = std::fabs(ana - num);
      const double excess = err - (opt.atol + opt.rtol * std::fabs(num));
      res.max_abs_err = std::max(res.max_abs_err, err);
      if (worst_i < 0 || excess > worst) {
        worst = excess;
        worst_i = i;
        worst_a = ana;
        worst_n = num;
      }
      if (excess > 0) res.ok = false;
    }
    if (worst_i >= 0)
      rep << "input " << k << " " << x.shape() << ": worst element " << worst_i << " analytic " << worst_a
          << " numeric " << worst_n << (worst > 0 ? "  <-- FAIL" : "") << "\n";
  }
  res.report = rep.str();
  return res;
}

// A tensor with requires_grad, values uniform in [lo, hi).
inline Tensor param(const Shape& s, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Generator g(seed);
  Tensor t = uniform(s, g, lo, hi);
  t.set_requires_grad(true);
  return t;
}

}  // namespace softlab::test
