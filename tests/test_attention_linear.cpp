// linear attention (Katharopoulos et al. 2020) and MALA (Fan et al. 2025), the fused
// kernels of src/attention/linear.cpp and src/attention/mala.cpp (docs/attention.md
// sections 3 and 4): against the same maths composed from primitive ops on the explicit
// N x N form (values and gradients), finite differences, the causal and permutation
// properties, large inputs, memory, and MALA's own properties (rows sum to one, magnitude
// sensitivity that plain linear attention lacks).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_checks.hpp"
#include "attention_reference.hpp"

namespace softlab::test {
namespace {

// The brief's tolerances: outputs ~1e-5 relative, gradients ~1e-4.
constexpr Tolerance kOut{1e-6, 1e-5};
constexpr Tolerance kGrad{1e-5, 1e-4};

json linear_cfg(bool causal) { return {{"type", "linear"}, {"causal", causal}}; }
json mala_cfg(bool causal) { return {{"type", "mala"}, {"causal", causal}}; }

AttnCase make_case(json cfg, int64_t B, int64_t H, int64_t N, int64_t Dh, uint64_t seed = 1) {
  AttnCase c;
  c.config = std::move(cfg);
  c.B = B;
  c.H = H;
  c.N = N;
  c.Dh = Dh;
  c.seed = seed;
  return c;
}

// The fused module against the same maths composed from primitive ops on the explicit
// N x N form: the registry entry's reference, for the case's config.
void expect_matches_composed(const AttnCase& c) { expect_matches_reference(c, registry_reference(c), kOut, kGrad); }

// N = 1, 7, 67 (not a multiple of any block size), at two head sizes.
void check_reference_sizes(const json& cfg) {
  for (int64_t n : {1, 7, 67}) {
    expect_matches_composed(make_case(cfg, 2, 2, n, 4, 3 + static_cast<uint64_t>(n)));
    expect_matches_composed(make_case(cfg, 1, 3, n, 16, 5 + static_cast<uint64_t>(n)));
  }
}

// ---- linear: fused against composed -------------------------------------------------------

TEST(LinearAttention, MatchesReferenceBidirectional) {
  check_reference_sizes(linear_cfg(false));
}

TEST(LinearAttention, MatchesReferenceCausal) {
  check_reference_sizes(linear_cfg(true));
}

TEST(LinearAttention, MatchesReferenceLongSequence) {
  expect_matches_composed(make_case(linear_cfg(false), 2, 2, 1000, 16, 11));
  expect_matches_composed(make_case(linear_cfg(true), 1, 1, 1000, 8, 12));
}

TEST(LinearAttention, MatchesReferenceOtherEps) {
  for (bool causal : {false, true}) {
    json cfg = linear_cfg(causal);
    cfg["eps"] = 0.5;  // large enough to matter in every row
    expect_matches_composed(make_case(cfg, 2, 1, 9, 4, 21));
    cfg["eps"] = 0.0;
    expect_matches_composed(make_case(cfg, 2, 1, 9, 4, 22));
  }
}

// ---- MALA: fused against composed ---------------------------------------------------------

TEST(MalaAttention, MatchesReferenceBidirectional) {
  check_reference_sizes(mala_cfg(false));
}

TEST(MalaAttention, MatchesReferenceCausal) {
  check_reference_sizes(mala_cfg(true));
}

TEST(MalaAttention, MatchesReferenceLongSequence) {
  expect_matches_composed(make_case(mala_cfg(false), 2, 2, 1000, 16, 13));
  expect_matches_composed(make_case(mala_cfg(true), 1, 1, 1000, 8, 14));
}

TEST(MalaAttention, MatchesReferenceScaleAndEps) {
  for (bool causal : {false, true}) {
    json cfg = mala_cfg(causal);
    cfg["scale"] = 0.3;
    expect_matches_composed(make_case(cfg, 2, 1, 9, 4, 31));
    cfg["eps"] = 0.25;
    expect_matches_composed(make_case(cfg, 2, 1, 9, 4, 32));
    cfg["eps"] = 0.0;
    expect_matches_composed(make_case(cfg, 2, 1, 9, 4, 33));
  }
}

// ---- float64, the spec's formulas evaluated directly -----------------------------------------
// The composed reference runs in float32, so at N = 1000 its own rounding (~5e-7 on MALA's
// outputs) sets the floor of that comparison. The kernels accumulate in double and should be
// far closer than that to the exact value: here each output is evaluated in double straight from
// the N x N form (no state, no prefix sums), and the gradients are checked along random
// directions by central differences of that double function.

struct Direct {
  bool mala = false, causal = false;
  double eps = 1e-6, s = 0.0;  // s: MALA's scale
  int64_t heads = 0, N = 0, D = 0;

