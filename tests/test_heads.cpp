// The heads: each fused loss against the same maths composed from primitive ops, finite-
// difference gradient checks w.r.t. features and parameters, the properties docs/heads.md
// section 7 names, checkpoint round trips, the EBV generator, and config errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numbers>

#include "gradcheck.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/head.hpp"
#include "softlab/softlab.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

struct HeadCase {
  std::string name;
  json config;
  int64_t B = 7, D = 6, C = 5;
  float weight_scale = 1.0f;  // multiplies the initial weights (the Fourier init is 1/100 of the default)
};
void PrintTo(const HeadCase& c, std::ostream* os) { *os << c.name << " " << c.config.dump(); }

std::vector<HeadCase> head_cases() {
  return {
      {"softmax", {{"type", "softmax"}}},
      {"softmax_ls_t", {{"type", "softmax"}, {"label_smoothing", 0.1}, {"temperature", 2.0}}},
      {"svm_ovr_p2", {{"type", "svm"}}},
      {"svm_ovr_p1_mean_penalty",
       {{"type", "svm"}, {"p", 1}, {"margin", 0.5}, {"C", 2.0}, {"class_reduction", "mean"},
        {"weight_penalty", 0.01}, {"penalty_form", "mean"}}},
      {"svm_ww_p1", {{"type", "svm"}, {"variant", "ww"}, {"p", 1}}},
      {"svm_ww_p2", {{"type", "svm"}, {"variant", "ww"}, {"C", 0.5}, {"weight_penalty", 0.1}}},
      {"svm_cs_p1", {{"type", "svm"}, {"variant", "cs"}, {"p", 1}}},
      {"svm_cs_p2", {{"type", "svm"}, {"variant", "cs"}, {"margin", 2.0}}},
      {"svm_agarap", {{"type", "svm"}, {"preset", "agarap2017"}}},
      {"zloss", {{"type", "zloss"}}},
      {"zloss_sharp", {{"type", "zloss"}, {"a", 4.0}, {"b", 1.5}, {"var_eps", 0.0}}},
      {"ebv", {{"type", "ebv"}}},
      {"ebv_low_dim", {{"type", "ebv"}, {"dim", 3}, {"threshold", 0.6}, {"tau", 0.2}, {"label_smoothing", 0.1}}},
      {"fourier", {{"type", "fourier"}}, 7, 6, 5, 100.0f},
      {"fourier_n1_gamma", {{"type", "fourier"}, {"frequencies", 1}, {"gamma", 0.05}}, 7, 6, 6, 30.0f},
      {"stablemax", {{"type", "stablemax"}}},
      {"stablemax_large", {{"type", "stablemax"}}, 7, 6, 5, 30.0f},
      {"cosine", {{"type", "cosine"}}},
      {"cosine_learned", {{"type", "cosine"}, {"scale", 8.0}, {"learn_scale", true}, {"margin", 0.2},
                          {"label_smoothing", 0.1}}},
  };
}

struct Built {
  std::unique_ptr<Head> head;
  Tensor h;
  std::vector<int32_t> labels;
};

Built build(const HeadCase& c, uint64_t seed = 7) {
  Generator init(seed);
  HeadContext ctx;
  ctx.in_dim = c.D;
  ctx.num_classes = c.C;
  ctx.train_size = 1000;
  ctx.init = &init;
  Built b;
  b.head = make_head(c.config, ctx);
  for (auto& p : b.head->parameters())
    if (p.name == "weight" || p.name == "bias") {
      float* d = p.tensor.mutable_data();
      for (int64_t i = 0; i < p.tensor.numel(); ++i) d[i] *= c.weight_scale;
    }
  Generator gen(seed + 100);
  b.h = uniform({c.B, c.D}, gen, -1.5f, 1.5f);
  for (int64_t n = 0; n < c.B; ++n) b.labels.push_back(static_cast<int32_t>(gen.below(static_cast<uint64_t>(c.C))));
  return b;
}

Tensor param(const Head& head, const std::string& name) {
  for (const auto& p : head.parameters())
    if (p.name == name) return p.tensor;
  return Tensor();
}

Tensor one_hot(std::span<const int32_t> labels, int64_t C, float value = 1.0f) {
  Tensor t = zeros({static_cast<int64_t>(labels.size()), C});
  for (size_t n = 0; n < labels.size(); ++n) t.mutable_data()[static_cast<int64_t>(n) * C + labels[n]] = value;
  return t;
}

float cfg_float(const json& c, const char* key, float fallback) {
  return c.contains(key) && !c[key].is_null() ? c[key].get<float>() : fallback;
}

