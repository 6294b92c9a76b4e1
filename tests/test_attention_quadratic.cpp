// The quadratic (row-map) attention modules: softmax, sigmoid, selective, softplus, relu,
// power. Each fused kernel is checked against the same maths composed from primitive ops
// (the registry entry's reference, which materialises the N x N matrix and differentiates
// through autograd), by finite differences, for causality or permutation equivariance, for
// large inputs, and for inference memory. Golden values from PyTorch are in
// test_attention_golden.cpp; test_attention_registry.cpp checks every registered module.
#include <gtest/gtest.h>

#include <cmath>

#include "attention_checks.hpp"
#include "attention_reference.hpp"
#include "ops/fast_math.hpp"
#include "softlab/ops.hpp"

using namespace softlab;
using namespace softlab::test;

namespace {

// The row-kernel modules (and selective, which runs softmax's kernel on tempered q and v),
// each in the configs whose maths differ: the long-N and memory checks are about this kernel.
struct Module {
  std::string name;
  json config;  // without "causal"
};

std::vector<Module> modules() {
  return {
      {"softmax", {{"type", "softmax"}}},
      // An explicit bias; the default (-log n) has its own test.
      {"sigmoid", {{"type", "sigmoid"}, {"bias", -1.5}}},
      {"softplus", {{"type", "softplus"}}},
      {"softplus_p2_5", {{"type", "softplus"}, {"p", 2.5}}},
      {"relu", {{"type", "relu"}}},
      {"power2", {{"type", "power"}}},
      {"power4", {{"type", "power"}, {"p", 4}}},
      {"selective", {{"type", "selective"}}},
  };
}

struct Variant {
  Module module;
  bool causal;
  friend void PrintTo(const Variant& v, std::ostream* os) { *os << v.module.config.dump() << (v.causal ? " causal" : ""); }
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  for (const auto& m : modules())
    for (bool causal : {false, true}) out.push_back({m, causal});
  return out;
}

class QuadraticAttention : public ::testing::TestWithParam<Variant> {
 protected:
  AttnCase make_case(int64_t B, int64_t H, int64_t N, int64_t Dh, uint64_t seed = 1) const {
    AttnCase c;
    c.config = GetParam().module.config;
    c.config["causal"] = GetParam().causal;
    c.B = B;
    c.H = H;
    c.N = N;
    c.Dh = Dh;
    c.seed = seed;
    c.perturb_params = seed + 1000;  // selective's temperatures start at zero; test them off it
    return c;
  }
};

TEST_P(QuadraticAttention, MatchesComposedReference) {
  // N = 1, part of a block of 8 queries, a 32-query work item plus a remainder, several
  // items, and a long sequence.
  for (const auto& [B, H, N, Dh] : std::vector<std::array<int64_t, 4>>{
           {2, 2, 1, 4}, {2, 3, 7, 4}, {2, 2, 33, 8}, {1, 2, 100, 16}, {1, 1, 1000, 8}}) {
    const AttnCase c = make_case(B, H, N, Dh);
    expect_matches_reference(c, registry_reference(c));
  }
}

TEST_P(QuadraticAttention, FiniteDifferences) { expect_gradcheck(make_case(1, 2, 5, 4, 3)); }

TEST_P(QuadraticAttention, CausalOrPermutationProperty) {
  const AttnCase c = make_case(2, 2, 9, 4, 5);
  if (GetParam().causal)
    expect_causal(c);
  else
    expect_permutation_equivariant(c);
}

TEST_P(QuadraticAttention, LargeInputsStayFinite) {
  for (float m : {30.0f, 100.0f}) expect_finite_for_large_inputs(make_case(1, 2, 40, 8, 7), m);
}

TEST_P(QuadraticAttention, InferenceAllocatesNoScoreMatrix) {
  expect_inference_memory_below_nxn(make_case(1, 2, 2048, 16, 9));
}

INSTANTIATE_TEST_SUITE_P(All, QuadraticAttention, ::testing::ValuesIn(variants()),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return info.param.module.name + (info.param.causal ? "_causal" : "_bidirectional");
                         });

}  // namespace

