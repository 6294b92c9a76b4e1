// Forward values of the primitive ops against naive reference code written here in double
// precision, and the oneDNN gemm against its reference twin kernels::gemm_reference.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>
#include <tuple>
#include <vector>

#include "ops/gemm.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;

namespace {

std::string shape_str(const std::vector<int64_t>& d) { return Shape(d).str(); }

Tensor rand_tensor(const Shape& s, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Generator g(seed);
  return uniform(s, g, lo, hi);
}

// Element-wise |got - want| <= atol + rtol * scale[i] (scale defaults to |want|), and got
// is finite wherever want is. Reports the first few offenders.
void expect_close(const Tensor& got, const std::vector<double>& want, double atol, double rtol,
                  const std::vector<double>* scale = nullptr) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  int bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got.data()[i];
    const double w = want[i];
    if (std::isinf(w) && g == w) continue;
    if (std::isfinite(w)) {
      EXPECT_TRUE(std::isfinite(g)) << "element " << i << " is " << g << ", want " << w;
      if (!std::isfinite(g) && ++bad > 5) return;
    }
    const double s = scale ? (*scale)[i] : std::fabs(w);
    const double err = std::fabs(g - w);
    worst = std::max(worst, err);
    if (!(err <= atol + rtol * s)) {
      ADD_FAILURE() << "element " << i << ": got " << g << ", want " << w << " (|err| " << err << ", tol "
                    << atol + rtol * s << ")";
      if (++bad > 5) return;
    }
  }
}

void expect_all_finite(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    ASSERT_TRUE(std::isfinite(t.data()[i])) << "element " << i << " is " << t.data()[i];
  }
}

// ---- matmul against a naive triple loop ------------------------------------------------

struct MatmulCase {
  std::vector<int64_t> batch;  // batch dims of a (and of b unless shared)
  int64_t m, k, n;
  bool ta, tb, shared;
};

// op(A)[i, l] and op(B)[l, j] for stored layouts [.., M, K] / [.., K, M] and [.., K, N] / [.., N, K].
void check_matmul(const MatmulCase& c, uint64_t seed) {
  int64_t nb = 1;
  for (int64_t d : c.batch) nb *= d;
  std::vector<int64_t> da = c.batch, db = c.shared ? std::vector<int64_t>{} : c.batch;
  da.push_back(c.ta ? c.k : c.m);
  da.push_back(c.ta ? c.m : c.k);
  db.push_back(c.tb ? c.n : c.k);
  db.push_back(c.tb ? c.k : c.n);
  SCOPED_TRACE(shape_str(da) + (c.ta ? "^T" : "") + " x " + shape_str(db) + (c.tb ? "^T" : ""));
  const Tensor a = rand_tensor(Shape(da), seed), b = rand_tensor(Shape(db), seed + 1);
  const Tensor out = matmul(a, b, c.ta, c.tb);
  std::vector<int64_t> dout = c.batch;
  dout.push_back(c.m);
  dout.push_back(c.n);
  ASSERT_EQ(out.shape(), Shape(dout));
  const float* A = a.data();
  const float* B = b.data();
  std::vector<double> want, scale;
  for (int64_t p = 0; p < nb; ++p) {
    const float* Ap = A + p * c.m * c.k;
    const float* Bp = B + (c.shared ? 0 : p * c.k * c.n);
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double s = 0.0, sa = 0.0;
        for (int64_t l = 0; l < c.k; ++l) {
          const double av = c.ta ? Ap[l * c.m + i] : Ap[i * c.k + l];
          const double bv = c.tb ? Bp[j * c.k + l] : Bp[l * c.n + j];
          s += av * bv;
          sa += std::fabs(av * bv);
        }
        want.push_back(s);
        scale.push_back(sa);
      }
  }
  // float32 accumulation of k products: error a few ulps of the sum of |products|.
  expect_close(out, want, 1e-6, 1e-5, &scale);
}

TEST(MatmulReference, ShapesAndTransposes) {
  const std::vector<std::array<int64_t, 3>> mkn = {{1, 1, 1}, {17, 16, 17}, {65, 64, 192}, {3, 1, 5}, {1, 13, 1}};
  uint64_t seed = 1;
  for (const auto& s : mkn)
    for (int t = 0; t < 4; ++t) check_matmul({{}, s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0, false}, seed += 2);
}

