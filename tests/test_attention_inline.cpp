// InLine attention (Han et al. 2024, src/attention/inline.cpp, docs/attention.md): a module
// composed from primitive ops, so the checks here are against the formula itself:
//   - the attention matrix (read out with v = the identity) has rows summing to 1, exact
//     zeros above the diagonal when causal, and equals a_ij evaluated in double;
//   - v = ones gives o = 1;
//   - outputs against the formula evaluated in double, and gradients along random
//     directions against central differences of that double function;
//   - the closed-form backward (bidirectional) against autograd;
//   - finite differences of q, k, v for both modes and every kernel;
//   - causal: changing a token changes no earlier output; bidirectional: permutation
//     equivariance; large inputs stay finite; bidirectional inference has no N x N;
//   - in a causal sequence model no position sees a later token, and the model learns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "attention_checks.hpp"
#include "softlab/nn/seq.hpp"
#include "softlab/train.hpp"
#include "train_fixtures.hpp"

namespace softlab::test {
namespace {

namespace fs = std::filesystem;

const char* const kKernels[] = {"identity", "relu", "leaky_relu", "exp"};

json inline_cfg(bool causal, const std::string& kernel = "identity") {
  return {{"type", "inline"}, {"kernel", kernel}, {"causal", causal}};
}

AttnCase make_case(json cfg, int64_t B, int64_t H, int64_t N, int64_t Dh, uint64_t seed) {
  AttnCase c;
  c.config = std::move(cfg);
  c.B = B;
  c.H = H;
  c.N = N;
  c.Dh = Dh;
  c.seed = seed;
  return c;
}

std::unique_ptr<Attention> build_module(const json& cfg, int64_t H, int64_t Dh) {
  AttentionContext ctx;
  ctx.dim = H * Dh;
  ctx.heads = H;
  ctx.head_dim = Dh;
  ctx.seq_len = 7;
  return make_attention(cfg, ctx);
}

// ---- the formula in double ----------------------------------------------------------------
// Straight from the definition, per head, with n_i visible keys:
//   kbar_i = (1/n_i) sum_{j<n_i} phi(k_j),  c_i = s/n_i
//   a_ij = c_i phi(q_i).phi(k_j) - c_i phi(q_i).kbar_i + 1/n_i,  o_i = sum_j a_ij v_j.
// Nothing here is shared with the module's state form (phi(K)^T V first).
struct Direct {
  std::string kernel = "identity";
  bool causal = false;
  double s = 0.0;
  int64_t heads = 0, N = 0, D = 0, Dv = 0;

  double phi(double x) const {
    if (kernel == "relu") return x > 0 ? x : 0.0;
    if (kernel == "leaky_relu") return x > 0 ? x : 0.01 * x;
    if (kernel == "exp") return std::exp(0.2 * x);
    return x;
  }
  // [heads, N, N]: a_ij, 0 for keys row i does not see.
  std::vector<double> matrix(const std::vector<double>& q, const std::vector<double>& k) const {
    std::vector<double> a(static_cast<size_t>(heads * N * N), 0.0), kbar(static_cast<size_t>(D));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const int64_t n = causal ? i + 1 : N;
        const double c = s / static_cast<double>(n);
        std::fill(kbar.begin(), kbar.end(), 0.0);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t d = 0; d < D; ++d)
            kbar[static_cast<size_t>(d)] += phi(k[static_cast<size_t>((h * N + j) * D + d)]) / static_cast<double>(n);
        double qk = 0.0;
        for (int64_t d = 0; d < D; ++d) qk += phi(q[static_cast<size_t>((h * N + i) * D + d)]) * kbar[static_cast<size_t>(d)];
        for (int64_t j = 0; j < n; ++j) {
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d)
            dot += phi(q[static_cast<size_t>((h * N + i) * D + d)]) * phi(k[static_cast<size_t>((h * N + j) * D + d)]);
          a[static_cast<size_t>((h * N + i) * N + j)] = c * dot - c * qk + 1.0 / static_cast<double>(n);
        }
      }
    return a;
  }
  std::vector<double> forward(const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v) const {
    const std::vector<double> a = matrix(q, k);
    std::vector<double> o(static_cast<size_t>(heads * N * Dv), 0.0);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < N; ++j)
          for (int64_t d = 0; d < Dv; ++d)
            o[static_cast<size_t>((h * N + i) * Dv + d)] +=
                a[static_cast<size_t>((h * N + i) * N + j)] * v[static_cast<size_t>((h * N + j) * Dv + d)];
    return o;
  }
};


