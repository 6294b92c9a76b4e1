// The chunked kernel of linear attention and MALA (src/attention/headwise_kernel.hpp) at the
// sequence lengths where chunking can go wrong: N = 1, C - 1, C, C + 1, 2C + 1 (C = kChunk,
// so N = C is exactly one chunk, N = C + 1 puts one token in a second chunk) and a long
// N = 4096 (128 chunks), causal and bidirectional, forward and backward, against the spec's
// formulas evaluated in double on the explicit N x N form (no state, no chunks, no prefix
// sums: an independent evaluation).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "attention/headwise_kernel.hpp"
#include "attention_checks.hpp"

namespace softlab::test {
namespace {

constexpr int64_t C = detail::kChunk;

// Output and gradients of linear attention or MALA in double, from the N x N matrix
// A_ij = phi(q_i).phi(k_j) over the visible pairs, for upstream gradient w:
//   a_i = sum_j A_ij v_j, c_i = sum_j A_ij, Vs_i = sum_j v_j, n_i = #visible
//   linear: o_i = a_i / (c_i + eps)
//   MALA:   o_i = (sn + 1/den) a_i - (sn c_i / n_i) Vs_i, sn = s/n_i, den = c_i + eps n_i / s
// and by the chain rule through A (dA_ij = da_i.v_j + dc_i): dq_i = sum_j dA_ij phi(k_j) o
// phi'(q_i), dk_j = sum_i dA_ij phi(q_i) o phi'(k_j), dv_j = sum_i (A_ij da_i + dVs_i).
// The rules' derivatives are written out here from the formulas, not taken from the kernel.
struct Float64 {
  bool mala = false, causal = false;
  double eps = 1e-6, s = 0.0;
  int64_t heads = 0, N = 0, D = 0;
  std::vector<double> o, dq, dk, dv;
  // The same sums over |terms|: the scale a gradient's rounding error is measured against
  // (at N = 1, dq and dk are ~eps-sized differences of O(1) terms).
  std::vector<double> dq_abs, dk_abs, dv_abs;

