#pragma once
// Checks every attention module must pass, written once and applied to each module's
// cases by its own test file (test_attention_<module>.cpp):
//   - the fused kernel against the same maths composed from primitive ops (outputs, and
//     gradients w.r.t. q, k, v and every parameter of the module);
//   - finite-difference gradients (gradcheck.hpp);
//   - causal variants: changing a token changes no earlier output, bit for bit;
//   - bidirectional variants: permuting the tokens permutes the outputs;
//   - large-magnitude inputs give finite outputs and gradients;
//   - inference (NoGradGuard) allocates no N x N tensor: counted through tensor_memory(),
//     which sees every Storage, so kernels allocate their scratch as tensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "softlab/attention.hpp"
#include "softlab/softlab.hpp"

namespace softlab::test {

struct AttnCase {
  json config;
  int64_t B = 2, H = 2, N = 7, Dh = 4;
  int64_t grid_h = 0, grid_w = 0, prefix = 0;  // AttentionContext's image grid
  uint64_t seed = 1;
  float input_scale = 1.0f;  // q, k, v are uniform in [-input_scale, input_scale)
  int64_t seq_len = 0;       // the context's training length; 0 means N
  // Nonzero: add uniform(-0.5, 0.5) noise from this seed to every parameter after building,
  // so that zero-initialised parameters (temperatures, biases) are exercised off their init.
  uint64_t perturb_params = 0;
  // Called on every freshly built module (after perturb_params): sets parameters to a
  // chosen point, e.g. one where a module is well conditioned.
  std::function<void(Attention&)> prepare;

  std::string name() const {
    std::ostringstream os;
    os << config.dump() << " B" << B << " H" << H << " N" << N << " Dh" << Dh;
    if (grid_h) os << " grid" << grid_h << "x" << grid_w << "+" << prefix;
    return os.str();
  }
};

struct Tolerance {
  double atol = 1e-5, rtol = 1e-4;
};

// The module context of case c, without the init generator (build() adds it; a composed
// reference reads the parameters from the built module instead).
inline AttentionContext context_of(const AttnCase& c) {
  AttentionContext ctx;
  ctx.dim = c.H * c.Dh;
  ctx.heads = c.H;
  ctx.head_dim = c.Dh;
  ctx.seq_len = c.seq_len ? c.seq_len : c.N;
  ctx.grid_h = c.grid_h;
  ctx.grid_w = c.grid_w;
  ctx.prefix_tokens = c.prefix;
  return ctx;
}

inline std::unique_ptr<Attention> build(const AttnCase& c, Generator& init) {
  AttentionContext ctx = context_of(c);
  ctx.init = &init;
  auto m = make_attention(c.config, ctx);
  if (c.perturb_params) {
    Generator g(c.perturb_params);
    for (auto& p : m->parameters()) {
      const Tensor r = uniform(p.tensor.shape(), g, -0.5f, 0.5f);
      float* d = p.tensor.mutable_data();
      for (int64_t i = 0; i < r.numel(); ++i) d[i] += r.data()[i];
    }
  }
  if (c.prepare) c.prepare(*m);
  return m;
}

struct AttnInputs {
  Tensor q, k, v;
};

inline AttnInputs make_inputs(const AttnCase& c, bool requires_grad) {
  Generator gen(c.seed);
  const Shape s{c.B, c.H, c.N, c.Dh};
  AttnInputs in{uniform(s, gen, -c.input_scale, c.input_scale), uniform(s, gen, -c.input_scale, c.input_scale),
                uniform(s, gen, -c.input_scale, c.input_scale)};
  if (requires_grad) {
    in.q.set_requires_grad(true);
    in.k.set_requires_grad(true);
    in.v.set_requires_grad(true);
  }
  return in;
}

// Per element |a - b| <= atol + rtol |b|; reports the worst element.
inline void expect_close(const Tensor& a, const Tensor& b, Tolerance tol, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what << ": undefined tensor";
  ASSERT_EQ(a.shape(), b.shape()) << what;
  int64_t worst = -1;
  double worst_excess = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data()[i], y = b.data()[i];
    const double excess = std::fabs(x - y) - (tol.atol + tol.rtol * std::fabs(y));
    if (!(excess <= 0.0) && (worst < 0 || !(excess <= worst_excess))) {
      worst = i;
      worst_excess = excess;
    }
  }
  EXPECT_LT(worst, 0) << what << ": element " << worst << " is " << (worst >= 0 ? a.data()[worst] : 0.0f)
                      << ", expected " << (worst >= 0 ? b.data()[worst] : 0.0f) << " (atol " << tol.atol << ", rtol "
                      << tol.rtol << ")";
}