Direct direct_for(const json& cfg, int64_t heads, int64_t N, int64_t D, int64_t Dv) {
  Direct f;
  f.kernel = cfg["kernel"].get<std::string>();
  f.causal = cfg["causal"].get<bool>();
  f.s = cfg.contains("scale") && !cfg["scale"].is_null() ? cfg["scale"].get<double>()
                                                          : 1.0 / std::sqrt(static_cast<double>(D));
  f.heads = heads;
  f.N = N;
  f.D = D;
  f.Dv = Dv;
  return f;
}

// ---- rows sum to one ----------------------------------------------------------------------

// With v_j = e_j (Dv = N), o_i is row i of the attention matrix itself.
TEST(InLineAttention, AttentionMatrixRowsSumToOne) {
  for (bool causal : {false, true})
    for (const char* kernel : kKernels) {
      const json cfg = inline_cfg(causal, kernel);
      SCOPED_TRACE(cfg.dump());
      const int64_t B = 1, H = 2, N = 9, Dh = 4;
      auto m = build_module(cfg, H, Dh);
      Generator g(7);
      const Tensor q = uniform({B, H, N, Dh}, g, -1.5f, 1.5f), k = uniform({B, H, N, Dh}, g, -1.5f, 1.5f);
      Tensor eye = zeros({B, H, N, N});
      for (int64_t h = 0; h < B * H; ++h)
        for (int64_t i = 0; i < N; ++i) eye.mutable_data()[(h * N + i) * N + i] = 1.0f;
      NoGradGuard ng;
      const Tensor a = m->forward(q, k, eye);
      const std::vector<double> expect = direct_for(cfg, B * H, N, Dh, N).matrix(to_double(q), to_double(k));
      double worst_sum = 0.0, worst_entry = 0.0;
      for (int64_t h = 0; h < B * H; ++h)
        for (int64_t i = 0; i < N; ++i) {
          double row = 0.0;
          for (int64_t j = 0; j < N; ++j) {
            const int64_t e = (h * N + i) * N + j;
            row += a.data()[e];
            worst_entry = std::max(worst_entry, std::fabs(a.data()[e] - expect[static_cast<size_t>(e)]));
            if (causal && j > i) {
              EXPECT_EQ(a.data()[e], 0.0f) << "masked entry (" << i << ", " << j << ")";
            }
          }
          worst_sum = std::max(worst_sum, std::fabs(row - 1.0));
        }
      // Entries are O(1/N); float32 composition rounds them at ~1e-7 (measured: row sums
      // within 3.3e-7 of 1, entries within 1.2e-7). A wrong c (s instead of s/N) or a
      // missing 1/N term is off by more than 1e-2.
      EXPECT_LT(worst_sum, 2e-6);
      EXPECT_LT(worst_entry, 1e-6);
    }
}

TEST(InLineAttention, ValuesOfOnesGiveOnes) {
  for (bool causal : {false, true})
    for (const char* kernel : kKernels) {
      const json cfg = inline_cfg(causal, kernel);
      SCOPED_TRACE(cfg.dump());
      auto m = build_module(cfg, 2, 8);
      Generator g(11);
      const Tensor q = uniform({2, 2, 33, 8}, g, -2.0f, 2.0f), k = uniform({2, 2, 33, 8}, g, -2.0f, 2.0f);
      NoGradGuard ng;
      const Tensor o = m->forward(q, k, ones({2, 2, 33, 8}));
      double worst = 0.0;
      for (int64_t e = 0; e < o.numel(); ++e) worst = std::max(worst, std::fabs(o.data()[e] - 1.0));
      // The two terms c phi(q).sum phi(k) and 1 - s phi(q).kbar cancel to 1 up to their
      // rounding: measured 1.2e-7 to 2.4e-7, and 7e-7 for exp, whose terms reach ~3.
      EXPECT_LT(worst, 4e-6);
    }
}

// ---- the formula in double: outputs and directional derivatives ------------------------------

void check_against_float64(const json& cfg, int64_t B, int64_t H, int64_t N, int64_t Dh, uint64_t seed) {
  const Direct f = direct_for(cfg, B * H, N, Dh, Dh);
  // Outputs: a handful of float32 ops in sequence. Measured 5e-8 to 3e-7 of the largest
  // output, and 1.0e-6 for the exp kernel at N = 40, where the state form's two terms are
  // several times the output they sum to. A formula error (a wrong c, n_i or 1/n_i term) is
  // O(1e-2) or more. Gradients: measured 1e-10 to 9e-8 of sum |grad_e delta_e| (float32
  // gradients, O(h^2) differences).
  expect_matches_float64(
      make_case(cfg, B, H, N, Dh, seed),
      [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v) {
        return f.forward(q, k, v);
      },
      1e-5, 1e-6, seed + 5, seed + 9);
}

