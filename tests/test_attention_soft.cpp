// SOFT attention (docs/attention.md) and its two fused ops.
//   - gaussian_kernel: against the same maths composed from primitive ops (values and
//     gradients, including kappa(L, L) where both inputs are one tensor), finite differences,
//     large inputs, shape errors.
//   - spd_inverse: Newton against Cholesky, W·P = I, against Newton–Schulz composed from
//     matmul ops (which differentiates through the iterations), finite differences, the
//     residual diagnostic, errors.
//   - the module: against its registry entry's reference, composed from primitives in
//     another way (src/attention/soft_reference.cpp: landmarks by selection matrices, the
//     conv as one product per kernel offset, the kernel by broadcasting, the inverse by
//     composed Newton–Schulz), with and without a class token, conv and avgpool, a grid
//     that is not a multiple of the ratio; finite differences; the
//     spec's exactness check (landmarks = tokens gives the quadratic Gaussian attention
//     exactly); large inputs; inference memory; parameters; thread-count independence;
//     config errors.
// Golden values from PyTorch are in test_attention_golden.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "attention/gaussian_kernel.hpp"
#include "attention/soft_reference.hpp"
#include "attention/spd_inverse.hpp"
#include "attention_checks.hpp"
#include "attention_reference.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

using namespace softlab;
using namespace softlab::test;