// ---- the same maths from primitive ops (autograd differentiates every step) -------------

// mean_n -sum_k q_nk log_softmax(lam)_nk with q = (1 - eps) onehot + eps / C.
Tensor composed_ce(const Tensor& lam, std::span<const int32_t> labels, float eps) {
  const int64_t B = lam.shape()[0], C = lam.shape()[1];
  Tensor q = add_scalar(one_hot(labels, C, 1.0f - eps), eps / static_cast<float>(C));
  return scale(sum(mul(q, log_softmax(lam))), -1.0f / static_cast<float>(B));
}

Tensor row_norms(const Tensor& x) { return sqrt(sum(mul(x, x), 1, true)); }

Tensor composed_loss(const Head& head, const json& cfg, const Tensor& h, std::span<const int32_t> labels, int64_t C) {
  const std::string type = cfg["type"];
  const int64_t B = h.shape()[0];
  const Tensor W = param(head, "weight"), b = param(head, "bias");
  const Tensor Y = one_hot(labels, C);
  const float inv_b = 1.0f / static_cast<float>(B);
  if (type == "softmax")
    return composed_ce(scale(linear(h, W, b), 1.0f / cfg_float(cfg, "temperature", 1.0f)), labels,
                       cfg_float(cfg, "label_smoothing", 0.0f));
  if (type == "svm") {
    const bool agarap = cfg.value("preset", "") == "agarap2017";
    const std::string variant = cfg.value("variant", "ovr");
    const float m = cfg_float(cfg, "margin", 1.0f), cpen = cfg_float(cfg, "C", 1.0f);
    const int p = cfg.value("p", 2);
    const float lambda = cfg_float(cfg, "weight_penalty", agarap ? 1.0f : 0.0f);
    const bool class_mean = cfg.value("class_reduction", agarap ? "mean" : "sum") == "mean";
    const bool penalty_mean = cfg.value("penalty_form", agarap ? "mean" : "sum") == "mean";
    const Tensor s = linear(h, W, b);
    auto pw = [&](const Tensor& v) { return p == 1 ? v : mul(v, v); };
    Tensor data;
    if (variant == "ovr") {
      const Tensor t = add_scalar(scale(Y, 2.0f), -1.0f);  // +1 for the label, -1 otherwise
      const Tensor v = relu(add_scalar(neg(mul(t, s)), m));
      data = scale(sum(pw(v)), cpen * inv_b * (class_mean ? 1.0f / static_cast<float>(C) : 1.0f));
    } else {
      const Tensor sy = sum(mul(s, Y), 1, true);
      if (variant == "ww") {
        const Tensor v = mul(relu(add_scalar(sub(s, sy), m)), add_scalar(neg(Y), 1.0f));  // k != y only
        data = scale(sum(pw(v)), cpen * inv_b / static_cast<float>(C));
      } else {
        const Tensor worst = max(sub(s, scale(Y, 1e6f)), 1, true);
        data = scale(sum(pw(relu(add_scalar(sub(worst, sy), m)))), cpen * inv_b);
      }
    }
    if (lambda > 0.0f)
      data = add(data, scale(sum(mul(W, W)), lambda / (penalty_mean ? static_cast<float>(W.numel()) : 1.0f)));
    return data;
  }
  if (type == "zloss") {
    const float a = cfg_float(cfg, "a", 1.0f), bk = cfg_float(cfg, "b", std::sqrt(static_cast<float>(C - 1)));
    const Tensor o = linear(h, W, b);
    const Tensor d = sub(o, mean(o, 1, true));
    const Tensor z = div(d, sqrt(add_scalar(mean(mul(d, d), 1, true), cfg_float(cfg, "var_eps", 1e-6f))));
    const Tensor zy = sum(mul(z, Y), 1);
    return scale(sum(softplus(scale(add_scalar(neg(zy), bk), a))), inv_b / a);
  }
  if (type == "ebv") {
    const Tensor v = linear(h, W, b);
    const Tensor E = head.buffers().at(0).second;
    const Tensor cos = matmul(div(v, row_norms(v)), div(E, row_norms(E)), false, true);
    return composed_ce(scale(cos, 1.0f / cfg_float(cfg, "tau", 0.07f)), labels, cfg_float(cfg, "label_smoothing", 0.0f));
  }
  if (type == "fourier") {
    const int64_t J = W.shape()[0] / 2, N = J - 1;
    const float eps_log = cfg_float(cfg, "eps_log", 1e-5f), gamma = cfg_float(cfg, "gamma", 1e-6f);
    std::vector<float> cs(static_cast<size_t>(C * J)), sn(cs.size());
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < J; ++j) {
        const double x = -1.0 + (2.0 * static_cast<double>(i) + 1.0) / static_cast<double>(C);
        cs[static_cast<size_t>(i * J + j)] = static_cast<float>(std::cos(std::numbers::pi * static_cast<double>(j) * x));
        sn[static_cast<size_t>(i * J + j)] = static_cast<float>(std::sin(std::numbers::pi * static_cast<double>(j) * x));
      }
    const Tensor cos_t = from_vector({C, J}, cs), sin_t = from_vector({C, J}, sn);
    const Tensor o = linear(h, W, b);
    const Tensor u = slice(o, 1, 0, J), v = slice(o, 1, J, 2 * J);
    const Tensor re = sub(matmul(u, cos_t, false, true), matmul(v, sin_t, false, true));
    const Tensor im = add(matmul(u, sin_t, false, true), matmul(v, cos_t, false, true));
    const Tensor c0 = sum(add(mul(u, u), mul(v, v)), 1, true);
    const Tensor p = div(add(mul(re, re), mul(im, im)), scale(c0, 2.0f));
    const Tensor q = div(p, sum(p, 1, true));
    Tensor loss = composed_ce(log(add_scalar(q, eps_log)), labels, 0.0f);
    for (int64_t k = 1; k <= N; ++k) {
      const Tensor up = slice(u, 1, k, J), u0 = slice(u, 1, 0, J - k);
      const Tensor vp = slice(v, 1, k, J), v0 = slice(v, 1, 0, J - k);
      const Tensor cr = sum(add(mul(up, u0), mul(vp, v0)), 1);
      const Tensor ci = sum(sub(mul(vp, u0), mul(up, v0)), 1);
      const float w = static_cast<float>(2.0 * std::numbers::pi * std::numbers::pi * static_cast<double>(k * k));
      loss = add(loss, scale(sum(add(mul(cr, cr), mul(ci, ci))), gamma * 2.0f * w * inv_b));
    }
    return loss;
  }
  if (type == "stablemax") {
    const Tensor z = linear(h, W, b);
    // s(z) = 1 + relu(z) + 1 / (1 + relu(-z)) - 1: z + 1 for z >= 0, 1 / (1 - z) below.
    const Tensor s = add(relu(z), div(full({1}, 1.0f), add_scalar(relu(neg(z)), 1.0f)));
    const Tensor P = div(s, sum(s, 1, true));
    return scale(sum(log(sum(mul(P, Y), 1))), -inv_b);
  }
  if (type == "cosine") {
    const Tensor cos = matmul(div(h, row_norms(h)), div(W, row_norms(W)), false, true);
    const Tensor shifted = sub(cos, scale(Y, cfg_float(cfg, "margin", 0.0f)));
    const Tensor s = param(head, "scale");
    const Tensor lam = s.defined() ? mul(shifted, s) : scale(shifted, cfg_float(cfg, "scale", 16.0f));
    return composed_ce(lam, labels, cfg_float(cfg, "label_smoothing", 0.0f));
  }
  ADD_FAILURE() << "no composed reference for head '" << type << "'";
  return Tensor();
}