  // [heads, N, D] each, row-major.
  std::vector<double> forward(const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v) const {
    auto phi = [](double x) { return x > 0 ? x + 1.0 : std::exp(x); };
    std::vector<double> o(q.size()), fq(static_cast<size_t>(N * D)), fk(fq.size()), u(static_cast<size_t>(D)),
        vsum(static_cast<size_t>(D));
    for (int64_t h = 0; h < heads; ++h) {
      const size_t base = static_cast<size_t>(h * N * D);
      for (size_t e = 0; e < fq.size(); ++e) {
        fq[e] = phi(q[base + e]);
        fk[e] = phi(k[base + e]);
      }
      for (int64_t i = 0; i < N; ++i) {
        const int64_t n = causal ? i + 1 : N;
        std::fill(u.begin(), u.end(), 0.0);
        std::fill(vsum.begin(), vsum.end(), 0.0);
        double rowsum = 0.0;
        for (int64_t j = 0; j < n; ++j) {
          double a = 0.0;  // A_ij = phi(q_i).phi(k_j)
          for (int64_t d = 0; d < D; ++d) a += fq[static_cast<size_t>(i * D + d)] * fk[static_cast<size_t>(j * D + d)];
          rowsum += a;
          for (int64_t d = 0; d < D; ++d) {
            u[static_cast<size_t>(d)] += a * v[base + static_cast<size_t>(j * D + d)];
            vsum[static_cast<size_t>(d)] += v[base + static_cast<size_t>(j * D + d)];
          }
        }
        for (int64_t d = 0; d < D; ++d) {
          double out;
          if (!mala) {
            out = u[static_cast<size_t>(d)] / (rowsum + eps);
          } else {
            const double z = s / n * rowsum;  // z_i = s phi(q_i).kbar_i
            out = (1.0 + 1.0 / (z + eps)) * (s / n) * u[static_cast<size_t>(d)] - z * vsum[static_cast<size_t>(d)] / n;
          }
          o[base + static_cast<size_t>(i * D + d)] = out;
        }
      }
    }
    return o;
  }
};

void check_against_float64(const json& cfg, int64_t N) {
  const AttnCase c = make_case(cfg, 1, 2, N, 16, 121);
  Direct f;
  f.mala = cfg["type"] == "mala";
  f.causal = cfg["causal"].get<bool>();
  f.s = 1.0 / std::sqrt(static_cast<double>(c.Dh));
  f.heads = c.B * c.H;
  f.N = c.N;
  f.D = c.Dh;
  // Outputs: rounding the double result to float32 costs at most 6e-8 of the largest output;
  // 2e-7 is three such ulps. (The float32 composed reference is ~50x further off at N = 1000.)
  // Gradients: measured ~1e-9 of sum |grad_e delta_e| (float32 gradients, O(h^2)
  // differences); a 0.1% error in one term of the backward shows as 2e-7 to 3e-5.
  expect_matches_float64(
      c,
      [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v) {
        return f.forward(q, k, v);
      },
      2e-7, 1e-7, 5, 9);
}

TEST(LinearAttention, MatchesFloat64DirectFormula) {
  for (bool causal : {false, true})
    for (int64_t n : {7, 1000}) check_against_float64(linear_cfg(causal), n);
}

TEST(MalaAttention, MatchesFloat64DirectFormula) {
  for (bool causal : {false, true})
    for (int64_t n : {7, 1000}) check_against_float64(mala_cfg(causal), n);
}

// ---- finite differences -------------------------------------------------------------------

TEST(LinearAttention, Gradcheck) {
  for (bool causal : {false, true}) {
    expect_gradcheck(make_case(linear_cfg(causal), 1, 2, 5, 3, 41));
    expect_gradcheck(make_case(linear_cfg(causal), 2, 1, 1, 4, 42));
  }
}

TEST(MalaAttention, Gradcheck) {
  for (bool causal : {false, true}) {
    expect_gradcheck(make_case(mala_cfg(causal), 1, 2, 5, 3, 43));
    expect_gradcheck(make_case(mala_cfg(causal), 2, 1, 1, 4, 44));
    json cfg = mala_cfg(causal);
    cfg["scale"] = 0.7;
    expect_gradcheck(make_case(cfg, 1, 1, 6, 4, 45));
  }
}

// ---- causal and permutation properties ----------------------------------------------------

TEST(LinearAttention, CausalChangesNoEarlierOutput) {
  expect_causal(make_case(linear_cfg(true), 2, 2, 7, 4, 51));
  expect_causal(make_case(linear_cfg(true), 1, 2, 67, 8, 52));
}

TEST(MalaAttention, CausalChangesNoEarlierOutput) {
  expect_causal(make_case(mala_cfg(true), 2, 2, 7, 4, 53));
  expect_causal(make_case(mala_cfg(true), 1, 2, 67, 8, 54));
}

TEST(LinearAttention, BidirectionalIsPermutationEquivariant) {
  expect_permutation_equivariant(make_case(linear_cfg(false), 2, 2, 7, 4, 61));
  expect_permutation_equivariant(make_case(linear_cfg(false), 1, 2, 67, 8, 62));
}

TEST(MalaAttention, BidirectionalIsPermutationEquivariant) {
  expect_permutation_equivariant(make_case(mala_cfg(false), 2, 2, 7, 4, 63));
  expect_permutation_equivariant(make_case(mala_cfg(false), 1, 2, 67, 8, 64));
}

// ---- large inputs -------------------------------------------------------------------------

TEST(LinearAttention, FiniteForLargeInputs) {
  for (bool causal : {false, true})
    for (float mag : {30.0f, 100.0f}) expect_finite_for_large_inputs(make_case(linear_cfg(causal), 2, 2, 67, 4, 71), mag);
}

TEST(MalaAttention, FiniteForLargeInputs) {
  for (bool causal : {false, true})
    for (float mag : {30.0f, 100.0f}) expect_finite_for_large_inputs(make_case(mala_cfg(causal), 2, 2, 67, 4, 72), mag);
}

// ---- memory -------------------------------------------------------------------------------

TEST(LinearAttention, InferenceMemoryIsLinearInN) {
  expect_inference_memory_below_nxn(make_case(linear_cfg(false), 1, 2, 2048, 16, 81));
  expect_inference_memory_below_nxn(make_case(linear_cfg(true), 1, 2, 2048, 16, 82));
}

TEST(MalaAttention, InferenceMemoryIsLinearInN) {
  expect_inference_memory_below_nxn(make_case(mala_cfg(false), 1, 2, 2048, 16, 83));
  expect_inference_memory_below_nxn(make_case(mala_cfg(true), 1, 2, 2048, 16, 84));
}

// Under NoGradGuard no node is recorded; with grad on, one node whose saved state is q, k, v
// themselves: the forward leaves exactly the output's bytes behind (no copy, no N x N, no
// per-row statistic), and the backward's scratch is linear in N as well.
void check_graph_and_saved_memory(const json& cfg) {
  const AttnCase c = make_case(cfg, 2, 2, 300, 8, 91);
  Generator init(1);
  auto m = build(c, init);
  const int64_t out_bytes = c.B * c.H * c.N * c.Dh * static_cast<int64_t>(sizeof(float));
  {
    AttnInputs a = make_inputs(c, true);
    NoGradGuard ng;
    const int64_t nodes = Node::live_count();
    const int64_t live = tensor_memory().live_bytes;
    const Tensor out = m->forward(a.q, a.k, a.v);
    EXPECT_FALSE(out.requires_grad());
    EXPECT_EQ(Node::live_count(), nodes);
    EXPECT_EQ(tensor_memory().live_bytes - live, out_bytes);
  }
  {
    AttnInputs a = make_inputs(c, true);
    const int64_t nodes = Node::live_count();
    const int64_t live = tensor_memory().live_bytes;
    Tensor out = m->forward(a.q, a.k, a.v);
    EXPECT_TRUE(out.requires_grad());
    EXPECT_EQ(Node::live_count(), nodes + 1);
    EXPECT_EQ(tensor_memory().live_bytes - live, out_bytes) << "backward state beyond q, k, v was kept";
    reset_peak_tensor_memory();
    const int64_t before_backward = tensor_memory().live_bytes;
    out.backward(ones(out.shape()));
    // Output-sized: the upstream ones, the root's copy of it, dq, dk, dv (5); beyond them only
    // the kernel's scratch, O(N + Dh^2) per thread.
    const double nxn = static_cast<double>(c.B * c.H * c.N * c.N) * sizeof(float);
    EXPECT_LT(static_cast<double>(tensor_memory().peak_bytes - before_backward - 5 * out_bytes), 0.125 * nxn);
    EXPECT_EQ(Node::live_count(), nodes);
  }
}

TEST(LinearAttention, NoGraphUnderNoGradAndNoCopiesSaved) { check_graph_and_saved_memory(linear_cfg(true)); }
TEST(MalaAttention, NoGraphUnderNoGradAndNoCopiesSaved) { check_graph_and_saved_memory(mala_cfg(false)); }

// ---- determinism across thread counts -----------------------------------------------------

struct ThreadCountGuard {
  ~ThreadCountGuard() { set_num_threads(0); }
};

void check_thread_independent(const json& cfg) {
  ThreadCountGuard guard;
  const AttnCase c = make_case(cfg, 3, 3, 37, 8, 95);
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2, 4}) {
    set_num_threads(threads);
    Generator init(1);
    auto m = build(c, init);
    AttnInputs a = make_inputs(c, true);
    Tensor out = m->forward(a.q, a.k, a.v);
    Generator wg(7);
    out.backward(uniform(out.shape(), wg, -1.0f, 1.0f));
    std::vector<float> all = out.to_vector();
    for (const Tensor* x : {&a.q, &a.k, &a.v}) {
      const auto g = x->grad().to_vector();
      all.insert(all.end(), g.begin(), g.end());
    }
    runs.push_back(std::move(all));
  }
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(runs[0], runs[2]);
}