namespace {

// ---- references composed from primitive ops ------------------------------------------------
// The composed Gaussian kernel and Newton–Schulz inverse are the ones the module's registry
// reference is built from (src/attention/soft_reference.hpp).

using attention_ref::gaussian_composed;
Tensor newton_ref(const Tensor& k, double reg, int iters) {
  return attention_ref::newton_schulz_composed(k, reg, iters);
}

Tensor eye(int64_t m) {
  Tensor t = zeros({m, m});
  for (int64_t i = 0; i < m; ++i) t.mutable_data()[i * m + i] = 1.0f;
  return t;
}

json soft_config(const std::string& landmark, const std::string& inverse, int64_t ratio = 2, double reg = 0.01,
                 int64_t iters = 20) {
  return {{"type", "soft"}, {"ratio", ratio}, {"landmark", landmark}, {"inverse", inverse}, {"newton_iters", iters},
          {"reg", reg}};
}

AttnCase soft_case(const json& cfg, int64_t B, int64_t H, int64_t Dh, int64_t gh, int64_t gw, int64_t prefix,
                   uint64_t seed = 1, float input_scale = 1.0f) {
  AttnCase c;
  c.config = cfg;
  c.B = B;
  c.H = H;
  c.Dh = Dh;
  c.grid_h = gh;
  c.grid_w = gw;
  c.prefix = prefix;
  c.N = prefix + gh * gw;
  c.seed = seed;
  c.input_scale = input_scale;
  return c;
}

// The Newton residual max|I - P W| the module's last forward reached.
double module_residual(const AttnCase& c) {
  Generator init(c.seed + 17);
  auto m = build(c, init);
  AttnInputs a = make_inputs(c, false);
  NoGradGuard ng;
  m->forward(a.q, a.k, a.v);
  return spd_inverse_last_residual();
}

// ---- gaussian_kernel ---------------------------------------------------------------------

TEST(GaussianKernel, MatchesComposedReference) {
  Generator g(5);
  const Tensor w = uniform({2, 3, 5, 7}, g, -1.0f, 1.0f);
  Tensor a1 = param({2, 3, 5, 4}, 1, -1.5f, 1.5f), b1 = param({2, 3, 7, 4}, 2, -1.5f, 1.5f);
  Tensor a2 = param({2, 3, 5, 4}, 1, -1.5f, 1.5f), b2 = param({2, 3, 7, 4}, 2, -1.5f, 1.5f);
  Tensor k = gaussian_kernel(a1, b1);
  Tensor ref = gaussian_composed(a2, b2);
  ASSERT_EQ(k.shape(), (Shape{2, 3, 5, 7}));
  expect_close(k, ref, {1e-6, 1e-5}, "kappa");
  k.backward(w);
  ref.backward(w);
  expect_close(a1.grad(), a2.grad(), {1e-6, 1e-4}, "da");
  expect_close(b1.grad(), b2.grad(), {1e-6, 1e-4}, "db");
}

// K2 = kappa(L, L): one tensor as both inputs; the engine must add both contributions.
TEST(GaussianKernel, SameTensorBothInputsAccumulates) {
  Generator g(7);
  const Tensor w = uniform({3, 6, 6}, g, -1.0f, 1.0f);
  Tensor l1 = param({3, 6, 5}, 3), l2 = param({3, 6, 5}, 3);
  Tensor k = gaussian_kernel(l1, l1);
  Tensor ref = gaussian_composed(l2, l2);
  expect_close(k, ref, {1e-6, 1e-5}, "kappa(L, L)");
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(k.data()[(t * 6 + i) * 6 + i], 1.0f) << "diagonal";
  k.backward(w);
  ref.backward(w);
  expect_close(l1.grad(), l2.grad(), {1e-6, 1e-4}, "dL");
}

TEST(GaussianKernel, Gradcheck) {
  const auto r = gradcheck([](const std::vector<Tensor>& x) { return gaussian_kernel(x[0], x[1]); },
                           {param({2, 4, 3}, 11), param({2, 5, 3}, 12)});
  EXPECT_TRUE(r.ok) << r.report;
  const auto r2 = gradcheck([](const std::vector<Tensor>& x) { return gaussian_kernel(x[0], x[0]); },
                            {param({2, 5, 3}, 13)});
  EXPECT_TRUE(r2.ok) << r2.report;
}

TEST(GaussianKernel, OnlyOneInputRequiresGrad) {
  Tensor a = param({4, 3}, 21);
  Generator g(22);
  const Tensor b = uniform({6, 3}, g, -1.0f, 1.0f);
  Tensor k = gaussian_kernel(a, b);
  k.backward(ones(k.shape()));
  ASSERT_TRUE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

// Large, nearly equal inputs: distances from differences, so kappa stays exact and finite.
TEST(GaussianKernel, LargeInputsFiniteAndExact) {
  Tensor a = full({1, 2, 3}, 1.0e4f), b = full({1, 2, 3}, 1.0e4f);
  b.mutable_data()[3] = 1.0e4f + 1.0f;  // row 1 of b differs by 1 in one coordinate
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor k = gaussian_kernel(a, b);
  EXPECT_EQ(k.at({0, 0, 0}), 1.0f);
  EXPECT_NEAR(k.at({0, 0, 1}), std::exp(-0.5f), 1e-7f);
  k.backward(ones(k.shape()));
  expect_all_finite(a.grad(), "da");
  EXPECT_NEAR(a.grad().at({0, 0, 0}), std::exp(-0.5f), 1e-6f);  // sum_j kappa_ij (b_j - a_i)
  Tensor far = gaussian_kernel(full({1, 1, 3}, -1.0e6f), full({1, 1, 3}, 1.0e6f));
  EXPECT_EQ(far.item(), 0.0f);
}

TEST(GaussianKernel, ShapeErrors) {
  EXPECT_THROW(gaussian_kernel(zeros({2, 3, 4}), zeros({2, 3, 5})), Error);  // feature sizes
  EXPECT_THROW(gaussian_kernel(zeros({2, 3, 4}), zeros({3, 3, 4})), Error);  // batch axes
  EXPECT_THROW(gaussian_kernel(zeros({4}), zeros({4})), Error);              // rank
}

// ---- spd_inverse ---------------------------------------------------------------------------

// A well-conditioned SPD batch: Gaussian kernel matrices of spread-out points.
Tensor spd_batch(const Shape& batch_points, uint64_t seed) {
  Generator g(seed);
  const Tensor x = uniform(batch_points, g, -1.5f, 1.5f);
  NoGradGuard ng;
  return gaussian_kernel(x, x);
}

// max |I - P W| in double from the float W.
double identity_error(const Tensor& k, const Tensor& w, double reg) {
  const int64_t m = k.shape()[-1], batch = k.numel() / (m * m);
  double e = 0.0;
  for (int64_t t = 0; t < batch; ++t)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) {
        double s = 0.0;
        for (int64_t l = 0; l < m; ++l)
          s += (k.data()[(t * m + i) * m + l] + (i == l ? reg : 0.0)) * w.data()[(t * m + l) * m + j];
        e = std::max(e, std::fabs((i == j ? 1.0 : 0.0) - s));
      }
  return e;
}

TEST(SpdInverse, NewtonAgreesWithCholeskyAndInverts) {
  // m = 9 and 13 leave remainder rows in the four-row product kernel; 64 is SOFT's largest.
  for (auto [m, d] : std::vector<std::pair<int64_t, int64_t>>{{9, 6}, {13, 8}, {64, 24}}) {
    SCOPED_TRACE(m);
    const Tensor k = spd_batch({2, 3, m, d}, 31);
    const Tensor wn = spd_inverse(k, {SpdInverseMethod::Newton, 20, 0.01});
    const double rn = spd_inverse_last_residual();
    const Tensor wc = spd_inverse(k, {SpdInverseMethod::Cholesky, 20, 0.01});
    const double rc = spd_inverse_last_residual();
    EXPECT_LT(rn, 1e-9) << "Newton did not converge on a well-conditioned batch";
    EXPECT_LT(rc, 1e-12);
    expect_close(wn, wc, {1e-6, 1e-5}, "Newton vs Cholesky");
    EXPECT_LT(identity_error(k, wn, 0.01), 1e-5);
    EXPECT_LT(identity_error(k, wc, 0.01), 1e-5);
    // W is symmetric like P.
    for (int64_t t = 0; t < 6; ++t)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < i; ++j)
          ASSERT_NEAR(wc.data()[(t * m + i) * m + j], wc.data()[(t * m + j) * m + i], 1e-6f);
  }
}