class HeadCases : public ::testing::TestWithParam<HeadCase> {};

TEST_P(HeadCases, FusedMatchesComposed) {
  const HeadCase& c = GetParam();
  Built b = build(c);
  b.h.set_requires_grad(true);
  b.head->train();
  HeadOutput out = b.head->forward(b.h, b.labels);
  out.loss.backward();
  const float fused = out.loss.item();
  Tensor gh = b.h.grad();
  std::vector<Tensor> gp;
  for (auto& p : b.head->parameters()) {
    gp.push_back(p.tensor.grad());
    p.tensor.zero_grad();
  }
  b.h.zero_grad();
  Tensor ref = composed_loss(*b.head, c.config, b.h, b.labels, c.C);
  ASSERT_TRUE(ref.defined());
  ref.backward();
  EXPECT_NEAR(fused, ref.item(), 1e-5 + 1e-5 * std::abs(ref.item()));
  auto expect_all_close = [](const std::string& what, const Tensor& a, const Tensor& r) {
    ASSERT_TRUE(a.defined() && r.defined()) << what;
    for (int64_t i = 0; i < r.numel(); ++i)
      ASSERT_NEAR(a.data()[i], r.data()[i], 2e-5 + 1e-4 * std::abs(r.data()[i])) << what << " element " << i;
  };
  expect_all_close("d features", gh, b.h.grad());
  const auto params = b.head->parameters();
  for (size_t i = 0; i < params.size(); ++i) expect_all_close("d " + params[i].name, gp[i], params[i].tensor.grad());
}