TEST(MatmulReference, Batched) {
  uint64_t seed = 100;
  for (int t = 0; t < 4; ++t) {
    const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
    check_matmul({{3}, 5, 7, 6, ta, tb, false}, seed += 2);
    check_matmul({{2, 3}, 17, 16, 17, ta, tb, false}, seed += 2);
    check_matmul({{1}, 1, 1, 1, ta, tb, false}, seed += 2);
    // a batched, b shared (2-D)
    check_matmul({{3}, 5, 7, 6, ta, tb, true}, seed += 2);
    check_matmul({{2, 2}, 17, 16, 17, ta, tb, true}, seed += 2);
    check_matmul({{2}, 65, 64, 33, ta, tb, true}, seed += 2);
  }
}

// ---- kernels::gemm against kernels::gemm_reference ----------------------------------------

struct GemmCase {
  int64_t batch, m, n, k;
  bool ta, tb, shared, bias, acc;
};

void check_gemm(const GemmCase& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "batch " << c.batch << " m " << c.m << " n " << c.n << " k " << c.k
                                    << (c.ta ? " trans_a" : "") << (c.tb ? " trans_b" : "")
                                    << (c.shared ? " b_shared" : "") << (c.bias ? " bias" : "")
                                    << (c.acc ? " accumulate" : ""));
  const int64_t nb = c.shared ? 1 : c.batch;
  const Tensor a = rand_tensor(Shape{c.batch * c.m * c.k}, seed);
  const Tensor b = rand_tensor(Shape{nb * c.k * c.n}, seed + 1);
  const Tensor bias = rand_tensor(Shape{c.n}, seed + 2);
  const Tensor c0 = rand_tensor(Shape{c.batch * c.m * c.n}, seed + 3);  // the accumulate target
  Tensor got = c0.clone(), want = c0.clone();
  kernels::GemmArgs g;
  g.batch = c.batch, g.m = c.m, g.n = c.n, g.k = c.k;
  g.trans_a = c.ta, g.trans_b = c.tb, g.b_shared = c.shared, g.accumulate = c.acc;
  g.a = a.data(), g.b = b.data(), g.bias = c.bias ? bias.data() : nullptr;
  g.c = got.mutable_data();
  kernels::gemm(g);
  g.c = want.mutable_data();
  kernels::gemm_reference(g);
  // The error scale: the same product on absolute values.
  auto absolute = [](const Tensor& t) {
    Tensor r = t.clone();
    for (int64_t i = 0; i < r.numel(); ++i) r.mutable_data()[i] = std::fabs(r.data()[i]);
    return r;
  };
  const Tensor aa = absolute(a), ab = absolute(b), abias = absolute(bias);
  Tensor scale_t = absolute(c0);
  g.a = aa.data(), g.b = ab.data(), g.bias = c.bias ? abias.data() : nullptr, g.c = scale_t.mutable_data();
  kernels::gemm_reference(g);
  std::vector<double> w(want.values().begin(), want.values().end());
  std::vector<double> s(scale_t.values().begin(), scale_t.values().end());
  expect_close(got, w, 1e-6, 1e-5, &s);
}

TEST(GemmReference, AllFlagCombinations) {
  const std::vector<std::array<int64_t, 4>> sizes = {
      {1, 1, 1, 1}, {1, 17, 17, 16}, {1, 65, 192, 64}, {3, 5, 6, 7}, {2, 17, 16, 17}};
  uint64_t seed = 500;
  for (const auto& s : sizes)
    for (int f = 0; f < 32; ++f) {
      const bool shared = (f & 4) != 0;
      if (shared && s[0] == 1) continue;  // with one batch, shared is the plain case
      check_gemm({s[0], s[1], s[2], s[3], (f & 1) != 0, (f & 2) != 0, shared, (f & 8) != 0, (f & 16) != 0},
                 seed += 4);
    }
}

TEST(GemmReference, EmptyInnerDimension) {
  // k = 0: C = bias (or C += bias when accumulating); no oneDNN call.
  for (int f = 0; f < 4; ++f) check_gemm({2, 3, 4, 0, false, false, false, (f & 1) != 0, (f & 2) != 0}, 900 + f);
}