TEST(InLineAttention, MatchesFloat64Formula) {
  uint64_t seed = 100;
  for (bool causal : {false, true})
    for (const char* kernel : kKernels) {
      check_against_float64(inline_cfg(causal, kernel), 2, 2, 7, 4, ++seed);
      check_against_float64(inline_cfg(causal, kernel), 1, 2, 40, 16, ++seed);
    }
  for (bool causal : {false, true}) {
    json cfg = inline_cfg(causal);
    cfg["scale"] = 0.8;
    check_against_float64(cfg, 2, 1, 9, 4, ++seed);
  }
}

// One token: a = [1] whatever q and k are, so o = v, dv = dO and q, k get no gradient (up to
// the float rounding of c phi(q).phi(k) - s phi(q).kbar, two equal terms).
TEST(InLineAttention, OneTokenReturnsItsValue) {
  for (bool causal : {false, true})
    for (const char* kernel : kKernels) {
      const AttnCase c = make_case(inline_cfg(causal, kernel), 2, 2, 1, 4, 200);
      SCOPED_TRACE(c.name());
      Generator init(1);
      auto m = build(c, init);
      AttnInputs a = make_inputs(c, true);
      Tensor out = m->forward(a.q, a.k, a.v);
      Generator wg(201);
      const Tensor w = uniform(out.shape(), wg, -1.0f, 1.0f);
      out.backward(w);
      expect_close(out, a.v, {1e-6, 1e-6}, "output");
      expect_close(a.v.grad(), w, {1e-6, 1e-6}, "dv");
      expect_close(a.q.grad(), zeros(a.q.shape()), {1e-6, 0.0}, "dq");
      expect_close(a.k.grad(), zeros(a.k.shape()), {1e-6, 0.0}, "dk");
    }
}

// The backward written out for the bidirectional form (g_i = dO_i, SV = sum_j phi(k_j) v_j^T):
//   dphi(q_i) = c SV g_i - s (g_i.vbar) kbar          dSV = c sum_i phi(q_i) g_i^T
//   dphi(k_j) = dSV v_j - (s/N) sum_i (g_i.vbar) phi(q_i)
//   dv_j      = dSV^T phi(k_j) + (1/N) sum_i (1 - s phi(q_i).kbar) g_i
// in double, times phi' for q and k, against autograd's gradients of the composed module.
TEST(InLineAttention, BidirectionalBackwardMatchesClosedForm) {
  for (const char* kernel : kKernels) {
    const json cfg = inline_cfg(false, kernel);
    const AttnCase c = make_case(cfg, 1, 2, 11, 5, 301);
    SCOPED_TRACE(c.name());
    Generator init(1);
    auto m = build(c, init);
    AttnInputs in = make_inputs(c, true);
    Tensor out = m->forward(in.q, in.k, in.v);
    Generator gg(302);
    const Tensor G = uniform(out.shape(), gg, -1.0f, 1.0f);
    out.backward(G);

    const Direct f = direct_for(cfg, 1, c.N, c.Dh, c.Dh);
    const int64_t N = c.N, D = c.Dh;
    const double s = f.s, cN = s / static_cast<double>(N);
    auto dphi = [&](double x) {
      if (f.kernel == "relu") return x > 0 ? 1.0 : 0.0;
      if (f.kernel == "leaky_relu") return x > 0 ? 1.0 : 0.01;
      if (f.kernel == "exp") return 0.2 * std::exp(0.2 * x);
      return 1.0;
    };
    double worst = 0.0, largest = 0.0;
    for (int64_t h = 0; h < c.B * c.H; ++h) {
      auto at = [&](const Tensor& t, int64_t i, int64_t d) {
        return static_cast<double>(t.data()[(h * N + i) * D + d]);
      };
      std::vector<double> fq(static_cast<size_t>(N * D)), fk(fq.size()), kbar(static_cast<size_t>(D), 0.0),
          vbar(static_cast<size_t>(D), 0.0), SV(static_cast<size_t>(D * D), 0.0), dSV(SV.size(), 0.0);
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < D; ++d) {
          fq[static_cast<size_t>(i * D + d)] = f.phi(at(in.q, i, d));
          fk[static_cast<size_t>(i * D + d)] = f.phi(at(in.k, i, d));
          kbar[static_cast<size_t>(d)] += fk[static_cast<size_t>(i * D + d)] / static_cast<double>(N);
          vbar[static_cast<size_t>(d)] += at(in.v, i, d) / static_cast<double>(N);
        }
      for (int64_t j = 0; j < N; ++j)
        for (int64_t a = 0; a < D; ++a)
          for (int64_t b = 0; b < D; ++b) {
            SV[static_cast<size_t>(a * D + b)] += fk[static_cast<size_t>(j * D + a)] * at(in.v, j, b);
            dSV[static_cast<size_t>(a * D + b)] += cN * fq[static_cast<size_t>(j * D + a)] * at(G, j, b);
          }
      std::vector<double> gv(static_cast<size_t>(N), 0.0), zq(static_cast<size_t>(N), 0.0);  // g_i.vbar, phi(q_i).kbar
      for (int64_t i = 0; i < N; ++i)
        for (int64_t d = 0; d < D; ++d) {
          gv[static_cast<size_t>(i)] += at(G, i, d) * vbar[static_cast<size_t>(d)];
          zq[static_cast<size_t>(i)] += fq[static_cast<size_t>(i * D + d)] * kbar[static_cast<size_t>(d)];
        }
      auto compare = [&](double expect, double got) {
        worst = std::max(worst, std::fabs(expect - got));
        largest = std::max(largest, std::fabs(expect));
      };
      for (int64_t i = 0; i < N; ++i)
        for (int64_t a = 0; a < D; ++a) {
          double dq = -s * gv[static_cast<size_t>(i)] * kbar[static_cast<size_t>(a)], dk = 0.0, dv = 0.0;
          for (int64_t b = 0; b < D; ++b) dq += cN * SV[static_cast<size_t>(a * D + b)] * at(G, i, b);
          for (int64_t b = 0; b < D; ++b) {
            dk += dSV[static_cast<size_t>(a * D + b)] * at(in.v, i, b);
            dv += dSV[static_cast<size_t>(b * D + a)] * fk[static_cast<size_t>(i * D + b)];
          }
          for (int64_t r = 0; r < N; ++r) {
            dk -= s / static_cast<double>(N) * gv[static_cast<size_t>(r)] * fq[static_cast<size_t>(r * D + a)];
            dv += (1.0 - s * zq[static_cast<size_t>(r)]) * at(G, r, a) / static_cast<double>(N);
          }
          compare(dq * dphi(at(in.q, i, a)), at(in.q.grad(), i, a));
          compare(dk * dphi(at(in.k, i, a)), at(in.k.grad(), i, a));
          compare(dv, at(in.v.grad(), i, a));
        }
    }
    // Measured 6e-8 to 3.3e-7 of the largest element (float32 autograd against double).
    EXPECT_LT(worst, 2e-6 * largest) << "largest gradient element " << largest;
  }
}