TEST_P(HeadCases, Gradcheck) {
  const HeadCase& c = GetParam();
  Built b = build(c);
  b.head->train();
  std::vector<Tensor> inputs = {b.h};
  for (auto& p : b.head->parameters()) inputs.push_back(p.tensor);
  inputs[0].set_requires_grad(true);
  const auto labels = b.labels;
  Head* head = b.head.get();
  test::GradcheckOptions o;
  o.atol = 1e-3;
  o.rtol = 1e-2;
  const auto r = test::gradcheck([&](const std::vector<Tensor>& in) { return head->forward(in[0], labels).loss; },
                                 inputs, o);
  EXPECT_TRUE(r.ok) << r.report;
}

TEST_P(HeadCases, ScoresAndPredictionsAgreeInEveryMode) {
  const HeadCase& c = GetParam();
  Built b = build(c);
  b.head->train();
  const Tensor train_scores = b.head->forward(b.h, b.labels).scores;
  b.head->eval();
  NoGradGuard no_grad;
  const HeadOutput ev = b.head->forward(b.h, {});
  ASSERT_EQ(ev.scores.shape(), Shape({c.B, c.C}));
  EXPECT_FALSE(ev.loss.defined());
  EXPECT_EQ(ev.scores.to_vector(), train_scores.to_vector());
  const auto pred = b.head->predict(ev.scores);
  ASSERT_EQ(static_cast<int64_t>(pred.size()), c.B);
  for (int32_t p : pred) EXPECT_TRUE(p >= 0 && p < c.C);
  // Probabilities, where the head has a probability model: non-negative rows summing to 1.
  const Tensor probs = b.head->probabilities(ev.scores);
  if (probs.defined()) {
    ASSERT_EQ(probs.shape(), ev.scores.shape());
    for (int64_t n = 0; n < c.B; ++n) {
      double s = 0.0;
      for (int64_t k = 0; k < c.C; ++k) {
        EXPECT_GE(probs.data()[n * c.C + k], 0.0f);
        s += probs.data()[n * c.C + k];
      }
      EXPECT_NEAR(s, 1.0, 1e-5);
    }
  }
}

TEST_P(HeadCases, CheckpointRoundTrip) {
  const HeadCase& c = GetParam();
  Built a = build(c, 1);
  // Move every tensor away from its initial value, so a fresh head cannot match by accident.
  for (auto& [name, t] : a.head->state()) {
    float* d = t.mutable_data();
    for (int64_t i = 0; i < t.numel(); ++i) d[i] = d[i] * 0.9f + 0.01f * static_cast<float>(i % 7);
  }
  const std::string dir = test::temp_dir("head_ckpt_" + c.name);
  const std::string path = dir + "/head.ckpt";
  Checkpoint ck;
  ck.meta = {{"head", c.config}};
  ck.tensors = a.head->state();
  save_checkpoint(path, ck);
  Built b = build(c, 2);
  b.head->load_state(load_checkpoint(path).tensors);
  fs::remove_all(dir);
  const auto sa = a.head->state(), sb = b.head->state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_EQ(sa[i].second.to_vector(), sb[i].second.to_vector()) << sa[i].first;
  }
  a.head->eval();
  b.head->eval();
  NoGradGuard no_grad;
  const HeadOutput oa = a.head->forward(a.h, a.labels), ob = b.head->forward(a.h, a.labels);
  EXPECT_EQ(oa.scores.to_vector(), ob.scores.to_vector());
  EXPECT_EQ(oa.loss.item(), ob.loss.item());
}

INSTANTIATE_TEST_SUITE_P(All, HeadCases, ::testing::ValuesIn(head_cases()),
                         [](const ::testing::TestParamInfo<HeadCase>& info) { return info.param.name; });

TEST(Heads, EveryRegisteredHeadHasCases) {
  std::set<std::string> covered;
  for (const auto& c : head_cases()) covered.insert(c.config["type"].get<std::string>());
  for (const auto& name : head_registry().names()) EXPECT_TRUE(covered.count(name)) << name;
}

// ---- properties ------------------------------------------------------------------------