TEST(GemmReference, PrimitiveCacheIsReused) {
  // Shapes no other test uses, so the first call adds exactly one primitive.
  const Tensor a = rand_tensor(Shape{2 * 11 * 9}, 1), b = rand_tensor(Shape{9 * 3}, 2), bias = rand_tensor(Shape{3}, 3);
  Tensor c = zeros(Shape{2 * 11 * 3});
  kernels::GemmArgs g;
  g.batch = 2, g.m = 11, g.n = 3, g.k = 9, g.trans_a = true, g.b_shared = true;
  g.a = a.data(), g.b = b.data(), g.bias = bias.data(), g.c = c.mutable_data();
  const int64_t before = kernels::gemm_cache_size();
  kernels::gemm(g);
  const int64_t after_first = kernels::gemm_cache_size();
  EXPECT_LE(after_first, before + 1);
  for (int i = 0; i < 5; ++i) kernels::gemm(g);
  EXPECT_EQ(kernels::gemm_cache_size(), after_first) << "the same shape created new primitives";
  // New pointers, same geometry: still a hit.
  const Tensor a2 = rand_tensor(Shape{2 * 11 * 9}, 4);
  Tensor c2 = zeros(Shape{2 * 11 * 3});
  g.a = a2.data(), g.c = c2.mutable_data();
  kernels::gemm(g);
  EXPECT_EQ(kernels::gemm_cache_size(), after_first);
  // Another flag is another primitive.
  g.accumulate = true;
  kernels::gemm(g);
  EXPECT_LE(kernels::gemm_cache_size(), after_first + 1);

  // Through the op: the second forward of the same shapes adds nothing.
  const Tensor x = rand_tensor(Shape{3, 19, 23}, 5), y = rand_tensor(Shape{3, 23, 29}, 6);
  (void)matmul(x, y);
  const int64_t s1 = kernels::gemm_cache_size();
  (void)matmul(x, y);
  (void)matmul(rand_tensor(Shape{3, 19, 23}, 7), y);
  EXPECT_EQ(kernels::gemm_cache_size(), s1);
}

TEST(LinearReference, MatchesNaive) {
  for (bool with_bias : {false, true}) {
    SCOPED_TRACE(with_bias ? "bias" : "no bias");
    const Tensor x = rand_tensor(Shape{2, 5, 13}, 11), w = rand_tensor(Shape{7, 13}, 12), b = rand_tensor(Shape{7}, 13);
    const Tensor y = linear(x, w, with_bias ? b : Tensor());
    ASSERT_EQ(y.shape(), (Shape{2, 5, 7}));
    std::vector<double> want, scale;
    for (int64_t r = 0; r < 10; ++r)
      for (int64_t o = 0; o < 7; ++o) {
        double s = with_bias ? b.data()[o] : 0.0, sa = std::fabs(s);
        for (int64_t i = 0; i < 13; ++i) {
          const double p = static_cast<double>(x.data()[r * 13 + i]) * w.data()[o * 13 + i];
          s += p;
          sa += std::fabs(p);
        }
        want.push_back(s);
        scale.push_back(sa);
      }
    expect_close(y, want, 1e-6, 1e-5, &scale);
  }
}

// ---- softmax family ------------------------------------------------------------------------

std::vector<std::vector<float>> softmax_rows() {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<std::vector<float>> rows = {
      {0.0f},
      {1e4f},
      {-80.0f},
      {1.0f, 2.0f, 3.0f},
      {5.0f, 5.0f, 5.0f, 5.0f},
      {1e4f, 0.0f, 0.0f, 0.0f, 0.0f},
      {0.0f, 0.0f, -1e4f, 0.0f},
      {1e4f, -1e4f, 1e4f, 0.0f},
      {80.0f, -80.0f, 79.0f, 0.0f, 80.0f},
      {-80.0f, -80.0f, -80.0f, -79.5f},
      {100.0f, 99.0f, 98.0f},
      {-1e4f, -1e4f + 1.0f, -1e4f + 2.0f},
      {3e4f, -3e4f, 0.0f, 1.0f, 2.0f, 3.0f, 4.0f},
      {0.0f, -inf, 1.0f, -inf},  // masked entries
  };
  Generator g(42);
  for (int r = 0; r < 6; ++r) {  // ordinary rows of length 7 and 13
    std::vector<float> v(r < 3 ? 7 : 13);
    for (float& x : v) x = 4.0f * g.normal();
    rows.push_back(v);
  }
  return rows;
}