namespace {

// The sigmoid bias defaults to -log(training length), the context's seq_len, not the
// length of the sequence at hand.
TEST(SigmoidAttention, DefaultBiasIsMinusLogOfTrainingLength) {
  AttnCase c;
  c.config = {{"type", "sigmoid"}};
  c.N = 7;
  c.seq_len = 50;
  expect_matches_reference(c, registry_reference(c, {{"type", "sigmoid"}, {"bias", -std::log(50.0)}}));
}

// Softplus with the length scale divided by log(training length).
TEST(SoftplusAttention, LogNOverLogTrainDividesTheScale) {
  AttnCase c;
  c.config = {{"type", "softplus"}, {"length_scale", "log_n_over_log_train"}};
  c.N = 9;
  c.seq_len = 20;
  expect_matches_reference(c, [](const Tensor& q, const Tensor& k, const Tensor& v, Attention&) {
    const float lambda = std::log(9.0f) / std::log(20.0f);
    const Tensor f = softplus(scale(matmul(q, k, false, true), lambda / std::sqrt(static_cast<float>(q.shape()[3]))));
    return matmul(div(f, sum(f, -1, true)), v);
  });
}

void expect_build_error(const json& cfg, int64_t seq_len, const std::string& fragment) {
  AttentionContext ctx;
  ctx.dim = 8;
  ctx.heads = 2;
  ctx.head_dim = 4;
  ctx.seq_len = seq_len;
  try {
    (void)make_attention(cfg, ctx);
    ADD_FAILURE() << cfg.dump() << ": expected an error mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(AttentionParams, BadValuesNameTheKey) {
  expect_build_error({{"type", "power"}, {"p", 3}}, 10, "model.attention.p");
  expect_build_error({{"type", "sigmoid"}}, 0, "model.attention.bias");
  expect_build_error({{"type", "softplus"}, {"length_scale", "log_n_over_log_train"}}, 1,
                     "model.attention.length_scale");
  expect_build_error({{"type", "softplus"}, {"length_scale", "log"}}, 10, "model.attention.length_scale");
  expect_build_error({{"type", "softplus"}, {"p", 0.5}}, 10, "model.attention.p");
  expect_build_error({{"type", "selective"}, {"tempreature", 1}}, 10, "tempreature");
  expect_build_error({{"type", "softmax"}, {"scale", -1.0}}, 10, "model.attention.scale");
}

// A module's optional parts are absent when switched off: no parameters to train or save.
TEST(SelectiveAttention, SwitchesDecideTheParameters) {
  Generator init(1);
  AttnCase c;
  c.config = {{"type", "selective"}, {"tok_q", false}, {"tok_v", false}};
  auto m = build(c, init);
  ASSERT_EQ(m->parameters().size(), 1u);
  EXPECT_EQ(m->parameters()[0].name, "beta");
  c.config = {{"type", "selective"}, {"pos", false}, {"tok_q", false}, {"tok_v", false}};
  EXPECT_TRUE(build(c, init)->parameters().empty());
  // With everything off it is softmax attention.
  expect_matches_reference(c, registry_reference(c, {{"type", "softmax"}}));
}

}  // namespace

namespace {

// softplus's log1p: relative error within a few float ulps of log1p over [0, 1], including
// tiny arguments where log(1 + e) would lose everything.
TEST(FastMath, Log1pUnitMatchesLog1p) {
  double worst = 0.0;
  for (int i = 0; i <= 100000; ++i) {
    const float e = static_cast<float>(i) / 100000.0f;
    const double ref = std::log1p(static_cast<double>(e));
    const double got = detail::fast_log1p_unit(e);
    if (ref > 0) worst = std::max(worst, std::fabs(got - ref) / ref);
    else EXPECT_EQ(got, 0.0);
  }
  for (float e : {1e-38f, 1e-30f, 1e-20f, 1e-10f, 1e-7f})
    worst = std::max(worst, std::fabs(detail::fast_log1p_unit(e) - std::log1p(static_cast<double>(e))) /
                                std::log1p(static_cast<double>(e)));
  EXPECT_LT(worst, 4e-7);
}

}  // namespace