// The op (analytic backward -W^T dW W^T) against Newton–Schulz composed from matmul ops,
// differentiated through its iterations: equal once the iteration has converged.
TEST(SpdInverse, MatchesComposedNewtonSchulz) {
  for (auto method : {SpdInverseMethod::Newton, SpdInverseMethod::Cholesky}) {
    SCOPED_TRACE(method == SpdInverseMethod::Newton ? "newton" : "cholesky");
    Tensor k1 = spd_batch({2, 8, 6}, 41), k2 = k1.clone();
    k1.set_requires_grad(true);
    k2.set_requires_grad(true);
    Generator g(42);
    const Tensor w = uniform(k1.shape(), g, -1.0f, 1.0f);
    Tensor out = spd_inverse(k1, {method, 20, 0.01});
    Tensor ref = newton_ref(k2, 0.01, 40);
    expect_close(out, ref, {1e-5, 1e-4}, "W");
    out.backward(w);
    ref.backward(w);
    expect_close(k1.grad(), k2.grad(), {1e-5, 1e-3}, "dK");
  }
}

// Finite differences on raw entries (not only symmetric perturbations): for Cholesky this
// relies on the refinement step with the full matrix (spd_inverse.hpp).
TEST(SpdInverse, Gradcheck) {
  for (auto method : {SpdInverseMethod::Newton, SpdInverseMethod::Cholesky}) {
    SCOPED_TRACE(method == SpdInverseMethod::Newton ? "newton" : "cholesky");
    Tensor k = spd_batch({2, 5, 4}, 51);
    k.set_requires_grad(true);
    const auto r = gradcheck(
        [method](const std::vector<Tensor>& x) { return spd_inverse(x[0], {method, 20, 0.01}); }, {k});
    EXPECT_TRUE(r.ok) << r.report;
    // and through a symmetric parameterisation, the way SOFT uses it (K2 = kappa(L, L))
    const auto r2 = gradcheck(
        [method](const std::vector<Tensor>& x) { return spd_inverse(gaussian_kernel(x[0], x[0]), {method, 20, 0.01}); },
        {param({2, 5, 3}, 52, -1.5f, 1.5f)});
    EXPECT_TRUE(r2.ok) << r2.report;
  }
}

