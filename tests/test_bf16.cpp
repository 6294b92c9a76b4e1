// bf16 mixed precision (softlab/precision.hpp): the rounding, the GEMM against the maths of
// rounded operands, every non-GEMM op unchanged, every attention module and head in a whole
// model against fp32, training, resuming across precisions, and the errors where the CPU
// lacks bf16.
//
// Where the tolerances come from. bfloat16 keeps 8 significant bits (7 stored), so rounding
// to nearest has a relative error of at most u = 2^-8. A product a*b of two rounded
// operands is off by at most (2u + u^2)|a b|, so a dot product of K terms, accumulated in
// f32, satisfies elementwise
//     |C_bf16 - C_fp32| <= (2u + u^2 + 2 (K + 2) 2^-24) (|A||B|)_ij,
// the last term covering f32 accumulation in both results. Against the exact product of
// the rounded operands only the accumulation term remains. Through a whole model the
// errors of the chained products mix with non-linear maps, and no elementwise bound holds;
// there the test bounds the normwise relative error: each product on the path contributes
// about u * sqrt(2/3) ~ 0.8u for rounding errors of random sign (two operands, each off by
// a uniform fraction of u), and the test allows 2u per product on the path.
// Tests that need bf16 hardware skip with a message on CPUs without it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <vector>

#include "cli_run.hpp"
#include "attention/bf16_pairs.hpp"
#include "ops/gemm.hpp"
#include "softlab/attention.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

constexpr double kU = 1.0 / 256.0;  // bf16 unit roundoff, 2^-8

#define SKIP_WITHOUT_BF16() \
  if (!cpu_has_bf16()) GTEST_SKIP() << "this CPU cannot run bf16 products (bf16 support: " << bf16_support() << ")"

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

std::vector<float> random_vec(int64_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Generator g(seed);
  const Tensor t = uniform(Shape{n}, g, lo, hi);
  return t.to_vector();
}

// ---- rounding ------------------------------------------------------------------------------