// ---- finite differences -------------------------------------------------------------------

TEST(InLineAttention, Gradcheck) {
  uint64_t seed = 40;
  for (bool causal : {false, true})
    for (const char* kernel : kKernels) {
      expect_gradcheck(make_case(inline_cfg(causal, kernel), 1, 2, 5, 3, ++seed));
      expect_gradcheck(make_case(inline_cfg(causal, kernel), 2, 1, 1, 4, ++seed));
      json cfg = inline_cfg(causal, kernel);
      cfg["scale"] = 0.7;
      expect_gradcheck(make_case(cfg, 1, 1, 6, 4, ++seed));
    }
}

// ---- causal and permutation properties, large inputs, memory --------------------------------

TEST(InLineAttention, CausalChangesNoEarlierOutput) {
  uint64_t seed = 50;
  for (const char* kernel : kKernels) {
    expect_causal(make_case(inline_cfg(true, kernel), 2, 2, 7, 4, ++seed));
    expect_causal(make_case(inline_cfg(true, kernel), 1, 2, 67, 8, ++seed));
  }
}

// Bidirectional really is bidirectional: a later token moves the first row.
TEST(InLineAttention, BidirectionalSeesLaterTokens) {
  const AttnCase c = make_case(inline_cfg(false), 1, 1, 7, 4, 58);
  Generator init(1);
  auto m = build(c, init);
  NoGradGuard ng;
  AttnInputs a = make_inputs(c, false), b = make_inputs(c, false);
  for (int64_t d = 0; d < c.Dh; ++d) b.k.mutable_data()[(c.N - 1) * c.Dh + d] += 1.0f;
  EXPECT_NE(m->forward(a.q, a.k, a.v).data()[0], m->forward(b.q, b.k, b.v).data()[0]);
}

TEST(InLineAttention, BidirectionalIsPermutationEquivariant) {
  uint64_t seed = 60;
  for (const char* kernel : kKernels) {
    expect_permutation_equivariant(make_case(inline_cfg(false, kernel), 2, 2, 7, 4, ++seed));
    expect_permutation_equivariant(make_case(inline_cfg(false, kernel), 1, 2, 67, 8, ++seed));
  }
}