// Generic SPD input with negative entries (the row sum is of |K_ij|).
TEST(SpdInverse, GeneralSpdMatrix) {
  Generator g(61);
  const Tensor a = uniform({6, 6}, g, -1.0f, 1.0f);
  const Tensor k = add(matmul(a, a, false, true), scale(eye(6), 0.5f));  // A A^T + 0.5 I
  const Tensor wn = spd_inverse(k, {SpdInverseMethod::Newton, 60, 0.0});
  const Tensor wc = spd_inverse(k, {SpdInverseMethod::Cholesky, 0, 0.0});
  EXPECT_LT(identity_error(k, wc, 0.0), 1e-5);
  expect_close(wn, wc, {1e-5, 1e-4}, "Newton vs Cholesky");
}

// The spec's pitfall: without the regulariser, an ill-conditioned landmark kernel does not
// converge in 20 Newton steps; the residual says so, Cholesky does not care.
TEST(SpdInverse, ResidualReportsNonConvergence) {
  Generator g(71);
  const Tensor x = uniform({1, 8, 4}, g, -0.3f, 0.3f);  // close points: K nearly singular
  const Tensor k = gaussian_kernel(x, x);
  spd_inverse(k, {SpdInverseMethod::Newton, 20, 0.0});
  const double unconverged = spd_inverse_last_residual();
  EXPECT_GT(unconverged, 1e-2);
  spd_inverse(k, {SpdInverseMethod::Newton, 20, 0.01});
  const double regularised = spd_inverse_last_residual();
  EXPECT_LT(regularised, unconverged);
  std::printf("[ info     ] Newton residual max|I - P W| on kappa of 8 close points: %.3g with reg 0, %.3g with "
              "reg 0.01\n",
              unconverged, regularised);
}

TEST(SpdInverse, Errors) {
  EXPECT_THROW(spd_inverse(zeros({3, 4})), Error);  // not square
  Tensor indefinite = zeros({2, 2});
  indefinite.set({0, 0}, 1.0f);
  indefinite.set({1, 1}, -1.0f);
  try {
    spd_inverse(indefinite, {SpdInverseMethod::Cholesky, 0, 0.0});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not positive definite"), std::string::npos) << e.what();
  }
  EXPECT_THROW(spd_inverse(eye(3), {SpdInverseMethod::Newton, 20, -1.0}), Error);
}

// ---- the module ------------------------------------------------------------------------------
//
// Conditioning. SOFT's output goes through W = (K2 + reg I)^-1, so float32 rounding anywhere
// before it (q~, the landmarks, K1, K2, all float32 tensors) reaches the output amplified by
// about cond(K2 + reg I). That bounds two things these tests rely on: the accuracy of the
// float32 composed reference (its Newton–Schulz runs in float), and the finite differences of
// gradcheck (which difference float32 forwards with eps = 1e-3). Measured: with uniform
// inputs in [-1, 1) and Dh = 4, avgpool landmarks (means of r·r tokens) cluster and
// cond(P) reaches 140-510; conv landmarks (scale-invariant through LayerNorm) have cond up
// to ~300 depending on the weights. There the module still matches float64 (the golden
// cases in test_attention_golden.cpp use such points and pass at atol 1e-5, rtol 1e-4, and a
// finite difference at eps 1e-2 agrees with the analytic gradient to 0.05%), but the float32
// checks here cannot resolve it at eps 1e-3. So the checks below use well-conditioned points:
// avgpool with inputs in [-3, 3) (cond(P) 15-60), conv with the LayerNorm gain at 2 instead
// of 1 (cond(P) 2-50), which spreads the landmarks without changing any code path.

using Tweak = std::function<void(Attention&)>;

// conv landmarks: LayerNorm gain 2 (see above).
void spread_landmarks(Attention& m) {
  for (auto& p : m.parameters())
    if (p.name == "landmark_norm.weight") {
      float* g = p.tensor.mutable_data();
      for (int64_t i = 0; i < p.tensor.numel(); ++i) g[i] = 2.0f;
    }
}

struct ModuleVariant {
  std::string landmark, inverse;
  int64_t gh, gw, prefix;
};