inline void expect_all_finite(const Tensor& t, const std::string& what) {
  ASSERT_TRUE(t.defined()) << what;
  for (int64_t i = 0; i < t.numel(); ++i)
    ASSERT_TRUE(std::isfinite(t.data()[i])) << what << ": element " << i << " is " << t.data()[i];
}

// A gradient that may be undefined (no path) compares as zeros.
inline Tensor grad_or_zeros(const Tensor& t) { return t.grad().defined() ? t.grad() : zeros(t.shape()); }

// ref(q, k, v, module) composes the module's maths from primitive ops, reading the
// module's parameters from the module itself, so both sides see the same values.
using RefFn = std::function<Tensor(const Tensor& q, const Tensor& k, const Tensor& v, Attention& m)>;

inline void expect_matches_reference(const AttnCase& c, const RefFn& ref, Tolerance out_tol = {},
                                     Tolerance grad_tol = {1e-5, 1e-3}) {
  SCOPED_TRACE(c.name());
  Generator init(c.seed + 17);
  auto m = build(c, init);
  auto params = m->parameters();
  AttnInputs a = make_inputs(c, true);
  Tensor out = m->forward(a.q, a.k, a.v);
  Generator wg(c.seed + 99);
  const Tensor w = uniform(out.shape(), wg, -1.0f, 1.0f);
  out.backward(w);
  std::vector<Tensor> pgrads;
  for (auto& p : params) {
    pgrads.push_back(grad_or_zeros(p.tensor));
    p.tensor.zero_grad();
  }
  AttnInputs b = make_inputs(c, true);
  Tensor expect = ref(b.q, b.k, b.v, *m);
  expect.backward(w);
  expect_close(out, expect, out_tol, "output");
  expect_close(grad_or_zeros(a.q), grad_or_zeros(b.q), grad_tol, "dq");
  expect_close(grad_or_zeros(a.k), grad_or_zeros(b.k), grad_tol, "dk");
  expect_close(grad_or_zeros(a.v), grad_or_zeros(b.v), grad_tol, "dv");
  for (size_t i = 0; i < params.size(); ++i)
    expect_close(pgrads[i], grad_or_zeros(params[i].tensor), grad_tol, "d" + params[i].name);
}

// Finite differences w.r.t. q, k, v and every parameter (perturbed in place through the
// parameter's own storage).
inline void expect_gradcheck(const AttnCase& c, GradcheckOptions opt = {}) {
  SCOPED_TRACE(c.name());
  Generator init(c.seed + 17);
  auto m = build(c, init);
  AttnInputs a = make_inputs(c, true);
  std::vector<Tensor> inputs{a.q, a.k, a.v};
  for (auto& p : m->parameters()) inputs.push_back(p.tensor);
  Attention* mod = m.get();
  const auto r = gradcheck([mod](const std::vector<Tensor>& x) { return mod->forward(x[0], x[1], x[2]); },
                           inputs, opt);
  EXPECT_TRUE(r.ok) << r.report;
}