  void run(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
           const std::vector<double>& w) {
    auto phi = [](double x) { return x > 0 ? x + 1.0 : std::exp(x); };
    auto dphi = [](double x) { return x > 0 ? 1.0 : std::exp(x); };
    const size_t total = q.size(), ND = static_cast<size_t>(N * D);
    o.assign(total, 0.0);
    dq.assign(total, 0.0);
    dk.assign(total, 0.0);
    dv.assign(total, 0.0);
    dq_abs.assign(total, 0.0);
    dk_abs.assign(total, 0.0);
    dv_abs.assign(total, 0.0);
    std::vector<double> fq(ND), fk(ND), a(static_cast<size_t>(D)), vs(static_cast<size_t>(D));
    std::vector<double> A(static_cast<size_t>(N * N)), ka(static_cast<size_t>(N)), dc(static_cast<size_t>(N)),
        kv(static_cast<size_t>(N));
    for (int64_t h = 0; h < heads; ++h) {
      const size_t base = static_cast<size_t>(h) * ND;
      auto at = [&](const std::vector<double>& x, int64_t i, int64_t d) { return x[base + static_cast<size_t>(i * D + d)]; };
      for (size_t e = 0; e < ND; ++e) {
        fq[e] = phi(q[base + e]);
        fk[e] = phi(k[base + e]);
      }
      for (int64_t i = 0; i < N; ++i) {
        const int64_t n_vis = causal ? i + 1 : N;
        const double n = static_cast<double>(n_vis);
        std::fill(a.begin(), a.end(), 0.0);
        std::fill(vs.begin(), vs.end(), 0.0);
        double c = 0.0;
        for (int64_t j = 0; j < n_vis; ++j) {
          double x = 0.0;
          for (int64_t d = 0; d < D; ++d) x += fq[static_cast<size_t>(i * D + d)] * fk[static_cast<size_t>(j * D + d)];
          A[static_cast<size_t>(i * N + j)] = x;
          c += x;
          for (int64_t d = 0; d < D; ++d) {
            a[static_cast<size_t>(d)] += x * at(v, j, d);
            vs[static_cast<size_t>(d)] += at(v, j, d);
          }
        }
        double g_a = 0.0, g_vs = 0.0;
        for (int64_t d = 0; d < D; ++d) {
          g_a += at(w, i, d) * a[static_cast<size_t>(d)];
          g_vs += at(w, i, d) * vs[static_cast<size_t>(d)];
        }
        const size_t row = base + static_cast<size_t>(i * D);
        if (!mala) {
          const double den = c + eps;
          for (int64_t d = 0; d < D; ++d) o[row + static_cast<size_t>(d)] = a[static_cast<size_t>(d)] / den;
          ka[static_cast<size_t>(i)] = 1.0 / den;           // do/da = 1/den
          dc[static_cast<size_t>(i)] = -g_a / (den * den);  // do/dc = -a/den^2
          kv[static_cast<size_t>(i)] = 0.0;
        } else {
          const double sn = s / n, den = c + eps * n / s;
          for (int64_t d = 0; d < D; ++d)
            o[row + static_cast<size_t>(d)] = (sn + 1.0 / den) * a[static_cast<size_t>(d)] - sn * c / n * vs[static_cast<size_t>(d)];
          ka[static_cast<size_t>(i)] = sn + 1.0 / den;
          dc[static_cast<size_t>(i)] = -g_a / (den * den) - sn / n * g_vs;
          kv[static_cast<size_t>(i)] = -sn * c / n;
        }
      }
      for (int64_t i = 0; i < N; ++i) {
        const int64_t n_vis = causal ? i + 1 : N;
        for (int64_t j = 0; j < n_vis; ++j) {
          double gv = 0.0;  // w_i . v_j
          for (int64_t d = 0; d < D; ++d) gv += at(w, i, d) * at(v, j, d);
          const double dA = ka[static_cast<size_t>(i)] * gv + dc[static_cast<size_t>(i)];
          const double Aij = A[static_cast<size_t>(i * N + j)];
          const double dA_abs = std::fabs(ka[static_cast<size_t>(i)] * gv) + std::fabs(dc[static_cast<size_t>(i)]);
          for (int64_t d = 0; d < D; ++d) {
            const size_t qi = base + static_cast<size_t>(i * D + d), kj = base + static_cast<size_t>(j * D + d);
            dq[qi] += dA * fk[static_cast<size_t>(j * D + d)];
            dk[kj] += dA * fq[static_cast<size_t>(i * D + d)];
            dv[kj] += (Aij * ka[static_cast<size_t>(i)] + kv[static_cast<size_t>(i)]) * at(w, i, d);
            dq_abs[qi] += dA_abs * fk[static_cast<size_t>(j * D + d)];
            dk_abs[kj] += dA_abs * fq[static_cast<size_t>(i * D + d)];
            dv_abs[kj] += (std::fabs(Aij * ka[static_cast<size_t>(i)]) + std::fabs(kv[static_cast<size_t>(i)])) *
                          std::fabs(at(w, i, d));
          }
        }
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < D; ++d) {
          dq[base + static_cast<size_t>(i * D + d)] *= dphi(at(q, i, d));
          dk[base + static_cast<size_t>(i * D + d)] *= dphi(at(k, i, d));
          dq_abs[base + static_cast<size_t>(i * D + d)] *= dphi(at(q, i, d));
          dk_abs[base + static_cast<size_t>(i * D + d)] *= dphi(at(k, i, d));
        }
    }
  }
};

// max_e |x_e - ref_e| / max_e scale_e (scale = |ref| for outputs, the sums over |terms| for
// gradients).
double relative_to_largest(const Tensor& x, const std::vector<double>& ref, const std::vector<double>& scale) {
  double max_scale = 0.0, max_err = 0.0;
  for (size_t e = 0; e < ref.size(); ++e) {
    max_scale = std::max(max_scale, std::fabs(scale[e]));
    max_err = std::max(max_err, std::fabs(ref[e] - static_cast<double>(x.data()[e])));
  }
  return max_err / max_scale;
}

struct Errors {
  double out, dq, dk, dv;
};

Errors errors_against_float64(const std::string& type, bool causal, int64_t H, int64_t N, int64_t Dh, uint64_t seed) {
  AttnCase c;
  c.config = {{"type", type}, {"causal", causal}};
  c.B = 1;
  c.H = H;
  c.N = N;
  c.Dh = Dh;
  c.seed = seed;
  Generator init(1);
  auto m = build(c, init);
  AttnInputs in = make_inputs(c, true);
  Tensor out = m->forward(in.q, in.k, in.v);
  Generator wg(seed + 7);
  const Tensor w = uniform(out.shape(), wg, -1.0f, 1.0f);
  out.backward(w);
  Float64 f;
  f.mala = type == "mala";
  f.causal = causal;
  f.s = 1.0 / std::sqrt(static_cast<double>(Dh));
  f.heads = H;
  f.N = N;
  f.D = Dh;
  f.run(to_double(in.q), to_double(in.k), to_double(in.v), to_double(w));
  return {relative_to_largest(out, f.o, f.o), relative_to_largest(in.q.grad(), f.dq, f.dq_abs),
          relative_to_largest(in.k.grad(), f.dk, f.dk_abs), relative_to_largest(in.v.grad(), f.dv, f.dv_abs)};
}

// Tolerances (u = 2^-24 = 6e-8):
//  - outputs: 2e-7 of the largest output (~3 u), the bound tests/test_attention_linear.cpp
//    puts on N = 1000. The forward sums in double (precision note 2 of headwise_kernel.hpp),
//    so what is left is the final rounding to float, 0.5 u of each output: measured 3-6e-8
//    for every case here. This bound is what forced the double forward: the same kernel
//    with float chunk sums and float reads measured 2.4-4.7e-7 (linear) and up to 1.2e-6
//    (MALA, whose output is a difference of two ~10x larger terms). An error in the chunk
//    bookkeeping (a token counted twice or missed) moves an output by ~1/N of its size,
//    2e-4 at N = 4096.
//  - gradients: 1e-6 of the largest sum of |terms| of that gradient (the scale its rounding
//    error is proportional to; the gradient itself can be ~0, as dq and dk at N = 1). The
//    backward runs in float inside a chunk (precision note 3): each gradient is a float read
//    of a float-rounded state plus float tile sums over <= C tokens, a few u of that scale;
//    measured 0.3-1.5e-7. 1e-6 is ~16 u: a few u of headroom over the largest measured case
//    times the spread over seeds, and a dropped term (e.g. a missing own-chunk pair or the
//    state of one chunk) is O(1/N) of the scale, >= 2e-4 here.
constexpr double kOutTol = 2e-7, kGradTol = 1e-6;

void expect_close_to_float64(const std::string& type, bool causal, int64_t H, int64_t N, int64_t Dh, uint64_t seed) {
  const Errors e = errors_against_float64(type, causal, H, N, Dh, seed);
  const std::string what = type + (causal ? " causal" : " bidirectional") + " N=" + std::to_string(N) +
                           " Dh=" + std::to_string(Dh);
  EXPECT_LT(e.out, kOutTol) << what << ": output";
  EXPECT_LT(e.dq, kGradTol) << what << ": dq";
  EXPECT_LT(e.dk, kGradTol) << what << ": dk";
  EXPECT_LT(e.dv, kGradTol) << what << ": dv";
  std::printf("  %-28s out %.2e  dq %.2e  dk %.2e  dv %.2e (of the largest entry)\n", what.c_str(), e.out, e.dq, e.dk,
              e.dv);
}

// The chunk boundaries: N = 1, C - 1, C, C + 1, 2C + 1, and a short N with the ViT head size.
TEST(ChunkedLinearKernel, ChunkBoundariesMatchFloat64) {
  for (const char* type : {"linear", "mala"})
    for (bool causal : {false, true})
      for (int64_t n : {int64_t{1}, C - 1, C, C + 1, 2 * C + 1, int64_t{17}})
        expect_close_to_float64(type, causal, 2, n, 16, 200 + static_cast<uint64_t>(n));
}

// Dv = Dh = 64 (the CIFAR-10 ViT's head size) across a chunk boundary, and a head size that
// is not a multiple of any vector width.
TEST(ChunkedLinearKernel, OtherHeadSizesMatchFloat64) {
  for (const char* type : {"linear", "mala"})
    for (bool causal : {false, true}) {
      expect_close_to_float64(type, causal, 1, 2 * C + 1, 64, 301);
      expect_close_to_float64(type, causal, 2, C + 3, 5, 302);
    }
}

// 128 chunks: the double state between chunks keeps the error at a few u (an all-float state
// would not; see kOutTol).
TEST(ChunkedLinearKernel, LongSequenceMatchesFloat64) {
  for (const char* type : {"linear", "mala"})
    for (bool causal : {false, true}) expect_close_to_float64(type, causal, 1, 4096, 16, 401);
}

// Causal outputs of a chunk do not depend on the later keys of the same chunk (the tile is
// masked): replacing the last token of a chunk, or the first of the next, leaves every
// earlier output bit-identical.
TEST(ChunkedLinearKernel, CausalMaskInsideTheChunk) {
  for (const char* type : {"linear", "mala"}) {
    AttnCase c;
    c.config = {{"type", type}, {"causal", true}};
    c.B = 1;
    c.H = 2;
    c.N = 2 * C + 3;
    c.Dh = 8;
    c.seed = 500;
    expect_causal(c);  // changes tokens N - 1 and N / 2 = C + 1
    Generator init(1);
    auto m = build(c, init);
    NoGradGuard ng;
    AttnInputs a = make_inputs(c, false);
    const Tensor before = m->forward(a.q, a.k, a.v);
    for (int64_t t : {C - 1, C, int64_t{3}}) {
      AttnInputs b = make_inputs(c, false);
      for (Tensor* x : {&b.q, &b.k, &b.v})
        for (int64_t bh = 0; bh < c.H; ++bh)
          for (int64_t d = 0; d < c.Dh; ++d) x->mutable_data()[(bh * c.N + t) * c.Dh + d] += 0.75f;
      const Tensor after = m->forward(b.q, b.k, b.v);
      for (int64_t bh = 0; bh < c.H; ++bh)
        for (int64_t i = 0; i < c.N; ++i)
          for (int64_t d = 0; d < c.Dh; ++d) {
            const int64_t e = (bh * c.N + i) * c.Dh + d;
            if (i < t) {
              ASSERT_EQ(before.data()[e], after.data()[e]) << type << ": token " << t << " changed row " << i;
            }
          }
    }
  }
}

// Memory stays linear at N = 16384, where one N x N float tensor is 1.07 GB: inference
// allocates the 1 MB output plus chunk-sized scratch, and training's backward adds only the
// output-sized gradients and O(C^2 + C Dh + Dh Dv + N) scratch per thread. Bound: 1% of the
// N x N tensor (10.7 MB).
TEST(ChunkedLinearKernel, MemoryLinearAt16k) {
  for (const char* type : {"linear", "mala"})
    for (bool causal : {false, true}) {
      AttnCase c;
      c.config = {{"type", type}, {"causal", causal}};
      c.B = 1;
      c.H = 1;
      c.N = 16384;
      c.Dh = 16;
      c.seed = 600;
      SCOPED_TRACE(c.name());
      expect_inference_memory_below_nxn(c, 0.01);
      Generator init(1);
      auto m = build(c, init);
      AttnInputs a = make_inputs(c, true);
      Tensor out = m->forward(a.q, a.k, a.v);
      const Tensor g = ones(out.shape());
      reset_peak_tensor_memory();
      const int64_t before = tensor_memory().live_bytes;
      out.backward(g);
      const double nxn = static_cast<double>(c.N * c.N) * sizeof(float);
      const int64_t out_bytes = out.numel() * static_cast<int64_t>(sizeof(float));
      // dq, dk, dv and the root's copy of g are output-sized; the rest is the kernel's scratch.
      EXPECT_LT(static_cast<double>(tensor_memory().peak_bytes - before - 4 * out_bytes), 0.01 * nxn);
      expect_all_finite(a.k.grad(), "dk");
    }
}

}  // namespace
}  // namespace softlab::test