TEST(Zloss, InvariantToShiftAndScaleOfTheOutputs) {
  HeadCase c{"z", {{"type", "zloss"}, {"var_eps", 0.0}, {"a", 2.0}, {"b", 1.0}}};
  Built b = build(c);
  const float base = b.head->forward(b.h, b.labels).loss.item();
  const Tensor z = b.head->forward(b.h, {}).scores;
  for (int64_t n = 0; n < c.B; ++n) {  // sum z = 0, sum z^2 = C
    double s = 0.0, s2 = 0.0;
    for (int64_t k = 0; k < c.C; ++k) {
      const double v = z.data()[n * c.C + k];
      s += v;
      s2 += v * v;
      EXPECT_LE(std::abs(v), std::sqrt(static_cast<double>(c.C - 1)) + 1e-5);
    }
    EXPECT_NEAR(s, 0.0, 1e-5);
    EXPECT_NEAR(s2, static_cast<double>(c.C), 1e-4);
  }
  Tensor W = param(*b.head, "weight"), bias = param(*b.head, "bias");
  const std::vector<float> w0 = W.to_vector(), b0 = bias.to_vector();
  for (auto [alpha, shift] : {std::pair{0.1f, -3.0f}, {7.0f, 100.0f}, {1.0f, 1e3f}}) {
    // o -> alpha o + shift: W -> alpha W, b -> alpha b + shift
    for (int64_t i = 0; i < W.numel(); ++i) W.mutable_data()[i] = alpha * w0[static_cast<size_t>(i)];
    for (int64_t i = 0; i < bias.numel(); ++i) bias.mutable_data()[i] = alpha * b0[static_cast<size_t>(i)] + shift;
    EXPECT_NEAR(b.head->forward(b.h, b.labels).loss.item(), base, 2e-4 * std::abs(base))
        << "alpha " << alpha << ", shift " << shift;
  }
}

TEST(Zloss, GradientIsOrthogonalToOnesAndToZ) {
  // With var_eps = 0 training never moves the mean or the scale of o directly.
  HeadCase c{"z", {{"type", "zloss"}, {"var_eps", 0.0}}};
  Built b = build(c);
  Tensor o = linear(b.h, param(*b.head, "weight"), param(*b.head, "bias")).detach();
  o.set_requires_grad(true);
  // The head's loss as a function of o: a second head whose linear layer is the identity.
  HeadCase id{"z", {{"type", "zloss"}, {"var_eps", 0.0}}, 7, 5, 5};
  Built e = build(id);
  Tensor W = param(*e.head, "weight"), bias = param(*e.head, "bias");
  for (int64_t i = 0; i < W.numel(); ++i) W.mutable_data()[i] = (i / 5 == i % 5) ? 1.0f : 0.0f;
  for (int64_t i = 0; i < bias.numel(); ++i) bias.mutable_data()[i] = 0.0f;
  e.head->forward(o, b.labels).loss.backward();
  const Tensor g = o.grad();
  const Tensor z = e.head->forward(o.detach(), {}).scores;
  for (int64_t n = 0; n < c.B; ++n) {
    double g1 = 0.0, gz = 0.0, gn = 0.0;
    for (int64_t k = 0; k < c.C; ++k) {
      g1 += g.data()[n * c.C + k];
      gz += g.data()[n * c.C + k] * z.data()[n * c.C + k];
      gn += std::abs(g.data()[n * c.C + k]);
    }
    EXPECT_GT(gn, 1e-4) << "a zero gradient would make this test vacuous";
    EXPECT_NEAR(g1, 0.0, 1e-6);
    EXPECT_NEAR(gz, 0.0, 1e-5);
  }
}

TEST(Fourier, DensityIsNonNegativeSumsToOneAndIgnoresTheCoefficientScale) {
  for (int64_t n : {1, 2, 4, 9}) {
    HeadCase c{"f", {{"type", "fourier"}, {"frequencies", n}}, 16, 8, 10, 1.0f};
    Built b = build(c);
    NoGradGuard no_grad;
    const Tensor s = b.head->forward(b.h, {}).scores;
    const Tensor q = b.head->probabilities(s);
    for (int64_t r = 0; r < c.B; ++r) {
      double sum = 0.0;
      for (int64_t k = 0; k < c.C; ++k) {
        EXPECT_GE(q.data()[r * c.C + k], 0.0f);
        sum += q.data()[r * c.C + k];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5) << "N = " << n;
    }
    // a -> alpha a (W, b -> alpha W, alpha b) leaves the density unchanged.
    for (auto& p : b.head->parameters()) {
      float* d = p.tensor.mutable_data();
      for (int64_t i = 0; i < p.tensor.numel(); ++i) d[i] *= 37.0f;
    }
    const Tensor s2 = b.head->forward(b.h, {}).scores;
    for (int64_t i = 0; i < s.numel(); ++i) EXPECT_NEAR(s2.data()[i], s.data()[i], 1e-4) << "N = " << n;
  }
}