// Token t of q, k and v is replaced; outputs of queries before t must not change at all.
inline void expect_causal(const AttnCase& c) {
  SCOPED_TRACE(c.name());
  Generator init(c.seed + 17);
  auto m = build(c, init);
  NoGradGuard ng;
  AttnInputs a = make_inputs(c, false);
  const Tensor before = m->forward(a.q, a.k, a.v);
  for (int64_t t : {c.N - 1, c.N / 2}) {
    AttnInputs b = make_inputs(c, false);
    for (Tensor* x : {&b.q, &b.k, &b.v}) {
      float* p = x->mutable_data();
      for (int64_t bh = 0; bh < c.B * c.H; ++bh)
        for (int64_t d = 0; d < c.Dh; ++d) p[(bh * c.N + t) * c.Dh + d] = 3.0f * p[(bh * c.N + t) * c.Dh + d] + 0.5f;
    }
    const Tensor after = m->forward(b.q, b.k, b.v);
    int64_t changed_earlier = 0, changed_at_t = 0;
    for (int64_t bh = 0; bh < c.B * c.H; ++bh)
      for (int64_t i = 0; i <= t; ++i)
        for (int64_t d = 0; d < c.Dh; ++d) {
          const int64_t e = (bh * c.N + i) * c.Dh + d;
          if (before.data()[e] != after.data()[e]) ++(i < t ? changed_earlier : changed_at_t);
        }
    EXPECT_EQ(changed_earlier, 0) << "changing token " << t << " changed earlier outputs";
    EXPECT_GT(changed_at_t, 0) << "changing token " << t << " did not change its own output";
  }
}

// Bidirectional: out(perm(q), perm(k), perm(v)) = perm(out(q, k, v)).
inline void expect_permutation_equivariant(const AttnCase& c, Tolerance tol = {}) {
  SCOPED_TRACE(c.name());
  Generator init(c.seed + 17);
  auto m = build(c, init);
  NoGradGuard ng;
  AttnInputs a = make_inputs(c, false);
  std::vector<int64_t> perm(static_cast<size_t>(c.N));
  std::iota(perm.begin(), perm.end(), 0);
  std::reverse(perm.begin(), perm.end());
  if (c.N > 2) std::rotate(perm.begin(), perm.begin() + 1, perm.end());
  auto permute_tokens = [&](const Tensor& x) {
    Tensor y = empty(x.shape());
    for (int64_t bh = 0; bh < c.B * c.H; ++bh)
      for (int64_t i = 0; i < c.N; ++i)
        std::copy_n(x.data() + (bh * c.N + perm[static_cast<size_t>(i)]) * c.Dh, c.Dh,
                    y.mutable_data() + (bh * c.N + i) * c.Dh);
    return y;
  };
  const Tensor out = m->forward(a.q, a.k, a.v);
  const Tensor out_p = m->forward(permute_tokens(a.q), permute_tokens(a.k), permute_tokens(a.v));
  expect_close(out_p, permute_tokens(out), tol, "permuted output");
}

inline void expect_finite_for_large_inputs(AttnCase c, float magnitude) {
  c.input_scale = magnitude;
  SCOPED_TRACE(c.name());
  Generator init(c.seed + 17);
  auto m = build(c, init);
  AttnInputs a = make_inputs(c, true);
  Tensor out = m->forward(a.q, a.k, a.v);
  expect_all_finite(out, "output");
  out.backward(ones(out.shape()));
  expect_all_finite(grad_or_zeros(a.q), "dq");
  expect_all_finite(grad_or_zeros(a.k), "dk");
  expect_all_finite(grad_or_zeros(a.v), "dv");
  for (auto& p : m->parameters()) expect_all_finite(grad_or_zeros(p.tensor), "d" + p.name);
}

// Inference at a long N: the tensors allocated by a NoGradGuard forward (output and kernel
// scratch) must stay far below one B x H x N x N score tensor.
inline void expect_inference_memory_below_nxn(const AttnCase& c, double fraction = 0.125) {
  SCOPED_TRACE(c.name());
  Generator init(c.seed + 17);
  auto m = build(c, init);
  AttnInputs a = make_inputs(c, false);
  NoGradGuard ng;
  reset_peak_tensor_memory();
  const int64_t live = tensor_memory().live_bytes;
  const Tensor out = m->forward(a.q, a.k, a.v);
  const int64_t extra = tensor_memory().peak_bytes - live;
  const double nxn = static_cast<double>(c.B * c.H * c.N * c.N) * sizeof(float);
  EXPECT_LT(static_cast<double>(extra), fraction * nxn)
      << "inference allocated " << extra << " bytes; one score tensor is " << nxn << " bytes";
  EXPECT_GE(extra, out.numel() * static_cast<int64_t>(sizeof(float))) << "the output itself was not counted";
}