TEST(LinearAttention, BitIdenticalAcrossThreadCounts) {
  check_thread_independent(linear_cfg(false));
  check_thread_independent(linear_cfg(true));
}
TEST(MalaAttention, BitIdenticalAcrossThreadCounts) {
  check_thread_independent(mala_cfg(false));
  check_thread_independent(mala_cfg(true));
}

// ---- MALA's properties --------------------------------------------------------------------

// With v = all ones every row of the attention matrix sums to one exactly when eps = 0
// (additive normalisation), for both forms; so every output equals 1.
TEST(MalaAttention, RowsSumToOneWithZeroEps) {
  for (bool causal : {false, true})
    for (float mag : {1.0f, 4.0f}) {
      json cfg = mala_cfg(causal);
      cfg["eps"] = 0.0;
      AttnCase c = make_case(cfg, 2, 2, 67, 8, 101);
      c.input_scale = mag;
      Generator init(1);
      auto m = build(c, init);
      AttnInputs a = make_inputs(c, false);
      const Tensor out = m->forward(a.q, a.k, ones(a.v.shape()));
      expect_close(out, ones(out.shape()), {1e-6, 1e-6}, causal ? "causal rows" : "bidirectional rows");
    }
}

// The attention matrix itself, read through v = identity (Dh = N: o_i = sum_j a_ij e_j = row i).
Tensor attention_rows(Attention& m, const Tensor& q, const Tensor& k) {
  const int64_t n = q.shape()[2];
  Tensor v = zeros(q.shape());
  for (int64_t bh = 0; bh < q.shape()[0] * q.shape()[1]; ++bh)
    for (int64_t j = 0; j < n; ++j) v.mutable_data()[(bh * n + j) * n + j] = 1.0f;
  NoGradGuard ng;
  return m.forward(q, k, v);
}