TEST(SoftmaxReference, StableForLargeMagnitudes) {
  for (const auto& row : softmax_rows()) {
    const int64_t n = static_cast<int64_t>(row.size());
    SCOPED_TRACE(::testing::PrintToString(row));
    // As [n] and as [2, 1, n] (two copies of the row): the last axis is the softmax axis.
    std::vector<float> two(row);
    two.insert(two.end(), row.begin(), row.end());
    for (const Tensor& x : {from_vector(Shape{n}, row), from_vector(Shape{2, 1, n}, two)}) {
      const Tensor s = softmax(x), ls = log_softmax(x);
      double m = -std::numeric_limits<double>::infinity();
      for (float v : row) m = std::max(m, static_cast<double>(v));
      double l = 0.0;
      for (float v : row) l += std::exp(static_cast<double>(v) - m);
      std::vector<double> ws, wls, scale;
      for (int64_t c = 0; c < x.numel() / n; ++c)
        for (float v : row) {
          ws.push_back(std::exp(static_cast<double>(v) - m) / l);
          wls.push_back(static_cast<double>(v) - m - std::log(l));
          // log_softmax subtracts a float LSE of magnitude ~|m| from a float x.
          scale.push_back(std::max(std::fabs(static_cast<double>(v)), std::fabs(m)));
        }
      expect_close(s, ws, 1e-7, 1e-5);
      expect_close(ls, wls, 1e-5, 1e-6, &scale);
      for (int64_t i = 0; i < s.numel(); ++i) {
        EXPECT_FALSE(std::isnan(s.data()[i])) << i;
        EXPECT_FALSE(std::isnan(ls.data()[i])) << i;
        EXPECT_FALSE(std::isinf(s.data()[i])) << i;
      }
    }
  }
}

TEST(SoftmaxReference, FullyMaskedRowGivesZerosNotNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = from_vector(Shape{2, 3}, {-inf, -inf, -inf, 0.0f, 1.0f, 2.0f});
  const Tensor s = softmax(x), ls = log_softmax(x);
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(s.at({0, j}), 0.0f);
    EXPECT_EQ(ls.at({0, j}), -inf);
  }
  EXPECT_NEAR(s.at({1, 0}) + s.at({1, 1}) + s.at({1, 2}), 1.0f, 1e-6f);
}

TEST(SoftmaxReference, RowsSumToOne) {
  Generator g(3);
  const Tensor x = randn(Shape{37, 61}, g, 0.0f, 30.0f);
  const Tensor s = softmax(x);
  expect_all_finite(s);
  for (int64_t r = 0; r < 37; ++r) {
    double t = 0.0;
    for (int64_t j = 0; j < 61; ++j) t += s.at({r, j});
    EXPECT_NEAR(t, 1.0, 1e-5) << "row " << r;
  }
}

// ---- layer_norm ----------------------------------------------------------------------------

std::vector<double> naive_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const int64_t D = x.shape()[-1], R = x.numel() / D;
  std::vector<double> y;
  for (int64_t r = 0; r < R; ++r) {
    const float* xr = x.data() + r * D;
    double m = 0.0, v = 0.0;
    for (int64_t j = 0; j < D; ++j) m += xr[j];
    m /= static_cast<double>(D);
    for (int64_t j = 0; j < D; ++j) v += (xr[j] - m) * (xr[j] - m);
    v /= static_cast<double>(D);
    for (int64_t j = 0; j < D; ++j) {
      double o = (xr[j] - m) / std::sqrt(v + eps);
      if (gamma.defined()) o *= gamma.data()[j];
      if (beta.defined()) o += beta.data()[j];
      y.push_back(o);
    }
  }
  return y;
}

TEST(LayerNormReference, MatchesNaive) {
  const std::vector<Shape> shapes = {{3, 7}, {2, 3, 64}, {1, 13}, {5, 1}, {16}};
  uint64_t seed = 70;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(s.str());
    Generator g(seed++);
    const Tensor x = randn(s, g, 0.5f, 2.0f);
    const Tensor gamma = rand_tensor(Shape{s[-1]}, seed++, 0.5f, 1.5f), beta = rand_tensor(Shape{s[-1]}, seed++);
    expect_close(layer_norm(x, gamma, beta), naive_layer_norm(x, gamma, beta, 1e-5), 1e-5, 1e-5);
    expect_close(layer_norm(x, Tensor(), Tensor()), naive_layer_norm(x, Tensor(), Tensor(), 1e-5), 1e-5, 1e-5);
    expect_close(layer_norm(x, gamma, Tensor(), 0.1f), naive_layer_norm(x, gamma, Tensor(), 0.1f), 1e-5, 1e-5);
  }
}

TEST(LayerNormReference, LargeOffset) {
  // Rows of 1e4 + noise: a one-pass variance (E[x^2] - E[x]^2) loses everything here.
  // The input itself is quantised at ulp(1e4) ~ 1e-3; the reference sees the same floats.
  for (const int64_t D : {8, 64, 257}) {
    SCOPED_TRACE(D);
    Generator g(static_cast<uint64_t>(D));
    const Tensor x = randn(Shape{4, D}, g, 1e4f, 1.0f);
    const Tensor y = layer_norm(x, Tensor(), Tensor());
    expect_all_finite(y);
    expect_close(y, naive_layer_norm(x, Tensor(), Tensor(), 1e-5), 1e-4, 1e-4);
  }
}