TEST(Fourier, FewFrequenciesGiveASmoothDensity) {
  // With N = 1, p(x) = |a0 + a1 e^{i pi x}|^2 / (2 c0): at most one local maximum on the
  // circle of bins, so the density has at most one peak (cyclically).
  HeadCase c{"f", {{"type", "fourier"}, {"frequencies", 1}}, 32, 8, 10, 1.0f};
  Built b = build(c);
  NoGradGuard no_grad;
  const Tensor q = b.head->probabilities(b.head->forward(b.h, {}).scores);
  for (int64_t r = 0; r < c.B; ++r) {
    int peaks = 0;
    for (int64_t k = 0; k < c.C; ++k) {
      const float prev = q.data()[r * c.C + (k + c.C - 1) % c.C], next = q.data()[r * c.C + (k + 1) % c.C];
      peaks += q.data()[r * c.C + k] > prev && q.data()[r * c.C + k] > next;
    }
    EXPECT_LE(peaks, 1) << "row " << r;
  }
}

TEST(Svm, HingeLossesAreZeroWhenEveryMarginIsMet) {
  // D = C, W = 3 I, b = -1.5, features one-hot of the label: s_y = 1.5, others -1.5.
  for (const char* variant : {"ovr", "ww", "cs"})
    for (int p : {1, 2}) {
      HeadCase c{"svm", {{"type", "svm"}, {"variant", variant}, {"p", p}}, 6, 5, 5};
      Built b = build(c);
      Tensor W = param(*b.head, "weight"), bias = param(*b.head, "bias");
      for (int64_t i = 0; i < W.numel(); ++i) W.mutable_data()[i] = (i / 5 == i % 5) ? 3.0f : 0.0f;
      for (int64_t i = 0; i < bias.numel(); ++i) bias.mutable_data()[i] = -1.5f;
      Tensor h = one_hot(b.labels, 5);
      h.set_requires_grad(true);
      HeadOutput out = b.head->forward(h, b.labels);
      out.loss.backward();
      EXPECT_EQ(out.loss.item(), 0.0f) << variant << " p=" << p;
      for (float g : h.grad().to_vector()) EXPECT_EQ(g, 0.0f) << variant << " p=" << p;
      // One violated margin makes it positive again (s_0 = 1 on rows whose label is not 0).
      bias.mutable_data()[0] = 1.0f;
      const float l = b.head->forward(h.detach(), b.labels).loss.item();
      EXPECT_GT(l, 0.0f) << variant << " p=" << p;
    }
}

TEST(Svm, SignArgmaxIsAgarapsDecisionRule) {
  HeadCase c{"svm", {{"type", "svm"}, {"preset", "agarap2017"}}, 3, 6, 4};
  Built b = build(c);
  const Tensor s = from_vector({3, 4}, {-1.0f, 0.5f, 2.0f, -3.0f,    // first positive: 1 (argmax: 2)
                                        -1.0f, -2.0f, 0.0f, -0.5f,   // none positive, first zero: 2
                                        -1.0f, -2.0f, -0.1f, -0.5f}); // none positive or zero: 0
  EXPECT_EQ(b.head->predict(s), (std::vector<int32_t>{1, 2, 0}));
  EXPECT_EQ(argmax_rows(s), (std::vector<int32_t>{2, 2, 2}));
  // The preset's penalty replaces weight decay on W.
  for (const auto& p : b.head->parameters()) {
    if (p.name == "weight") {
      EXPECT_FALSE(p.decay);
    }
  }
}