// The spec's magnitude check. Scaling phi(q_i) by t leaves plain linear attention unchanged (up
// to eps) but not MALA, whose rows get spikier as t grows. With phi = elu + 1, phi(q) scales
// exactly when every entry of q is negative: phi(q + log t) = t phi(q) while q + log t <= 0.
TEST(MalaAttention, MagnitudeSensitivityThatLinearLacks) {
  const int64_t B = 1, H = 2, N = 8;
  Generator gen(5);
  const Tensor q = uniform({B, H, N, N}, gen, -4.0f, -1.5f);  // + log 4 stays below 0
  const Tensor k = uniform({B, H, N, N}, gen, -1.0f, 1.0f);
  Generator init(1);
  AttentionContext ctx;
  ctx.dim = H * N;
  ctx.heads = H;
  ctx.head_dim = N;
  ctx.seq_len = N;
  ctx.init = &init;
  for (bool causal : {false, true}) {
    auto lin = make_attention(linear_cfg(causal), ctx);
    auto mala = make_attention(mala_cfg(causal), ctx);
    const Tensor lin1 = attention_rows(*lin, q, k);
    std::vector<double> spread;  // mean over rows of max_j a_ij - min_j a_ij (visible j)
    Tensor prev;
    for (float t : {0.5f, 1.0f, 2.0f, 4.0f}) {
      const Tensor qt = add_scalar(q, std::log(t));
      expect_close(attention_rows(*lin, qt, k), lin1, {1e-6, 1e-5}, "linear attention after scaling phi(q)");
      const Tensor a = attention_rows(*mala, qt, k);
      double mean_spread = 0.0;
      for (int64_t bh = 0; bh < B * H; ++bh)
        for (int64_t i = 0; i < N; ++i) {
          const int64_t n = causal ? i + 1 : N;
          if (n < 2) continue;
          float lo = 1e30f, hi = -1e30f;
          double row = 0.0;
          for (int64_t j = 0; j < n; ++j) {
            const float x = a.data()[(bh * N + i) * N + j];
            lo = std::min(lo, x);
            hi = std::max(hi, x);
            row += x;
          }
          EXPECT_NEAR(row, 1.0, 1e-3) << "MALA row " << i << " (eps = 1e-6 only perturbs the sum slightly)";
          mean_spread += hi - lo;
        }
      spread.push_back(mean_spread);
      if (prev.defined()) {
        double diff = 0.0;
        for (int64_t e = 0; e < a.numel(); ++e) diff = std::max(diff, std::fabs(double(a.data()[e]) - prev.data()[e]));
        EXPECT_GT(diff, 1e-4) << "MALA did not react to the magnitude of phi(q) (t = " << t << ")";
      }
      prev = a;
    }
    for (size_t i = 1; i < spread.size(); ++i)
      EXPECT_GT(spread[i], spread[i - 1]) << "MALA rows did not get spikier with |phi(q)| (causal " << causal << ")";
  }
}