Tweak variant_tweak(const ModuleVariant& v) {
  return v.landmark == "conv" ? Tweak(spread_landmarks) : Tweak([](Attention&) {});
}
// A well-conditioned case of a variant (see "Conditioning" above), its tweak included.
AttnCase variant_case(const ModuleVariant& v, int64_t B, int64_t ratio = 2, int64_t Dh = 4, uint64_t seed = 3) {
  AttnCase c = soft_case(soft_config(v.landmark, v.inverse, ratio), B, 2, Dh, v.gh, v.gw, v.prefix, seed,
                         v.landmark == "avgpool" ? 3.0f : 1.0f);
  c.prepare = variant_tweak(v);
  return c;
}

// Fused module against the composed reference: Newton with the same 20 steps (converged at
// these points, checked), Cholesky against 40 composed steps.
TEST(SoftAttention, MatchesComposedReference) {
  const std::vector<ModuleVariant> variants = {
      {"conv", "newton", 4, 4, 0},      {"conv", "newton", 4, 4, 1},    {"conv", "cholesky", 4, 4, 1},
      {"avgpool", "newton", 4, 4, 0},   {"avgpool", "cholesky", 4, 4, 1}, {"conv", "newton", 5, 6, 1},
      {"avgpool", "newton", 7, 5, 1},
  };
  for (const auto& v : variants) {
    if (v.inverse == "newton") {
      EXPECT_LT(module_residual(variant_case(v, 2)), 1e-10);
    }
    const AttnCase c = variant_case(v, 2);
    expect_matches_reference(c, registry_reference(c));
  }
}

// Ratio 3 on a grid that is not a multiple of it, and a wider head; both against the
// exact inverse (the reference of inverse = cholesky: 40 composed steps), so the module's
// 20 Newton steps must have converged too.
TEST(SoftAttention, MatchesComposedReferenceRatio3) {
  for (const auto& v : std::vector<ModuleVariant>{{"conv", "cholesky", 6, 7, 1}, {"avgpool", "newton", 7, 6, 1}}) {
    const AttnCase c = variant_case(v, 1, 3, 8, 4);
    json exact = c.config;
    exact["inverse"] = "cholesky";
    expect_matches_reference(c, registry_reference(c, exact));
  }
}

// Finite differences of the whole module (q, k, v, and every parameter) at B=1, H=2, Dh=4
// on a 4x4 grid.
TEST(SoftAttention, Gradcheck) {
  for (const auto& v : std::vector<ModuleVariant>{{"conv", "newton", 4, 4, 0},
                                                  {"conv", "newton", 4, 4, 1},
                                                  {"conv", "cholesky", 4, 4, 1},
                                                  {"avgpool", "newton", 4, 4, 1},
                                                  {"avgpool", "cholesky", 4, 4, 0}})
    for (uint64_t seed : {5, 6}) {
      // The step: avgpool landmarks are smooth in the inputs, so a larger step only removes
      // float32 rounding noise (about ulp * cond / eps): the worst error falls from 4e-3 at
      // eps 1e-3 (at the tolerance, and over it at -O1) to 3e-4 at eps 1e-2. Conv landmarks
      // pass through LayerNorm and GELU, whose curvature needs the small step.
      GradcheckOptions o;
      if (v.landmark == "avgpool") o.eps = 1e-2f;
      expect_gradcheck(variant_case(v, 1, 2, 4, seed), o);
    }
}

// Spec 5: "with landmarks = tokens it is exact". avgpool with ratio 1 makes L = q~ (no class
// token, so every token is a landmark); with reg 0 and the exact inverse,
// O = K1 K2^-1 K1^T V = kappa(q~, q~) V, the quadratic Gaussian attention.
TEST(SoftAttention, LandmarksEqualTokensIsExact) {
  AttnCase c = soft_case(soft_config("avgpool", "cholesky", 1, 0.0), 2, 2, 8, 4, 4, 0, 6, 2.0f);
  expect_matches_reference(
      c,
      [](const Tensor& q, const Tensor&, const Tensor& v, Attention&) {
        const Tensor qt = scale(q, static_cast<float>(std::pow(8.0, -0.25)));
        return matmul(gaussian_composed(qt, qt), v);
      },
      {1e-5, 1e-4}, {1e-5, 1e-3});
}

