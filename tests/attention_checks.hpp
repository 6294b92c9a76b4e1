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

// [N, N] constants for composed references: 1 where key j is visible to query i.
inline Tensor visibility(int64_t n, bool causal) {
  Tensor m = ones({n, n});
  if (causal)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) m.mutable_data()[i * n + j] = 0.0f;
  return m;
}

// [N, 1]: n_i, the number of keys query i sees.
inline Tensor visible_counts(int64_t n, bool causal) {
  Tensor c = empty({n, 1});
  for (int64_t i = 0; i < n; ++i) c.mutable_data()[i] = static_cast<float>(causal ? i + 1 : n);
  return c;
}

}  // namespace softlab::test
