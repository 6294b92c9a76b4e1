// The quadratic (row-map) attention modules: softmax, sigmoid, selective, softplus, relu,
// power. Each fused kernel is checked against the same maths composed from primitive ops
// (which materialise the N x N matrix and differentiate through autograd), by finite
// differences, for causality or permutation equivariance, for large inputs, and for
// inference memory. Golden values from PyTorch are in test_attention_golden.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "attention_checks.hpp"
#include "ops/fast_math.hpp"
#include "softlab/ops.hpp"

using namespace softlab;
using namespace softlab::test;

namespace {

float scale_of(const Tensor& q) { return 1.0f / std::sqrt(static_cast<float>(q.shape()[3])); }
Tensor logits_of(const Tensor& q, const Tensor& k) { return scale(matmul(q, k, false, true), scale_of(q)); }
Tensor causal_minus_inf(int64_t n) {
  Tensor m = zeros({n, n});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) m.mutable_data()[i * n + j] = -std::numeric_limits<float>::infinity();
  return m;
}
// Row-normalise non-negative weights that are zero where masked: g / Σ_j g.
Tensor l1_rows(const Tensor& g) { return div(g, sum(g, -1, true)); }

Tensor softmax_ref(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  Tensor s = logits_of(q, k);
  if (causal) s = add(s, causal_minus_inf(q.shape()[2]));
  return matmul(softmax(s), v);
}

RefFn softmax_reference(bool causal) {
  return [causal](const Tensor& q, const Tensor& k, const Tensor& v, Attention&) {
    return softmax_ref(q, k, v, causal);
  };
}

RefFn sigmoid_reference(bool causal, float bias) {
  return [=](const Tensor& q, const Tensor& k, const Tensor& v, Attention&) {
    const Tensor p = mul(sigmoid(add_scalar(logits_of(q, k), bias)), visibility(q.shape()[2], causal));
    return matmul(p, v);
  };
}

RefFn softplus_reference(bool causal, float power) {
  return [=](const Tensor& q, const Tensor& k, const Tensor& v, Attention&) {
    const Tensor lambda = log(visible_counts(q.shape()[2], causal));  // [N, 1]
    Tensor f = softplus(mul(logits_of(q, k), lambda));
    if (power != 1.0f) f = exp(scale(log(f), power));
    return matmul(l1_rows(mul(f, visibility(q.shape()[2], causal))), v);
  };
}

RefFn relu_reference(bool causal) {
  return [=](const Tensor& q, const Tensor& k, const Tensor& v, Attention&) {
    const int64_t n = q.shape()[2];
    return matmul(div(mul(relu(logits_of(q, k)), visibility(n, causal)), visible_counts(n, causal)), v);
  };
}

RefFn power_reference(bool causal, int power) {
  return [=](const Tensor& q, const Tensor& k, const Tensor& v, Attention&) {
    const Tensor z = logits_of(q, k);
    Tensor g = z;
    for (int e = 1; e < power; ++e) g = mul(g, z);
    return matmul(l1_rows(mul(g, visibility(q.shape()[2], causal))), v);
  };
}

// Selective, composed the other way round from the module: the temperature multiplies the
// logit rows (not q) and the values.
RefFn selective_reference(bool causal) {
  return [=](const Tensor& q, const Tensor& k, const Tensor& v, Attention& m) {
    const int64_t H = q.shape()[1], n = q.shape()[2], Dh = q.shape()[3];
    Tensor beta, wq, bq, wv, bv;
    for (auto& p : m.parameters()) {
      if (p.name == "beta") beta = p.tensor;
      if (p.name == "w_q") wq = p.tensor;
      if (p.name == "b_q") bq = p.tensor;
      if (p.name == "w_v") wv = p.tensor;
      if (p.name == "b_v") bv = p.tensor;
    }
    // x_i·w[h] as a batched product with w broadcast over the batch: [B, H, N, 1].
    auto dot_w = [&](const Tensor& x, const Tensor& w) {
      return matmul(x, add(zeros({x.shape()[0], H, Dh, 1}), reshape(w, {1, H, Dh, 1})));
    };
    Tensor tau = mul(exp(neg(exp(beta))), log(visible_counts(n, causal)));  // c log n_i, [N, 1]
    tau = add_scalar(add(tau, tanh(add(dot_w(q, wq), reshape(bq, {1, H, 1, 1})))), 1.0f);
    Tensor tv = add_scalar(tanh(add(dot_w(v, wv), reshape(bv, {1, H, 1, 1}))), 1.0f);
    Tensor s = mul(logits_of(q, k), tau);
    if (causal) s = add(s, causal_minus_inf(n));
    return matmul(softmax(s), mul(v, tv));
  };
}

struct Module {
  std::string name;
  json config;  // without "causal"
  std::function<RefFn(bool causal)> reference;
  bool has_causal = true;
};

std::vector<Module> modules() {
  return {
      {"softmax", {{"type", "softmax"}}, softmax_reference},
      // An explicit bias so the reference knows it; the default (-log n) has its own test.
      {"sigmoid", {{"type", "sigmoid"}, {"bias", -1.5}}, [](bool c) { return sigmoid_reference(c, -1.5f); }},
      {"softplus", {{"type", "softplus"}}, [](bool c) { return softplus_reference(c, 1.0f); }},
      {"softplus_p2_5", {{"type", "softplus"}, {"p", 2.5}}, [](bool c) { return softplus_reference(c, 2.5f); }},
      {"relu", {{"type", "relu"}}, relu_reference},
      {"power2", {{"type", "power"}}, [](bool c) { return power_reference(c, 2); }},
      {"power4", {{"type", "power"}, {"p", 4}}, [](bool c) { return power_reference(c, 4); }},
      {"selective", {{"type", "selective"}}, selective_reference},
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
    for (bool causal : {false, true})
      if (!causal || m.has_causal) out.push_back({m, causal});
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
  RefFn reference() const { return GetParam().module.reference(GetParam().causal); }
};

TEST_P(QuadraticAttention, MatchesComposedReference) {
  // N = 1, part of a block of 8 queries, a 32-query work item plus a remainder, several
  // items, and a long sequence.
  for (const auto& [B, H, N, Dh] : std::vector<std::array<int64_t, 4>>{
           {2, 2, 1, 4}, {2, 3, 7, 4}, {2, 2, 33, 8}, {1, 2, 100, 16}, {1, 1, 1000, 8}}) {
    expect_matches_reference(make_case(B, H, N, Dh), reference());
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
  expect_matches_reference(c, sigmoid_reference(false, -std::log(50.0f)));
}

// Softplus with the length scale divided by log(training length).
TEST(SoftplusAttention, LogNOverLogTrainDividesTheScale) {
  AttnCase c;
  c.config = {{"type", "softplus"}, {"length_scale", "log_n_over_log_train"}};
  c.N = 9;
  c.seq_len = 20;
  expect_matches_reference(c, [](const Tensor& q, const Tensor& k, const Tensor& v, Attention&) {
    const float lambda = std::log(9.0f) / std::log(20.0f);
    return matmul(l1_rows(softplus(scale(logits_of(q, k), lambda))), v);
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
  expect_matches_reference(c, softmax_reference(false));
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