// k is ignored (Q = K tied): no gradient reaches it and changing it changes nothing.
TEST(SoftAttention, KeyIsIgnored) {
  const AttnCase c = soft_case(soft_config("conv", "newton"), 1, 2, 4, 4, 4, 1);
  Generator init(9);
  auto m = build(c, init);
  AttnInputs a = make_inputs(c, true);
  Tensor out = m->forward(a.q, a.k, a.v);
  out.backward(ones(out.shape()));
  const Tensor dk = grad_or_zeros(a.k);
  for (float x : dk.values()) EXPECT_EQ(x, 0.0f);
  NoGradGuard ng;
  const Tensor other = m->forward(a.q, scale(a.k.detach(), -3.0f), a.v);
  expect_close(other, out, {0.0, 0.0}, "output with another k");
}

TEST(SoftAttention, FiniteForLargeInputs) {
  for (const char* lm : {"conv", "avgpool"})
    for (const char* inv : {"newton", "cholesky"})
      for (float mag : {1e2f, 1e4f}) expect_finite_for_large_inputs(soft_case(soft_config(lm, inv), 2, 2, 4, 4, 4, 1), mag);
}

// O(N·m) memory: a 32 x 32 grid with ratio 4 has m = 64 landmarks for N = 1025 tokens.
TEST(SoftAttention, InferenceMemoryBelowNxN) {
  expect_inference_memory_below_nxn(soft_case(soft_config("conv", "newton", 4), 1, 2, 8, 32, 32, 1));
}