TEST(LayerNormReference, BackwardMatchesNaive) {
  struct Case {
    Shape s;
    float offset;
  };
  const std::vector<Case> cases = {{{3, 7}, 0.0f}, {{2, 5, 64}, 0.0f}, {{4, 64}, 1e4f}, {{2, 33}, -3e3f}};
  uint64_t seed = 800;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.s << " offset " << c.offset);
    Generator gen(seed++);
    Tensor x = randn(c.s, gen, c.offset, 1.0f);
    const int64_t D = c.s[-1], R = x.numel() / D;
    Tensor gamma = rand_tensor(Shape{D}, seed++, 0.5f, 1.5f), beta = rand_tensor(Shape{D}, seed++);
    const Tensor g = rand_tensor(c.s, seed++);
    x.set_requires_grad(true);
    gamma.set_requires_grad(true);
    beta.set_requires_grad(true);
    layer_norm(x, gamma, beta).backward(g);
    std::vector<double> dx, dgamma(static_cast<size_t>(D), 0.0), dbeta(static_cast<size_t>(D), 0.0), dx_scale,
        dgamma_scale(static_cast<size_t>(D), 0.0);
    for (int64_t r = 0; r < R; ++r) {
      const float* xr = x.data() + r * D;
      const float* gr = g.data() + r * D;
      double m = 0.0, v = 0.0;
      for (int64_t j = 0; j < D; ++j) m += xr[j];
      m /= static_cast<double>(D);
      for (int64_t j = 0; j < D; ++j) v += (xr[j] - m) * (xr[j] - m);
      v /= static_cast<double>(D);
      const double rs = 1.0 / std::sqrt(v + 1e-5);
      double s1 = 0.0, s2 = 0.0;
      for (int64_t j = 0; j < D; ++j) {
        const double xh = (xr[j] - m) * rs, dn = static_cast<double>(gr[j]) * gamma.data()[j];
        s1 += dn;
        s2 += dn * xh;
        dgamma[static_cast<size_t>(j)] += gr[j] * xh;
        dgamma_scale[static_cast<size_t>(j)] += std::fabs(gr[j] * xh);
        dbeta[static_cast<size_t>(j)] += gr[j];
      }
      s1 /= static_cast<double>(D);
      s2 /= static_cast<double>(D);
      for (int64_t j = 0; j < D; ++j) {
        const double xh = (xr[j] - m) * rs, dn = static_cast<double>(gr[j]) * gamma.data()[j];
        dx.push_back(rs * (dn - s1 - xh * s2));
        dx_scale.push_back(rs * (std::fabs(dn) + std::fabs(s1) + std::fabs(xh * s2)));
      }
    }
    {
      SCOPED_TRACE("dx");
      expect_close(x.grad(), dx, 1e-5, 1e-4, &dx_scale);
    }
    {
      SCOPED_TRACE("dgamma");
      expect_close(gamma.grad(), dgamma, 1e-5, 1e-5, &dgamma_scale);
    }
    {
      SCOPED_TRACE("dbeta");
      expect_close(beta.grad(), dbeta, 1e-5, 1e-5);
    }
  }
}

// ---- cross_entropy -------------------------------------------------------------------------

TEST(CrossEntropyReference, MatchesFormula) {
  struct Case {
    int64_t n, c;
    float eps, scale;
  };
  const std::vector<Case> cases = {{4, 5, 0.0f, 3.0f},  {4, 5, 0.1f, 3.0f}, {1, 1, 0.0f, 1.0f},
                                   {7, 13, 0.2f, 1.0f}, {3, 7, 0.0f, 1e4f}, {3, 7, 0.1f, 80.0f}};
  uint64_t seed = 300;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "[" << c.n << ", " << c.c << "] eps " << c.eps << " scale " << c.scale);
    const Tensor z = rand_tensor(Shape{c.n, c.c}, seed++, -c.scale, c.scale);
    Generator g(seed++);
    std::vector<int32_t> labels(static_cast<size_t>(c.n));
    for (auto& l : labels) l = static_cast<int32_t>(g.below(static_cast<uint64_t>(c.c)));
    const float loss = cross_entropy(z, labels, c.eps).item();
    ASSERT_TRUE(std::isfinite(loss));
    // LSE - (1 - eps) z_y - eps/C sum z, and the same as -sum_k q_k log p_k.
    double want = 0.0, want_q = 0.0, magnitude = 0.0;
    for (int64_t n = 0; n < c.n; ++n) {
      const float* zr = z.data() + n * c.c;
      double m = zr[0];
      for (int64_t k = 1; k < c.c; ++k) m = std::max(m, static_cast<double>(zr[k]));
      double l = 0.0, zs = 0.0;
      for (int64_t k = 0; k < c.c; ++k) {
        l += std::exp(zr[k] - m);
        zs += zr[k];
        magnitude = std::max(magnitude, std::fabs(static_cast<double>(zr[k])));
      }
      const double lse = m + std::log(l);
      const int32_t y = labels[static_cast<size_t>(n)];
      want += lse - (1.0 - c.eps) * zr[y] - c.eps / static_cast<double>(c.c) * zs;
      for (int64_t k = 0; k < c.c; ++k) {
        const double q = (k == y ? 1.0 - c.eps : 0.0) + c.eps / static_cast<double>(c.c);
        want_q -= q * (zr[k] - lse);
      }
    }
    want /= static_cast<double>(c.n);
    want_q /= static_cast<double>(c.n);
    EXPECT_NEAR(want, want_q, 1e-9 * std::max(1.0, magnitude));
    // float LSE and logits of magnitude `magnitude`: a few ulps of that.
    EXPECT_NEAR(loss, want, 1e-5 + 1e-6 * magnitude);
  }
}