// ---- registry and errors ------------------------------------------------------------------

TEST(LinearAttention, RegistryEntryAndDefaults) {
  const auto& lin = attention_registry().get("linear", "t");
  const auto& mala = attention_registry().get("mala", "t");
  const json lp = validate_params(lin.schema, json{{"type", "linear"}}, "t", {"type"});
  EXPECT_FLOAT_EQ(lp["eps"].get<float>(), 1e-6f);
  EXPECT_FALSE(lp["causal"].get<bool>());
  const json mp = validate_params(mala.schema, json{{"type", "mala"}}, "t", {"type"});
  EXPECT_FLOAT_EQ(mp["eps"].get<float>(), 1e-6f);
  EXPECT_FALSE(mp["causal"].get<bool>());
  EXPECT_TRUE(mp["scale"].is_null());
  AttentionContext ctx;
  EXPECT_THROW(make_attention(json{{"type", "linear"}, {"eps", -1.0}}, ctx), Error);
  EXPECT_THROW(make_attention(json{{"type", "mala"}, {"scale", 0.0}}, ctx), Error);
}

TEST(MalaAttention, ShapeErrorsNameTheShapes) {
  AttentionContext ctx;
  for (const char* type : {"linear", "mala"}) {
    auto m = make_attention(json{{"type", type}}, ctx);
    const Tensor q = zeros({1, 2, 5, 4}), k = zeros({1, 2, 6, 4}), v = zeros({1, 2, 5, 4});
    try {
      m->forward(q, k, v);
      ADD_FAILURE() << type << ": no error for mismatched shapes";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("[1, 2, 5, 4]"), std::string::npos) << msg;
      EXPECT_NE(msg.find("[1, 2, 6, 4]"), std::string::npos) << msg;
    }
    EXPECT_THROW(m->forward(zeros({2, 5, 4}), zeros({2, 5, 4}), zeros({2, 5, 4})), Error);
  }
}

}  // namespace
}  // namespace softlab::test