TEST(Stablemax, FiniteWhereSoftmaxOverflows) {
  HeadCase c{"s", {{"type", "stablemax"}}, 4, 3, 5, 1.0f};
  Built b = build(c);
  Tensor W = param(*b.head, "weight");
  for (int64_t i = 0; i < W.numel(); ++i) W.mutable_data()[i] = (i % 3 == 0 ? 1e30f : -1e30f) * (i % 2 ? 1.0f : 0.5f);
  Tensor h = from_vector({4, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0});
  h.set_requires_grad(true);
  HeadOutput out = b.head->forward(h, b.labels);
  float zmax = 0.0f;
  for (float z : out.scores.to_vector()) zmax = std::max(zmax, std::abs(z));
  ASSERT_GE(zmax, 1e29f);
  EXPECT_TRUE(std::isfinite(out.loss.item()));
  out.loss.backward();
  for (float g : h.grad().to_vector()) EXPECT_TRUE(std::isfinite(g));
  for (float g : W.grad().to_vector()) EXPECT_TRUE(std::isfinite(g));
  const Tensor P = b.head->probabilities(out.scores);
  for (float p : P.to_vector()) EXPECT_TRUE(std::isfinite(p) && p >= 0.0f && p <= 1.0f);
  // The textbook softmax exp(z) / sum exp(z) of the same scores is not finite.
  NoGradGuard no_grad;
  const Tensor e = exp(out.scores.detach());
  const Tensor naive = div(e, sum(e, 1, true));
  bool any_nan = false;
  for (float p : naive.to_vector()) any_nan |= !std::isfinite(p);
  EXPECT_TRUE(any_nan);
}

TEST(Stablemax, MatchesSoftmaxOrderAndCannotCollapse) {
  // P_y -> 1 only polynomially in the logit gap: at a gap of 1e4 the loss is still > 0 in
  // float32, where softmax's is exactly 0.
  HeadCase c{"s", {{"type", "stablemax"}}, 1, 2, 2, 1.0f};
  Built b = build(c);
  Tensor W = param(*b.head, "weight"), bias = param(*b.head, "bias");
  for (int64_t i = 0; i < W.numel(); ++i) W.mutable_data()[i] = 0.0f;
  bias.mutable_data()[0] = 5e3f;
  bias.mutable_data()[1] = -5e3f;
  const std::vector<int32_t> y = {0};
  const float l = b.head->forward(b.h, y).loss.item();
  EXPECT_GT(l, 0.0f);
  EXPECT_NEAR(l, std::log1p(1.0 / (5001.0 * 5001.0)), 1e-9);
  EXPECT_EQ(cross_entropy(from_vector({1, 2}, {5e3f, -5e3f}), y).item(), 0.0f);
}

TEST(Heads, TopKCountsTheLabelsRankWithTheArgmaxTieRule) {
  const Tensor s = from_vector({4, 4}, {0.1f, 0.9f, 0.5f, 0.3f,    // label 2: rank 1
                                        0.2f, 0.2f, 0.2f, 0.9f,    // label 2: 0.9 higher, two equal at lower index: rank 3
                                        0.7f, 0.1f, 0.1f, 0.1f,    // label 0: rank 0
                                        0.4f, 0.3f, 0.2f, 0.1f});  // label 3: rank 3
  const std::vector<int32_t> y = {2, 2, 0, 3};
  EXPECT_EQ(topk_correct(s, y, 1), 1);
  EXPECT_EQ(topk_correct(s, y, 2), 2);
  EXPECT_EQ(topk_correct(s, y, 3), 2);
  EXPECT_EQ(topk_correct(s, y, 4), 4);
  EXPECT_EQ(topk_correct(s, y, 9), 4);
  // k = 1 agrees with arg-max, ties included.
  const auto am = argmax_rows(s);
  int64_t hits = 0;
  for (size_t n = 0; n < y.size(); ++n) hits += am[n] == y[n];
  EXPECT_EQ(topk_correct(s, y, 1), hits);
}

// ---- EBV generator --------------------------------------------------------------------

TEST(EbvBasis, ReachesTheThresholdWithUnitRows) {
  for (auto [C, d, alpha] : {std::tuple{10, 10, 0.002}, {10, 16, 0.002}, {10, 5, 0.4}, {4, 3, 0.4}}) {
    const EbvBasis e = generate_ebv_basis(C, d, alpha, 1e-3, 100000, 42);
    EXPECT_TRUE(e.converged) << C << "x" << d;
    EXPECT_LE(e.max_cos, alpha + 1e-4) << C << "x" << d;
    EXPECT_GT(e.steps, 0);
    EXPECT_NEAR(max_pairwise_cos(e.basis), e.max_cos, 1e-6);
    ASSERT_EQ(e.basis.shape(), Shape({C, d}));
    for (int64_t k = 0; k < C; ++k) {
      double n2 = 0.0;
      for (int64_t j = 0; j < d; ++j) n2 += double{e.basis.data()[k * d + j]} * e.basis.data()[k * d + j];
      EXPECT_NEAR(n2, 1.0, 1e-6);
    }
    EXPECT_GE(e.max_cos, welch_bound(C, d) - 1e-6);
  }
}