TEST(Bf16Rounding, NearestEvenOnCraftedValues) {
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even neighbour (1).
  EXPECT_EQ(round_to_bf16(1.0f + 0x1p-8f), 1.0f);
  // 1 + 3*2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6.
  EXPECT_EQ(round_to_bf16(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);
  // Just above a tie rounds up, just below rounds down.
  EXPECT_EQ(round_to_bf16(from_bits(bits(1.0f + 0x1p-8f) + 1)), 1.0f + 0x1p-7f);
  EXPECT_EQ(round_to_bf16(from_bits(bits(1.0f + 0x1p-8f) - 1)), 1.0f);
  EXPECT_EQ(round_to_bf16(-1.0f - 3 * 0x1p-8f), -1.0f - 0x1p-6f);  // symmetric in sign
  EXPECT_EQ(round_to_bf16(0.0f), 0.0f);
  EXPECT_EQ(bits(round_to_bf16(-0.0f)), bits(-0.0f));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(round_to_bf16(inf), inf);
  EXPECT_EQ(round_to_bf16(-inf), -inf);
  // The largest float is nearer 2^128 than the largest bf16: it rounds to infinity, as in
  // oneDNN and PyTorch.
  EXPECT_EQ(round_to_bf16(std::numeric_limits<float>::max()), inf);
  // A NaN stays a NaN (rounding its bits would turn a low-payload NaN into infinity).
  EXPECT_TRUE(std::isnan(round_to_bf16(from_bits(0x7F800001u))));
  EXPECT_TRUE(std::isnan(round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  // Subnormals round on the same grid.
  EXPECT_EQ(round_to_bf16(from_bits(0x00008000u)), 0.0f);  // a tie below an even 0
  EXPECT_EQ(round_to_bf16(from_bits(0x00018000u)), from_bits(0x00020000u));
}

TEST(Bf16Rounding, BulkConversionMatchesScalarAndBound) {
  std::vector<float> x = random_vec(10007, 5, -1e3f, 1e3f);
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  x.push_back(-std::numeric_limits<float>::infinity());
  std::vector<unsigned short> h(x.size());
  to_bf16(x.data(), h.data(), static_cast<long>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const float r = from_bits(static_cast<uint32_t>(h[i]) << 16);
    const float s = round_to_bf16(x[i]);
    ASSERT_EQ(bits(r), bits(s)) << "element " << i << " = " << x[i];
    if (std::isfinite(x[i])) {
      ASSERT_LE(std::fabs(r - x[i]), kU * std::fabs(x[i])) << x[i];
    }
  }
}

// ---- GEMM --------------------------------------------------------------------------------

struct GemmCase {
  int64_t batch, m, n, k;
  bool ta, tb, shared, bias, accumulate;
};

// The elementwise bounds of the header, against fp32 and against the exact product of
// the rounded operands, for one layout of the product.
void check_gemm(const GemmCase& c) {
  SCOPED_TRACE(::testing::Message() << "batch " << c.batch << " m " << c.m << " n " << c.n << " k " << c.k << " ta "
                                    << c.ta << " tb " << c.tb << " shared " << c.shared << " bias " << c.bias
                                    << " acc " << c.accumulate);
  const int64_t nb = c.shared ? 1 : c.batch;
  const std::vector<float> A = random_vec(c.batch * c.m * c.k, 11), B = random_vec(nb * c.k * c.n, 12);
  const std::vector<float> bias = random_vec(c.n, 13), C0 = random_vec(c.batch * c.m * c.n, 14);
  std::vector<float> c32 = C0, c16 = C0;
  kernels::GemmArgs g;
  g.batch = c.batch, g.m = c.m, g.n = c.n, g.k = c.k, g.trans_a = c.ta, g.trans_b = c.tb, g.b_shared = c.shared;
  g.accumulate = c.accumulate, g.a = A.data(), g.b = B.data(), g.bias = c.bias ? bias.data() : nullptr;
  g.c = c32.data();
  kernels::gemm(g);
  {
    PrecisionGuard bf16(Precision::bf16);
    g.c = c16.data();
    kernels::gemm(g);
  }
  int differ = 0;
  for (int64_t p = 0; p < c.batch; ++p)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double exact_rounded = 0.0, abs_sum = 0.0, abs_sum_rounded = 0.0;
        for (int64_t l = 0; l < c.k; ++l) {
          const float a = c.ta ? A[(p * c.k + l) * c.m + i] : A[(p * c.m + i) * c.k + l];
          const int64_t pb = c.shared ? 0 : p;
          const float b = c.tb ? B[(pb * c.n + j) * c.k + l] : B[(pb * c.k + l) * c.n + j];
          exact_rounded += static_cast<double>(round_to_bf16(a)) * round_to_bf16(b);
          abs_sum += std::fabs(static_cast<double>(a) * b);
          abs_sum_rounded += std::fabs(static_cast<double>(round_to_bf16(a)) * round_to_bf16(b));
        }
        const int64_t o = (p * c.m + i) * c.n + j;
        double extra = 0.0;  // bias and accumulated C are added in f32 in both modes
        if (c.bias) extra += bias[j];
        if (c.accumulate) extra += C0[o];
        const double acc = 2.0 * (c.k + 2) * 0x1p-24 * (abs_sum_rounded + std::fabs(extra));
        EXPECT_LE(std::fabs(c16[o] - (exact_rounded + extra)), acc) << "element " << o << " vs rounded operands";
        const double bound = (2 * kU + kU * kU) * abs_sum + 2.0 * (c.k + 2) * 0x1p-24 * (abs_sum + std::fabs(extra));
        EXPECT_LE(std::fabs(static_cast<double>(c16[o]) - c32[o]), bound) << "element " << o << " vs fp32";
        differ += c16[o] != c32[o];
      }
  EXPECT_GT(differ, 0) << "bf16 mode gave the fp32 result bit for bit: the bf16 path was not taken";
}

TEST(Bf16Gemm, IsTheProductOfRoundedOperands) {
  SKIP_WITHOUT_BF16();
  const GemmCase cases[] = {
      {1, 37, 29, 64, false, false, false, false, false},   // plain
      {1, 53, 24, 33, false, true, true, true, false},      // linear: x W^T + b
      {1, 24, 33, 53, true, false, false, false, false},    // weight gradient: g^T x
      {1, 16, 20, 40, false, false, false, true, true},     // with bias and C +=
      {3, 17, 16, 17, false, true, false, false, false},    // batched q k^T
      {3, 17, 17, 16, false, false, false, false, false},   // batched p v
      {4, 9, 7, 300, true, true, false, false, false},      // both transposed, long K
      {5, 6, 11, 8, false, false, true, false, true},       // B shared by the batch
  };
  for (const auto& c : cases) check_gemm(c);
}

// The linear op in bf16 (forward and both gradients) against its maths on rounded operands;
// the bias gradient is a column sum in f32 and does not change at all.
TEST(Bf16Gemm, LinearForwardAndBackward) {
  SKIP_WITHOUT_BF16();
  const int64_t rows = 45, in = 24, out = 19;
  auto run = [&](Precision p) {
    PrecisionGuard guard(p);
    Generator g(21);
    Tensor x = uniform({rows, in}, g, -1, 1), w = uniform({out, in}, g, -1, 1), b = uniform({out}, g, -1, 1);
    for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
    const Tensor up = uniform({rows, out}, g, -1, 1);
    Tensor y = linear(x, w, b);
    y.backward(up);
    return std::vector<std::vector<float>>{y.to_vector(),  x.grad().to_vector(), w.grad().to_vector(),
                                           b.grad().to_vector(), up.to_vector(), x.to_vector(),
                                           w.to_vector(), b.to_vector()};
  };
  const auto f = run(Precision::fp32), h = run(Precision::bf16);
  const auto& X = f[5];
  const auto& W = f[6];
  const auto& G = f[4];
  const auto& Bias = f[7];
  auto r = [](float v) { return static_cast<double>(round_to_bf16(v)); };
  auto check = [&](const char* what, int64_t M, int64_t N, int64_t K, const std::vector<float>& got,
                   const std::function<std::pair<float, float>(int64_t, int64_t, int64_t)>& ab, bool with_bias) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0.0, a_abs = 0.0;
        for (int64_t l = 0; l < K; ++l) {
          const auto [a, b] = ab(i, j, l);
          s += r(a) * r(b);
          a_abs += std::fabs(r(a) * r(b));
        }
        const double bias = with_bias ? Bias[static_cast<size_t>(j)] : 0.0;  // added in f32
        const double want = s + bias;
        EXPECT_LE(std::fabs(got[static_cast<size_t>(i * N + j)] - want), 2.0 * (K + 2) * 0x1p-24 * (a_abs + std::fabs(bias)))
            << what << " [" << i << "," << j << "]";
      }
  };
  check("y = x W^T + b", rows, out, in, h[0], [&](int64_t i, int64_t j, int64_t l) {
    return std::pair{X[i * in + l], W[j * in + l]};
  }, true);
  check("dx = g W", rows, in, out, h[1], [&](int64_t i, int64_t j, int64_t l) {
    return std::pair{G[i * out + l], W[l * in + j]};
  }, false);
  check("dW = g^T x", out, in, rows, h[2], [&](int64_t i, int64_t j, int64_t l) {
    return std::pair{G[l * out + i], X[l * in + j]};
  }, false);
  EXPECT_EQ(h[3], f[3]) << "the bias gradient is an f32 column sum in both precisions";
  EXPECT_NE(h[0], f[0]) << "bf16 mode gave the fp32 output: the bf16 path was not taken";
}