TEST(CrossEntropyReference, EqualsNegatedLogSoftmaxPick) {
  const Tensor z = rand_tensor(Shape{6, 9}, 77, -5.0f, 5.0f);
  const std::vector<int32_t> labels = {0, 8, 3, 3, 5, 1};
  const Tensor ls = log_softmax(z);
  double want = 0.0;
  for (int64_t n = 0; n < 6; ++n) want -= ls.at({n, labels[static_cast<size_t>(n)]});
  EXPECT_NEAR(cross_entropy(z, labels).item(), want / 6.0, 1e-5);
}

// ---- broadcasting element-wise ops --------------------------------------------------------

// Naive numpy broadcasting: out[idx] = f(a[idx mapped], b[idx mapped]), in float like the op.
template <class F>
std::vector<float> naive_broadcast(const Tensor& a, const Tensor& b, const Shape& out, F f) {
  const int64_t r = out.rank();
  auto index_in = [&](const Shape& s, const std::vector<int64_t>& idx) {
    int64_t flat = 0;
    for (int64_t i = 0; i < s.rank(); ++i) {
      const int64_t oi = i + (r - s.rank());
      const int64_t d = s.dims()[static_cast<size_t>(i)];
      flat = flat * d + (d == 1 ? 0 : idx[static_cast<size_t>(oi)]);
    }
    return flat;
  };
  std::vector<float> res;
  std::vector<int64_t> idx(static_cast<size_t>(r), 0);
  for (int64_t e = 0; e < out.numel(); ++e) {
    int64_t rem = e;
    for (int64_t d = r - 1; d >= 0; --d) {
      idx[static_cast<size_t>(d)] = rem % out.dims()[static_cast<size_t>(d)];
      rem /= out.dims()[static_cast<size_t>(d)];
    }
    res.push_back(f(a.data()[index_in(a.shape(), idx)], b.data()[index_in(b.shape(), idx)]));
  }
  return res;
}

TEST(BroadcastReference, AddSubMulDivMatchNaiveLoops) {
  const std::vector<std::tuple<Shape, Shape, Shape>> cases = {
      {{3, 4}, {3, 4}, {3, 4}},        {{}, {3, 4}, {3, 4}},           {{3, 4}, {}, {3, 4}},
      {{4, 3}, {3}, {4, 3}},           {{3}, {4, 3}, {4, 3}},          {{2, 1, 3}, {2, 4, 1}, {2, 4, 3}},
      {{2, 3, 4}, {3, 1}, {2, 3, 4}},  {{1}, {2, 3}, {2, 3}},          {{5, 1, 1, 3}, {4, 1}, {5, 1, 4, 3}},
      {{7, 1, 13}, {1, 3, 1}, {7, 3, 13}}, {{1, 1}, {1}, {1, 1}},      {{}, {}, {}},
      {{300, 70}, {70}, {300, 70}},    {{300, 1}, {1, 70}, {300, 70}},  // big enough to run in parallel
  };
  uint64_t seed = 1;
  for (const auto& [sa, sb, so] : cases) {
    SCOPED_TRACE(sa.str() + " and " + sb.str());
    EXPECT_EQ(broadcast_shapes(sa, sb), so);
    const Tensor a = rand_tensor(sa, seed++), b = rand_tensor(sb, seed++, 0.5f, 2.0f);
    const std::pair<Tensor, std::vector<float>> results[] = {
        {add(a, b), naive_broadcast(a, b, so, [](float x, float y) { return x + y; })},
        {sub(a, b), naive_broadcast(a, b, so, [](float x, float y) { return x - y; })},
        {mul(a, b), naive_broadcast(a, b, so, [](float x, float y) { return x * y; })},
        {div(a, b), naive_broadcast(a, b, so, [](float x, float y) { return x / y; })},
    };
    for (int op = 0; op < 4; ++op) {
      const auto& [got, want] = results[op];
      ASSERT_EQ(got.shape(), so) << "op " << op;
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(got.data()[i], want[i]) << "op " << op << " element " << i;  // the same float operation
      }
    }
  }
}