// ---- against an independent float64 formula ------------------------------------------------

inline std::vector<double> to_double(const Tensor& t) { return {t.data(), t.data() + t.numel()}; }

// The module's output for q, k, v [B, H, N, Dh] written directly in double (flat row-major
// vectors in, one out), by the test that checks a module against it.
using Float64Forward = std::function<std::vector<double>(const std::vector<double>& q, const std::vector<double>& k,
                                                         const std::vector<double>& v)>;

// Case c's module against f: the output within out_rtol of f's largest output, and the
// gradients of L = <w, o> (w uniform from w_seed) along three random directions (from
// dir_seed) of q, k and v within grad_rtol of sum |grad_e delta_e|, against central
// differences of L in double.
inline void expect_matches_float64(const AttnCase& c, const Float64Forward& f, double out_rtol, double grad_rtol,
                                   uint64_t w_seed, uint64_t dir_seed) {
  SCOPED_TRACE(c.name());
  Generator init(1);
  auto m = build(c, init);
  AttnInputs a = make_inputs(c, true);
  Tensor out = m->forward(a.q, a.k, a.v);
  Generator wg(w_seed);
  const Tensor w = uniform(out.shape(), wg, -1.0f, 1.0f);
  out.backward(w);

  const std::vector<double> x[3] = {to_double(a.q), to_double(a.k), to_double(a.v)};
  const std::vector<double> ref = f(x[0], x[1], x[2]);
  double max_ref = 0.0, max_err = 0.0;
  for (size_t e = 0; e < ref.size(); ++e) {
    max_ref = std::max(max_ref, std::fabs(ref[e]));
    max_err = std::max(max_err, std::fabs(ref[e] - out.data()[e]));
  }
  EXPECT_LT(max_err, out_rtol * max_ref) << "largest output " << max_ref;

  auto loss = [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v) {
    const std::vector<double> o = f(q, k, v);
    double l = 0.0;
    for (size_t e = 0; e < o.size(); ++e) l += w.data()[e] * o[e];
    return l;
  };
  const Tensor* grads[3] = {&a.q, &a.k, &a.v};
  const char* names[3] = {"dq", "dk", "dv"};
  Generator dg(dir_seed);
  const double h = 1e-4;
  for (int which = 0; which < 3; ++which) {
    const Tensor delta = uniform(a.q.shape(), dg, -1.0f, 1.0f);
    const Tensor g = grads[which]->grad();
    ASSERT_TRUE(g.defined()) << names[which];
    double analytic = 0.0, scale = 0.0;  // <grad, delta> and sum |grad_e delta_e|
    for (int64_t e = 0; e < g.numel(); ++e) {
      analytic += static_cast<double>(g.data()[e]) * delta.data()[e];
      scale += std::fabs(static_cast<double>(g.data()[e]) * delta.data()[e]);
    }
    std::vector<double> plus[3] = {x[0], x[1], x[2]}, minus[3] = {x[0], x[1], x[2]};
    for (size_t e = 0; e < plus[which].size(); ++e) {
      plus[which][e] += h * delta.data()[e];
      minus[which][e] -= h * delta.data()[e];
    }
    const double numeric = (loss(plus[0], plus[1], plus[2]) - loss(minus[0], minus[1], minus[2])) / (2 * h);
    EXPECT_LT(std::fabs(analytic - numeric), grad_rtol * scale)
        << names[which] << " along a random direction: analytic " << analytic << ", float64 numeric " << numeric;
  }
}

}  // namespace softlab::test