TEST(SoftAttention, ParametersAndInitialisation) {
  const AttnCase c = soft_case(soft_config("conv", "newton", 2), 1, 2, 8, 4, 4, 1);
  Generator init(3);
  auto m = build(c, init);
  const auto params = m->parameters();
  ASSERT_EQ(params.size(), 3u);
  EXPECT_EQ(params[0].name, "landmark_weight");
  EXPECT_EQ(params[0].tensor.shape(), (Shape{8, 8, 2, 2}));
  EXPECT_EQ(params[1].name, "landmark_norm.weight");
  EXPECT_EQ(params[2].name, "landmark_norm.bias");
  EXPECT_EQ(params[1].tensor.shape(), (Shape{8}));
  const float bound = 1.0f / std::sqrt(8.0f * 2 * 2);  // kaiming-uniform a = sqrt 5: 1/sqrt(fan_in)
  float lo = 1.0f, hi = -1.0f;
  for (float x : params[0].tensor.values()) {
    EXPECT_LE(std::fabs(x), bound);
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  EXPECT_LT(lo, -0.8f * bound);  // 256 draws cover most of the interval
  EXPECT_GT(hi, 0.8f * bound);
  for (float x : params[1].tensor.values()) EXPECT_EQ(x, 1.0f);
  for (float x : params[2].tensor.values()) EXPECT_EQ(x, 0.0f);
  Generator init2(3);
  EXPECT_TRUE(build(soft_case(soft_config("avgpool", "newton"), 1, 2, 8, 4, 4, 1), init2)->parameters().empty());
}

TEST(SoftAttention, NewtonAgreesWithCholesky) {
  const AttnCase n = soft_case(soft_config("conv", "newton"), 2, 4, 16, 7, 7, 1, 8);
  AttnCase ch = n;
  ch.config["inverse"] = "cholesky";
  Generator i1(1), i2(1);
  auto mn = build(n, i1);
  auto mc = build(ch, i2);
  AttnInputs a = make_inputs(n, false);
  NoGradGuard ng;
  expect_close(mn->forward(a.q, a.k, a.v), mc->forward(a.q, a.k, a.v), {1e-5, 1e-4}, "newton vs cholesky");
}

// The Newton residual max|I - P W| at the default settings (ratio 2, conv, 20 steps, reg
// 0.01) on random ViT-sized cases, printed for the record, and for avgpool landmarks, which
// cluster for small inputs (printed only: there 20 steps are not always enough, the spec's
// pitfall 2; see ResidualReportsNonConvergence).
TEST(SoftAttention, ResidualAtDefaults) {
  for (auto [gh, dh] : std::vector<std::pair<int64_t, int64_t>>{{7, 16}, {8, 16}, {8, 32}, {16, 16}}) {
    const AttnCase c = soft_case(json{{"type", "soft"}}, 2, 4, dh, gh, gh, 1, 10);
    const double r = module_residual(c);
    AttnCase a = c;
    a.config["landmark"] = "avgpool";
    const double ra = module_residual(a);
    a.input_scale = 0.25f;
    const double rs = module_residual(a);
    std::printf("[ info     ] soft defaults, grid %lldx%lld + cls, Dh %lld, B 2, H 4, inputs U(-1, 1): Newton residual "
                "%.3g (conv), %.3g (avgpool); avgpool with inputs U(-0.25, 0.25): %.3g\n",
                static_cast<long long>(gh), static_cast<long long>(gh), static_cast<long long>(dh), r, ra, rs);
    EXPECT_LT(r, 1e-6) << c.name();
  }
}

// Fixed partition by (b, h): the same bits for any thread count.
TEST(SoftAttention, SameResultForAnyThreadCount) {
  const AttnCase c = soft_case(soft_config("conv", "newton"), 2, 3, 8, 6, 6, 1, 12);
  auto run = [&](int threads) {
    set_num_threads(threads);
    Generator init(1);
    auto m = build(c, init);
    AttnInputs a = make_inputs(c, true);
    Tensor out = m->forward(a.q, a.k, a.v);
    out.backward(ones(out.shape()));
    return std::vector<Tensor>{out, a.q.grad(), a.v.grad(), m->parameters()[0].tensor.grad()};
  };
  const int before = num_threads();
  const auto one = run(1), two = run(2);
  set_num_threads(before);
  for (size_t i = 0; i < one.size(); ++i) expect_close(two[i], one[i], {0.0, 0.0}, "thread count " + std::to_string(i));
}

TEST(SoftAttention, ConfigDefaultsAndErrors) {
  AttentionContext ctx;
  ctx.dim = 8;
  ctx.heads = 2;
  ctx.head_dim = 4;
  ctx.seq_len = 17;
  Generator init(0);
  ctx.init = &init;
  auto message = [&](const json& cfg, const AttentionContext& cx) -> std::string {
    try {
      make_attention(cfg, cx);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  // no grid
  EXPECT_NE(message({{"type", "soft"}}, ctx).find("soft attention needs an image grid"), std::string::npos);
  ctx.grid_h = ctx.grid_w = 4;
  ctx.prefix_tokens = 1;
  EXPECT_EQ(message({{"type", "soft"}}, ctx), "");
  // ratio larger than the grid
  EXPECT_NE(message({{"type", "soft"}, {"ratio", 5}}, ctx).find("larger than the 4x4 image grid"), std::string::npos);
  EXPECT_EQ(message({{"type", "soft"}, {"ratio", 4}}, ctx), "");
  // bidirectional only: no causal key
  EXPECT_NE(message({{"type", "soft"}, {"causal", true}}, ctx).find("causal"), std::string::npos);
  EXPECT_NE(message({{"type", "soft"}, {"landmark", "maxpool"}}, ctx), "");
  EXPECT_NE(message({{"type", "soft"}, {"inverse", "lu"}}, ctx), "");
  EXPECT_NE(message({{"type", "soft"}, {"ratio", 0}}, ctx), "");
  EXPECT_NE(message({{"type", "soft"}, {"reg", -0.1}}, ctx), "");
  // defaults
  const auto& entry = attention_registry().get("soft", "model.attention.type");
  const json p = validate_params(entry.schema, json{{"type", "soft"}}, "model.attention", {"type"});
  EXPECT_EQ(p["ratio"], 2);
  EXPECT_EQ(p["landmark"], "conv");
  EXPECT_EQ(p["inverse"], "newton");
  EXPECT_EQ(p["newton_iters"], 20);
  EXPECT_DOUBLE_EQ(p["reg"].get<double>(), 0.01);
  // a token count that does not match the context's grid
  auto m = make_attention({{"type", "soft"}}, ctx);
  Generator g(1);
  const Tensor q = uniform({1, 2, 16, 4}, g, -1.0f, 1.0f);
  EXPECT_THROW(m->forward(q, q, q), Error);
}

}  // namespace