// Everything but the products stays f32: the same bits in both modes. Linear and MALA
// attention keep their products in f32/double inside their chunked kernel.
TEST(Bf16Gemm, OtherOpsAreUnchanged) {
  SKIP_WITHOUT_BF16();
  Generator g(31);
  const Tensor x = uniform({6, 5, 16}, g, -2, 2), gamma = uniform({16}, g, 0.5, 1.5), beta = uniform({16}, g, -1, 1);
  const Tensor q = uniform({2, 2, 9, 8}, g, -1, 1), k = uniform({2, 2, 9, 8}, g, -1, 1), v = uniform({2, 2, 9, 8}, g, -1, 1);
  auto all = [&] {
    std::vector<std::vector<float>> out;
    out.push_back(layer_norm(x, gamma, beta).to_vector());
    out.push_back(softmax(x).to_vector());
    out.push_back(gelu(x).to_vector());
    AttentionContext ctx;
    ctx.dim = 16, ctx.heads = 2, ctx.head_dim = 8, ctx.seq_len = 9;
    Generator init(1);
    ctx.init = &init;
    for (const char* type : {"linear", "mala"}) {
      auto m = make_attention(json{{"type", type}}, ctx);
      out.push_back(m->forward(q, k, v).to_vector());
    }
    return out;
  };
  const auto f = all();
  PrecisionGuard bf16(Precision::bf16);
  EXPECT_EQ(all(), f);
}