TEST(UnaryReference, MatchesStdMath) {
  Generator g(5);
  const Tensor x = uniform(Shape{101}, g, -6.0f, 6.0f);
  const Tensor pos = uniform(Shape{101}, g, 0.01f, 10.0f);
  struct U {
    const char* name;
    Tensor y;
    double (*f)(double);
    const Tensor* in;
  };
  const U cases[] = {
      {"exp", exp(x), [](double v) { return std::exp(v); }, &x},
      {"log", log(pos), [](double v) { return std::log(v); }, &pos},
      {"sqrt", sqrt(pos), [](double v) { return std::sqrt(v); }, &pos},
      {"tanh", tanh(x), [](double v) { return std::tanh(v); }, &x},
      {"sigmoid", sigmoid(x), [](double v) { return 1.0 / (1.0 + std::exp(-v)); }, &x},
      {"softplus", softplus(x), [](double v) { return std::log1p(std::exp(v)); }, &x},
      {"relu", relu(x), [](double v) { return v > 0 ? v : 0.0; }, &x},
      {"elu", elu(x), [](double v) { return v > 0 ? v : std::expm1(v); }, &x},
      {"gelu_tanh", gelu(x, GeluKind::Tanh),
       [](double v) { return 0.5 * v * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (v + 0.044715 * v * v * v))); }, &x},
      {"gelu_exact", gelu(x, GeluKind::Exact), [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); },
       &x},
      {"neg", neg(x), [](double v) { return -v; }, &x},
      {"scale", scale(x, 2.5f), [](double v) { return 2.5 * v; }, &x},
      {"add_scalar", add_scalar(x, 3.0f), [](double v) { return v + 3.0; }, &x},
  };
  for (const U& u : cases) {
    SCOPED_TRACE(u.name);
    std::vector<double> want;
    for (float v : u.in->values()) want.push_back(u.f(v));
    expect_close(u.y, want, 1e-6, 2e-6);
  }
  // Extreme inputs stay finite where the function is.
  const Tensor big = from_vector(Shape{4}, {-100.0f, -30.0f, 30.0f, 100.0f});
  for (const Tensor& y : {sigmoid(big), softplus(big), tanh(big), gelu(big), gelu(big, GeluKind::Exact), elu(big)})
    expect_all_finite(y);
  expect_close(softplus(big), {0.0, std::log1p(std::exp(-30.0)), 30.0, 100.0}, 1e-6, 1e-6);
}

// ---- reductions ----------------------------------------------------------------------------