TEST(InLineAttention, FiniteForLargeInputs) {
  for (bool causal : {false, true})
    for (const char* kernel : kKernels)
      for (float mag : {30.0f, 100.0f}) expect_finite_for_large_inputs(make_case(inline_cfg(causal, kernel), 2, 2, 67, 4, 71), mag);
}

TEST(InLineAttention, BidirectionalInferenceMemoryIsLinearInN) {
  expect_inference_memory_below_nxn(make_case(inline_cfg(false), 1, 2, 2048, 16, 81));
  expect_inference_memory_below_nxn(make_case(inline_cfg(false, "exp"), 1, 2, 2048, 16, 82));
}

// ---- registration ---------------------------------------------------------------------------

TEST(InLineAttention, RegisteredWithItsSchema) {
  const AttentionEntry* e = attention_registry().find("inline");
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->caps.causal);
  EXPECT_FALSE(e->caps.learnable);
  EXPECT_FALSE(e->golden.empty());
  for (const auto& name : e->golden)
    EXPECT_TRUE(fs::exists(fs::path(SOFTLAB_SOURCE_DIR) / "tests" / "golden" / "attention" / (name + ".json"))) << name;
  // No learnable parameters, and a kernel outside the four is rejected by name.
  EXPECT_EQ(build_module(inline_cfg(true, "exp"), 2, 4)->num_parameters(), 0);
  try {
    build_module(inline_cfg(false, "elu1"), 2, 4);
    ADD_FAILURE() << "kernel 'elu1' was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("model.attention.kernel"), std::string::npos) << err.what();
  }
}

// ---- in a sequence model ------------------------------------------------------------------

json seq_json(bool causal) {
  return {{"data", {{"dataset", "synthetic:recall"}, {"train_length", 12}, {"keys", 8}, {"values", 4}}},
          {"model", {{"type", "seq"}, {"dim", 16}, {"depth", 2}, {"heads", 2}, {"causal", causal},
                     {"attention", {{"type", "inline"}}}}}};
}

// Changing token 7 changes no feature before position 7 (the whole model, bit for bit).
TEST(InLineAttention, CausalSequenceModelDoesNotSeeTheFuture) {
  const Config cfg = parse_config(resolve_config(seq_json(true)));
  auto m = build_model(cfg, 4, 100);
  auto* seq = dynamic_cast<nn::SeqModel*>(m.get());
  ASSERT_TRUE(seq);
  m->eval();
  NoGradGuard ng;
  Generator g(1);
  Tensor a = empty({2, 12});
  for (int64_t i = 0; i < a.numel(); ++i) a.mutable_data()[i] = static_cast<float>(g.below(12));
  Tensor b = a.clone();
  b.mutable_data()[7] = static_cast<float>((static_cast<int>(a.data()[7]) + 1) % 12);
  const Tensor fa = seq->features(a), fb = seq->features(b);
  double before = 0.0, after = 0.0;
  for (int64_t n = 0; n < 12; ++n)
    for (int64_t j = 0; j < 16; ++j) (n < 7 ? before : after) += std::abs(fa.data()[n * 16 + j] - fb.data()[n * 16 + j]);
  EXPECT_EQ(before, 0.0);
  EXPECT_GT(after, 1e-4) << "the change must reach position 7 and later";
}

// Recall with 3 pairs and 2 queries at length 8 (chance 1/4), causal, a short run: measured
// 0.655 test accuracy after 6 epochs; 0.5 is twice chance.
TEST(InLineAttention, CausalSequenceModelLearnsRecall) {
  const std::string root = temp_dir("inline_seq");
  json cfg = {{"data", {{"dataset", "synthetic:recall"}, {"train_length", 8}, {"train_size", 4000},
                        {"test_size", 200}, {"keys", 8}, {"values", 4}}},
              {"model", {{"type", "seq"}, {"dim", 32}, {"depth", 2}, {"heads", 2}, {"causal", true},
                         {"attention", {{"type", "inline"}}}}},
              {"train", {{"epochs", 6}, {"batch_size", 32}, {"threads", 1}, {"optimizer", {{"lr", 0.003}}}}},
              {"output", {{"dir", root + "/run"}}}};
  const TrainResult r = train(parse_config(resolve_config(cfg)), quiet());
  fs::remove_all(root);
  ASSERT_EQ(r.status, TrainStatus::Finished);
  EXPECT_GT(r.summary["test_accuracy"].get<double>(), 0.5) << r.summary.dump();
}

}  // namespace
}  // namespace softlab::test