// ---- the attention kernels' bf16 products ------------------------------------------------

// Normwise relative error ||a - b|| / ||b||.
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0.0, n = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    n += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(d / std::max(n, 1e-300));
}


namespace pairs = attention_kernel::bf16;

// Packing rounds each value once, to the bits round_to_bf16 gives, and pads an odd count
// with zero.
TEST(Bf16Pairs, PackingRoundsEachValueOnce) {
  if (!pairs::cpu_has_dot_product()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  const int64_t rows = 5, n = 7, ldx = 9;
  const std::vector<float> x = random_vec(rows * ldx, 17, -3.0f, 3.0f);
  auto half = [](pairs::pair_t w, int hi) { return from_bits((hi ? w >> 16 : w & 0xFFFFu) << 16); };
  std::vector<pairs::pair_t> in_rows(rows * 4, 0xDEADBEEFu), of_rows(3 * n, 0xDEADBEEFu);
  pairs::pack_pairs_in_rows(x.data(), ldx, rows, n, in_rows.data(), 4, 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t p = 0; p < 4; ++p) {
      EXPECT_EQ(half(in_rows[r * 4 + p], 0), round_to_bf16(x[r * ldx + 2 * p]));
      EXPECT_EQ(half(in_rows[r * 4 + p], 1), 2 * p + 1 < n ? round_to_bf16(x[r * ldx + 2 * p + 1]) : 0.0f);
    }
  pairs::pack_pairs_of_rows(x.data(), ldx, rows, n, of_rows.data(), n, 1);
  for (int64_t p = 0; p < 3; ++p)
    for (int64_t c = 0; c < n; ++c) {
      EXPECT_EQ(half(of_rows[p * n + c], 0), round_to_bf16(x[2 * p * ldx + c]));
      EXPECT_EQ(half(of_rows[p * n + c], 1), 2 * p + 1 < rows ? round_to_bf16(x[(2 * p + 1) * ldx + c]) : 0.0f);
    }
}

// The dot-product kernel against the same pairs summed in double: only f32 accumulation
// error is allowed, 2(K + 2)·2^-24·Σ|a||b| with K = 2·pairs terms (the header's bound), on
// row counts that are not a multiple of 8 and column counts with a masked tail.
TEST(Bf16Pairs, ProductsAreTheSumOfRoundedPairs) {
  if (!pairs::cpu_has_dot_product()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  struct Case {
    int64_t pairs, rows, cols;
    float alpha;
    bool accumulate;
  };
  for (const Case c : {Case{8, 8, 32, 0.25f, false}, Case{4, 13, 23, 1.0f, true}, Case{33, 3, 5, -0.5f, false},
                       Case{1, 17, 16, 2.0f, true}}) {
    SCOPED_TRACE(::testing::Message() << "pairs " << c.pairs << " rows " << c.rows << " cols " << c.cols);
    const int64_t arows = (c.rows + 7) / 8 * 8;
    const std::vector<float> af = random_vec(arows * 2 * c.pairs, 21), bf = random_vec(2 * c.pairs * c.cols, 22);
    const std::vector<float> c0 = random_vec(c.rows * c.cols, 23);
    std::vector<pairs::pair_t> a(arows * c.pairs), b(c.pairs * c.cols);
    pairs::pack_pairs_in_rows(af.data(), 2 * c.pairs, arows, 2 * c.pairs, a.data(), c.pairs, 1);
    pairs::pack_pairs_of_rows(bf.data(), c.cols, 2 * c.pairs, c.cols, b.data(), c.cols, 1);
    std::vector<float> got = c0, want = c0;
    pairs::pair_products(a.data(), c.pairs, b.data(), c.cols, c.pairs, c.rows, c.cols, got.data(), c.cols, c.alpha,
                         c.accumulate);
    pairs::pair_products_reference(a.data(), c.pairs, b.data(), c.cols, c.pairs, c.rows, c.cols, want.data(), c.cols,
                                   c.alpha, c.accumulate);
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t j = 0; j < c.cols; ++j) {
        double abs_sum = 0.0;
        for (int64_t l = 0; l < 2 * c.pairs; ++l)
          abs_sum += std::fabs(static_cast<double>(round_to_bf16(af[r * 2 * c.pairs + l])) *
                               round_to_bf16(bf[l * c.cols + j]));
        const double extra = c.accumulate ? std::fabs(c0[r * c.cols + j]) : 0.0;
        const double bound = 2.0 * (2 * c.pairs + 2) * 0x1p-24 * (std::fabs(c.alpha) * abs_sum + extra);
        EXPECT_LE(std::fabs(static_cast<double>(got[r * c.cols + j]) - want[r * c.cols + j]), bound)
            << "row " << r << " col " << j;
      }
  }
}

// Every attention module on its own, forward and the three input gradients, bf16 against
// fp32, bidirectional and causal, on shapes with odd N and odd Dh (the pair layouts' padded
// tails). Normwise bound, 2u per product on the path as for the whole models: the output
// goes through 2 products (s q·k, p·v); a gradient through up to 5 (the logits, dO·v, then
// dx·k or dxᵀ·q, and the forward's 2 in o). Modules whose products are GEMMs (SOFT) or
// f32/double inside (linear, MALA) are checked too; the latter must not change at all.
double tensor_rel_error(const Tensor& a, const Tensor& b) { return rel_error(a.to_vector(), b.to_vector()); }

struct AttentionRun {
  Tensor o, dq, dk, dv;
};

AttentionRun run_attention(const std::string& type, bool causal, int64_t N, int64_t Dh, Precision p) {
  PrecisionGuard guard(p);
  AttentionContext ctx;
  const int64_t H = 2;
  ctx.dim = H * Dh, ctx.heads = H, ctx.head_dim = Dh, ctx.seq_len = N;
  ctx.prefix_tokens = 1, ctx.grid_h = 4, ctx.grid_w = (N - 1) / 4;  // a class token and a 4 x w grid
  Generator init(5);
  ctx.init = &init;
  json cfg{{"type", type}};
  if (causal) cfg["causal"] = true;
  auto m = make_attention(cfg, ctx);
  Generator g(7);
  Tensor q = uniform({2, H, N, Dh}, g, -1.5f, 1.5f), k = uniform({2, H, N, Dh}, g, -1.5f, 1.5f),
         v = uniform({2, H, N, Dh}, g, -1, 1);
  const Tensor w = uniform({2, H, N, Dh}, g, -1, 1);
  q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
  Tensor o = m->forward(q, k, v);
  sum(mul(o, w)).backward();
  return {o.detach(), q.grad(), k.grad(), v.grad()};
}

bool keeps_f32_inside(const std::string& type) { return type == "linear" || type == "mala"; }

class Bf16AttentionKernel : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16AttentionKernel, MatchesFp32) {
  SKIP_WITHOUT_BF16();
  const std::string type = GetParam();
  const Schema& schema = attention_registry().find(type)->schema;
  const bool has_causal =
      std::any_of(schema.begin(), schema.end(), [](const ParamSpec& s) { return s.name == "causal"; });
  double worst_o = 0.0, worst_g = 0.0;
  for (const bool causal : {false, true}) {
    if (causal && !has_causal) continue;
    for (const auto& [N, Dh] : {std::pair<int64_t, int64_t>{17, 16}, {33, 7}, {9, 64}}) {
      SCOPED_TRACE(::testing::Message() << type << (causal ? " causal" : "") << " N " << N << " Dh " << Dh);
      const AttentionRun f = run_attention(type, causal, N, Dh, Precision::fp32);
      const AttentionRun h = run_attention(type, causal, N, Dh, Precision::bf16);
      const double eo = tensor_rel_error(h.o, f.o);
      worst_o = std::max(worst_o, eo);
      EXPECT_LE(eo, 2 * kU * 2) << "output";
      const Tensor* pairs_of_grads[3][2] = {{&h.dq, &f.dq}, {&h.dk, &f.dk}, {&h.dv, &f.dv}};
      for (int i = 0; i < 3; ++i) {
        const Tensor &gh = *pairs_of_grads[i][0], &gf = *pairs_of_grads[i][1];
        ASSERT_EQ(gh.defined(), gf.defined()) << "gradient " << "qkv"[i];
        if (gf.defined()) {
          worst_g = std::max(worst_g, tensor_rel_error(gh, gf));
          EXPECT_LE(tensor_rel_error(gh, gf), 2 * kU * 5) << "gradient " << "qkv"[i];
        }
      }  // SOFT ties k to q: k has no gradient of its own
      if (keeps_f32_inside(type))
        EXPECT_EQ(eo, 0.0) << "linear and MALA keep their products in f32";
      else
        EXPECT_GT(eo, 0.0) << "bf16 gave the fp32 output bit for bit: the bf16 path was not taken";
    }
  }
  std::cout << "  " << type << ": worst normwise relative error: output " << worst_o << ", gradient " << worst_g
            << "; bounds " << 2 * kU * 2 << " and " << 2 * kU * 5 << "\n";
}
INSTANTIATE_TEST_SUITE_P(All, Bf16AttentionKernel, ::testing::ValuesIn(attention_registry().names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---- whole models --------------------------------------------------------------------------

struct ModelRun {
  std::vector<float> scores;
  double loss = 0.0;
  std::vector<std::pair<std::string, std::vector<float>>> grads;
};

ModelRun run_model(const json& cfg_json, Precision p) {
  PrecisionGuard guard(p);
  const Config cfg = parse_config(resolve_config(cfg_json));
  auto model = build_model(cfg, 10, 1000);
  model->eval();  // no dropout: the two runs see the same function
  Generator g(41);
  const Tensor images = uniform({8, 1, 28, 28}, g, -1.5f, 1.5f);
  std::vector<int32_t> labels;
  for (int i = 0; i < 8; ++i) labels.push_back(i % 10);
  HeadOutput out = model->forward(images, labels);
  out.loss.backward();
  ModelRun r;
  r.scores = out.scores.to_vector();
  r.loss = out.loss.item();
  for (const auto& prm : model->parameters())
    if (prm.tensor.grad().defined()) r.grads.emplace_back(prm.name, prm.tensor.grad().to_vector());
  return r;
}

json tiny_model(const std::string& attention, const std::string& head) {
  json j = test::tiny_config("unused", "unused");
  apply_override(j, "model.attention.type=" + attention);
  apply_override(j, "model.head.type=" + head);
  return j;
}

// Products from the input to the scores in the tiny ViT (depth 2): patch embedding, then per
// block qkv, output projection, MLP up and down, then the head: 10. A gradient's path runs
// forward and back again: up to 20.
constexpr double kForwardProducts = 10, kBackwardProducts = 20;

void compare_precisions(const json& cfg) {
  const ModelRun f = run_model(cfg, Precision::fp32), h = run_model(cfg, Precision::bf16);
  const double e_scores = rel_error(h.scores, f.scores);
  EXPECT_LE(e_scores, 2 * kU * kForwardProducts) << "scores";
  EXPECT_GT(e_scores, 0.0) << "bf16 gave the fp32 scores bit for bit: the bf16 path was not taken";
  EXPECT_LE(std::fabs(h.loss - f.loss), 2 * kU * kForwardProducts * std::max(1.0, std::fabs(f.loss))) << "loss";
  ASSERT_EQ(h.grads.size(), f.grads.size());
  double worst = 0.0;
  std::string worst_name;
  for (size_t i = 0; i < f.grads.size(); ++i) {
    ASSERT_EQ(h.grads[i].first, f.grads[i].first);
    const double e = rel_error(h.grads[i].second, f.grads[i].second);
    if (e > worst) worst = e, worst_name = f.grads[i].first;
    EXPECT_LE(e, 2 * kU * kBackwardProducts) << "gradient of " << f.grads[i].first;
  }
  ::testing::Test::RecordProperty("scores_rel_error", std::to_string(e_scores));
  ::testing::Test::RecordProperty("worst_grad_rel_error", worst_name + " " + std::to_string(worst));
  std::cout << "  normwise relative error: scores " << e_scores << ", worst gradient " << worst << " (" << worst_name
            << "); bounds " << 2 * kU * kForwardProducts << " and " << 2 * kU * kBackwardProducts << "\n";
}

class Bf16Attention : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16Attention, ModelMatchesFp32) {
  SKIP_WITHOUT_BF16();
  compare_precisions(tiny_model(GetParam(), "softmax"));
}
INSTANTIATE_TEST_SUITE_P(All, Bf16Attention, ::testing::ValuesIn(attention_registry().names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

class Bf16Head : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16Head, ModelMatchesFp32) {
  SKIP_WITHOUT_BF16();
  compare_precisions(tiny_model("softmax", GetParam()));
}
INSTANTIATE_TEST_SUITE_P(All, Bf16Head, ::testing::ValuesIn(head_registry().names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---- training, checkpoints, the command line ---------------------------------------------

TEST(Bf16Train, LearnsAndResumesInFp32) {
  SKIP_WITHOUT_BF16();
  const std::string root = test::temp_dir("bf16_train");
  test::write_learnable_mnist(root + "/data", 1000, 200);
  json j = test::tiny_config(root + "/data", root + "/run");
  apply_override(j, "train.precision=bf16");
  apply_override(j, "train.epochs=2");
  TrainOptions o;
  o.quiet = true;
  const TrainResult r = train(parse_config(resolve_config(j)), o);
  ASSERT_EQ(r.status, TrainStatus::Finished);
  EXPECT_EQ(r.summary["precision"], "bf16");
  // Chance is 0.1; fp32 reaches about 0.9 here in 3 epochs.
  EXPECT_GT(r.summary["test_accuracy"].get<double>(), 0.6) << r.summary.dump();
  // The checkpoint is f32: it resumes in fp32 for one more epoch.
  apply_override(j, "train.precision=fp32");
  apply_override(j, "train.epochs=3");
  o.resume = true;
  const TrainResult r2 = train(parse_config(resolve_config(j)), o);
  ASSERT_EQ(r2.status, TrainStatus::Finished);
  EXPECT_EQ(r2.summary["precision"], "fp32");
  EXPECT_GT(r2.summary["test_accuracy"].get<double>(), 0.6) << r2.summary.dump();
  fs::remove_all(root);
}

// Sets an environment variable for a scope (the CLI child inherits it).
struct EnvGuard {
  std::string name;
  EnvGuard(const char* n, const char* v) : name(n) { setenv(n, v, 1); }
  ~EnvGuard() { unsetenv(name.c_str()); }
};

TEST(Bf16Cli, RefusedWhereTheCpuLacksIt) {
  // oneDNN's own cap makes any CPU look like one without bf16, so this runs everywhere.
  const std::string dir = test::temp_dir("bf16_cli");
  const std::string config = std::string(SOFTLAB_SOURCE_DIR) + "/configs/fmnist_vit.json";
  EnvGuard cap("ONEDNN_MAX_CPU_ISA", "AVX2");
  const std::vector<std::vector<std::string>> runs = {
      {"validate", config, "--set", "train.precision=bf16"},
      {"bench", config, "--set", "train.precision=bf16", "--steps", "1", "--warmup", "0"}};
  for (const auto& args : runs) {
    const auto r = test::softlab_cli(args, dir);
    EXPECT_EQ(r.code, 2) << args[0] << ": " << r.err;
    EXPECT_NE(r.err.find("train.precision"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("AVX512-BF16"), std::string::npos) << "the message names what the CPU lacks: " << r.err;
  }
  // max_steps: if the refusal ever broke, the test would still end quickly.
  const auto t = test::softlab_cli(
      {"train", config, "--set", "train.precision=bf16", "--set", "train.max_steps=1", "--out", dir + "/run"}, dir);
  EXPECT_EQ(t.code, 2) << t.err;
  EXPECT_FALSE(fs::exists(dir + "/run")) << "a refused run must not create its directory";
  fs::remove_all(dir);
}

TEST(Bf16Cli, BadValuesAndKeys) {
  const std::string dir = test::temp_dir("bf16_cli_keys");
  const std::string config = std::string(SOFTLAB_SOURCE_DIR) + "/configs/fmnist_vit.json";
  const auto v = test::softlab_cli({"validate", config, "--set", "train.precision=fp16"}, dir);
  EXPECT_EQ(v.code, 2) << v.err;
  EXPECT_NE(v.err.find("train.precision"), std::string::npos) << v.err;
  // eval and predict take --set train.precision only: other keys name themselves and exit 2
  // before the checkpoint is read.
  const auto e = test::softlab_cli({"eval", "--checkpoint", dir + "/none.ckpt", "--set", "model.dim=3"}, dir);
  EXPECT_EQ(e.code, 2) << e.err;
  EXPECT_NE(e.err.find("model.dim"), std::string::npos) << e.err;
  const auto p = test::softlab_cli({"predict", "--checkpoint", dir + "/none.ckpt", "x.pgm", "--set",
                                    "train.precision=fp8"}, dir);
  EXPECT_EQ(p.code, 2) << p.err;
  EXPECT_NE(p.err.find("fp8"), std::string::npos) << p.err;
  fs::remove_all(dir);
}

TEST(Bf16Cli, EvalRunsInEitherPrecision) {
  SKIP_WITHOUT_BF16();
  const std::string root = test::temp_dir("bf16_eval");
  test::write_learnable_mnist(root + "/data", 300, 100);
  json j = test::tiny_config(root + "/data", root + "/run");
  apply_override(j, "train.epochs=1");
  TrainOptions o;
  o.quiet = true;
  ASSERT_EQ(train(parse_config(resolve_config(j)), o).status, TrainStatus::Finished);
  double acc[2];
  int i = 0;
  for (const char* p : {"train.precision=fp32", "train.precision=bf16"}) {
    const auto r = test::softlab_cli({"eval", root + "/run", "--set", p}, root);
    ASSERT_EQ(r.code, 0) << r.err;
    acc[i++] = json::parse(r.out)["test_accuracy"].get<double>();
  }
  // 100 test images: bf16 rounding may flip a prediction near a tie, not many.
  EXPECT_NEAR(acc[1], acc[0], 0.05);
  fs::remove_all(root);
}

}  // namespace