TEST(ReductionReference, SumMeanMaxOverEachAxis) {
  const std::vector<Shape> shapes = {{13}, {3, 4, 5}, {1, 7, 1}, {2, 3, 4, 5}, {200, 33}};
  uint64_t seed = 40;
  for (const Shape& s : shapes) {
    const Tensor x = rand_tensor(s, seed++, -2.0f, 2.0f);
    for (int64_t axis = 0; axis < s.rank(); ++axis)
      for (bool keep : {false, true}) {
        SCOPED_TRACE(::testing::Message() << s << " axis " << axis << (keep ? " keepdim" : ""));
        int64_t outer = 1, inner = 1;
        for (int64_t i = 0; i < axis; ++i) outer *= s[i];
        for (int64_t i = axis + 1; i < s.rank(); ++i) inner *= s[i];
        const int64_t n = s[axis];
        std::vector<double> ws, wm, wx, scale;
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t i = 0; i < inner; ++i) {
            double t = 0.0, ta = 0.0, mx = -std::numeric_limits<double>::infinity();
            for (int64_t j = 0; j < n; ++j) {
              const double v = x.data()[(o * n + j) * inner + i];
              t += v;
              ta += std::fabs(v);
              mx = std::max(mx, v);
            }
            ws.push_back(t);
            wm.push_back(t / static_cast<double>(n));
            wx.push_back(mx);
            scale.push_back(ta);
          }
        std::vector<int64_t> od = s.dims();
        if (keep) od[static_cast<size_t>(axis)] = 1;
        else od.erase(od.begin() + axis);
        const Tensor ys = sum(x, axis, keep), ym = mean(x, axis, keep), yx = max(x, axis, keep);
        EXPECT_EQ(ys.shape(), Shape(od));
        EXPECT_EQ(ym.shape(), Shape(od));
        EXPECT_EQ(yx.shape(), Shape(od));
        expect_close(ys, ws, 1e-6, 1e-6, &scale);
        std::vector<double> mscale;
        for (double v : scale) mscale.push_back(v / static_cast<double>(n));
        expect_close(ym, wm, 1e-6, 1e-6, &mscale);
        expect_close(yx, wx, 0.0, 0.0);  // max is exact
        // negative axis: the same result
        const Tensor yn = sum(x, axis - s.rank(), keep);
        ASSERT_EQ(yn.shape(), ys.shape());
        for (int64_t i = 0; i < yn.numel(); ++i) EXPECT_EQ(yn.data()[i], ys.data()[i]);
      }
    // over all elements
    double t = 0.0, ta = 0.0, mx = -std::numeric_limits<double>::infinity();
    for (float v : x.values()) t += v, ta += std::fabs(v), mx = std::max(mx, static_cast<double>(v));
    EXPECT_EQ(sum(x).shape(), Shape{});
    EXPECT_NEAR(sum(x).item(), t, 1e-6 * ta + 1e-6);
    EXPECT_NEAR(mean(x).item(), t / static_cast<double>(x.numel()), (1e-6 * ta + 1e-6) / static_cast<double>(x.numel()));
    EXPECT_EQ(max(x).item(), static_cast<float>(mx));
  }
}

TEST(ReductionReference, MaxPropagatesNaNAndPicksFirstMaximum) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(max(from_vector(Shape{3}, {1.0f, nan, 2.0f})).item()));
  // Ties: the gradient goes to the first maximal element.
  Tensor x = from_vector(Shape{4}, {1.0f, 3.0f, 3.0f, 0.0f});
  x.set_requires_grad(true);
  max(x).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{0.0f, 1.0f, 0.0f, 0.0f}));
}

// ---- shape ops -----------------------------------------------------------------------------

TEST(ShapeOpsReference, PermuteSliceConcatIndexSelect) {
  const Tensor x = rand_tensor(Shape{2, 3, 4, 5}, 8);
  const std::vector<int64_t> order = {2, 0, 3, 1};
  const Tensor p = permute(x, order);
  ASSERT_EQ(p.shape(), (Shape{4, 2, 5, 3}));
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t c = 0; c < 4; ++c)
        for (int64_t d = 0; d < 5; ++d) ASSERT_EQ(p.at({c, a, d, b}), x.at({a, b, c, d}));
  const Tensor t = transpose(x, 1, -1);
  ASSERT_EQ(t.shape(), (Shape{2, 5, 4, 3}));
  EXPECT_EQ(t.at({1, 4, 2, 0}), x.at({1, 0, 2, 4}));

  const Tensor s = slice(x, 2, 1, 3);
  ASSERT_EQ(s.shape(), (Shape{2, 3, 2, 5}));
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t c = 0; c < 2; ++c) EXPECT_EQ(s.at({a, 2, c, 4}), x.at({a, 2, c + 1, 4}));
  EXPECT_EQ(slice(x, 1, 3, 3).shape(), (Shape{2, 0, 4, 5}));

  const Tensor y = rand_tensor(Shape{2, 1, 4, 5}, 9);
  const Tensor c = concat({x, y, x}, 1);
  ASSERT_EQ(c.shape(), (Shape{2, 7, 4, 5}));
  EXPECT_EQ(c.at({1, 2, 3, 4}), x.at({1, 2, 3, 4}));
  EXPECT_EQ(c.at({1, 3, 3, 4}), y.at({1, 0, 3, 4}));
  EXPECT_EQ(c.at({0, 6, 1, 2}), x.at({0, 2, 1, 2}));

  const std::vector<int32_t> idx = {1, 0, 1};
  const Tensor r = index_select(x, idx, Shape{3});
  ASSERT_EQ(r.shape(), (Shape{3, 3, 4, 5}));
  EXPECT_EQ(r.at({0, 2, 3, 1}), x.at({1, 2, 3, 1}));
  EXPECT_EQ(r.at({1, 2, 3, 1}), x.at({0, 2, 3, 1}));

  const Tensor rs = reshape(x, Shape{6, 20});
  EXPECT_TRUE(rs.same_storage(x));
  EXPECT_EQ(rs.at({5, 19}), x.at({1, 2, 3, 4}));
}

}  // namespace