TEST(EbvBasis, DeterministicPerSeed) {
  const EbvBasis a = generate_ebv_basis(10, 10, 0.002, 1e-3, 100000, 42);
  const EbvBasis b = generate_ebv_basis(10, 10, 0.002, 1e-3, 100000, 42);
  const EbvBasis c = generate_ebv_basis(10, 10, 0.002, 1e-3, 100000, 43);
  EXPECT_EQ(a.basis.to_vector(), b.basis.to_vector());
  EXPECT_NE(a.basis.to_vector(), c.basis.to_vector());
}

TEST(EbvBasis, ReportsWhenTheStepLimitStopsIt) {
  const EbvBasis e = generate_ebv_basis(10, 10, 0.002, 1e-3, 3, 42);
  EXPECT_FALSE(e.converged);
  EXPECT_EQ(e.steps, 3);
  EXPECT_GT(e.max_cos, 0.0021);
}

TEST(EbvHead, PredictsTheNearestBasisVectorAndReportsItsBasis) {
  HeadCase c{"e", {{"type", "ebv"}}, 7, 6, 5};
  Built b = build(c);
  const json info = b.head->info();
  EXPECT_LE(info.at("basis_max_cos").get<double>(), 0.0021);
  EXPECT_GT(info.at("generator_steps").get<int64_t>(), 0);
  // Features mapped exactly onto basis vector k are predicted as class k.
  const Tensor E = b.head->buffers().at(0).second;
  Tensor W = param(*b.head, "weight"), bias = param(*b.head, "bias");
  for (int64_t i = 0; i < W.numel(); ++i) W.mutable_data()[i] = (i / 6 == i % 6) ? 1.0f : 0.0f;  // d = C = 5 <= D
  for (int64_t i = 0; i < bias.numel(); ++i) bias.mutable_data()[i] = 0.0f;
  Tensor h = zeros({5, 6});
  for (int64_t k = 0; k < 5; ++k)
    for (int64_t j = 0; j < 5; ++j) h.mutable_data()[k * 6 + j] = 2.0f * E.data()[k * 5 + j];
  NoGradGuard no_grad;
  EXPECT_EQ(b.head->predict(b.head->forward(h, {}).scores), (std::vector<int32_t>{0, 1, 2, 3, 4}));
}

// ---- config errors --------------------------------------------------------------------

void expect_rejected(const json& cfg, const std::string& needle, int64_t train_size = 100) {
  Generator init(0);
  HeadContext ctx;
  ctx.in_dim = 8;
  ctx.num_classes = 10;
  ctx.train_size = train_size;
  ctx.init = &init;
  try {
    make_head(cfg, ctx);
    ADD_FAILURE() << "accepted " << cfg.dump();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(HeadConfig, BadValuesNameTheKey) {
  expect_rejected({{"type", "fourier"}, {"frequencies", 10}}, "model.head.frequencies");
  expect_rejected({{"type", "ebv"}, {"dim", 5}}, "model.head.threshold");  // 0.002 is below Welch 0.333
  expect_rejected({{"type", "svm"}, {"variant", "ww"}, {"class_reduction", "mean"}}, "class_reduction");
  expect_rejected({{"type", "svm"}, {"variant", "hinge"}}, "model.head.variant");
  expect_rejected({{"type", "svm"}, {"p", 3}}, "model.head.p");
  expect_rejected({{"type", "zloss"}, {"a", 0.0}}, "model.head.a");
  expect_rejected({{"type", "cosine"}, {"margin", 1.0}}, "model.head.margin");
  expect_rejected({{"type", "cosine"}, {"scales", 1.0}}, "did you mean 'scale'");
  expect_rejected({{"type", "stablemax"}, {"temperature", 2.0}}, "temperature");
  expect_rejected({{"type", "svm"}, {"preset", "tang2013"}}, "training set size", 0);
}

TEST(HeadConfig, PresetsFillKeysAndExplicitKeysWin) {
  Generator init(0);
  HeadContext ctx;
  ctx.in_dim = 4;
  ctx.num_classes = 3;
  ctx.train_size = 50;
  ctx.init = &init;
  // agarap2017 predicts with sign_argmax unless told otherwise.
  const Tensor s = from_vector({1, 3}, {0.5f, 2.0f, -1.0f});
  EXPECT_EQ(make_head({{"type", "svm"}, {"preset", "agarap2017"}}, ctx)->predict(s), (std::vector<int32_t>{0}));
  EXPECT_EQ(make_head({{"type", "svm"}, {"preset", "agarap2017"}, {"predict", "argmax"}}, ctx)->predict(s),
            (std::vector<int32_t>{1}));
}

}  // namespace
