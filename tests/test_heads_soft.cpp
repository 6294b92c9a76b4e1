// Soft targets (mixup, CutMix) in the heads whose registry entry has the "soft_targets"
// trait (docs/heads.md, "Soft targets"): finite-difference gradchecks of forward_soft in
// training and eval mode, the one-hot case against forward(), an independent float64
// reference of every soft loss (value and gradients), label smoothing of a soft target,
// mixup linearity, and the errors: svm refuses, a bad target names the shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <map>
#include <numbers>
#include <set>

#include "gradcheck.hpp"
#include "softlab/head.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;

namespace {

// The heads that take soft targets; every other registered head must refuse them.
const std::set<std::string> kSoftHeads = {"softmax", "zloss", "ebv", "fourier", "stablemax", "cosine"};

struct SoftCase {
  std::string name;
  json config;
  int64_t B = 6, D = 5, C = 4;
  float weight_scale = 1.0f;  // multiplies the initial weight and bias (Fourier: undo its init_div)
};
void PrintTo(const SoftCase& c, std::ostream* os) { *os << c.name << " " << c.config.dump(); }

std::vector<SoftCase> soft_cases() {
  return {
      {"softmax", {{"type", "softmax"}}},
      {"softmax_ls_t", {{"type", "softmax"}, {"label_smoothing", 0.1}, {"temperature", 2.0}}},
      {"zloss", {{"type", "zloss"}}},
      {"zloss_sharp", {{"type", "zloss"}, {"a", 4.0}, {"b", 1.5}, {"var_eps", 0.0}}, 6, 5, 5},
      {"ebv", {{"type", "ebv"}}},
      {"ebv_low_dim_ls", {{"type", "ebv"}, {"dim", 3}, {"threshold", 0.6}, {"tau", 0.2}, {"label_smoothing", 0.1}}},
      {"fourier", {{"type", "fourier"}}, 6, 5, 5, 100.0f},
      {"fourier_n1_gamma", {{"type", "fourier"}, {"frequencies", 1}, {"gamma", 0.05}}, 6, 5, 6, 30.0f},
      {"stablemax", {{"type", "stablemax"}}},
      {"stablemax_large", {{"type", "stablemax"}}, 6, 5, 4, 30.0f},
      {"cosine", {{"type", "cosine"}}},
      {"cosine_margin", {{"type", "cosine"}, {"margin", 0.3}}},
      {"cosine_learned_ls", {{"type", "cosine"}, {"scale", 8.0}, {"learn_scale", true}, {"margin", 0.2},
                             {"label_smoothing", 0.1}}},
  };
}

std::string type_of(const SoftCase& c) { return c.config["type"].get<std::string>(); }

struct Built {
  std::unique_ptr<Head> head;
  Tensor h;                     // [B, D] features
  std::vector<int32_t> labels;  // B
  Tensor targets;               // [B, C]: mixup rows (two classes) and dense rows, alternately
};

std::unique_ptr<Head> make(const SoftCase& c, const json& config, uint64_t seed) {
  Generator init(seed);
  HeadContext ctx;
  ctx.in_dim = c.D;
  ctx.num_classes = c.C;
  ctx.train_size = 1000;
  ctx.init = &init;
  auto head = make_head(config, ctx);
  for (auto& p : head->parameters())
    if (p.name == "weight" || p.name == "bias") {
      float* d = p.tensor.mutable_data();
      for (int64_t i = 0; i < p.tensor.numel(); ++i) d[i] *= c.weight_scale;
    }
  return head;
}

// Each row a distribution: even rows mix two different classes (mixup, CutMix), odd rows
// spread over all classes. Normalised in double, so rows sum to 1 within float rounding.
Tensor random_targets(int64_t B, int64_t C, Generator& gen) {
  Tensor t = zeros({B, C});
  float* d = t.mutable_data();
  for (int64_t n = 0; n < B; ++n) {
    std::vector<double> w(static_cast<size_t>(C), 0.0);
    if (n % 2 == 0) {
      const auto a = static_cast<size_t>(gen.below(static_cast<uint64_t>(C)));
      const auto b = (a + 1 + static_cast<size_t>(gen.below(static_cast<uint64_t>(C - 1)))) % static_cast<size_t>(C);
      const double lam = gen.uniform(0.1f, 0.9f);
      w[a] = lam;
      w[b] = 1.0 - lam;
    } else {
      double s = 0.0;
      for (auto& v : w) s += v = 0.05 + gen.uniform();
      for (auto& v : w) v /= s;
    }
    for (int64_t k = 0; k < C; ++k) d[n * C + k] = static_cast<float>(w[static_cast<size_t>(k)]);
  }
  return t;
}

Built build(const SoftCase& c, uint64_t seed = 11) {
  Built b;
  b.head = make(c, c.config, seed);
  Generator gen(seed + 100);
  b.h = uniform({c.B, c.D}, gen, -1.5f, 1.5f);
  for (int64_t n = 0; n < c.B; ++n) b.labels.push_back(static_cast<int32_t>(gen.below(static_cast<uint64_t>(c.C))));
  b.targets = random_targets(c.B, c.C, gen);
  return b;
}

Tensor one_hot(std::span<const int32_t> labels, int64_t C) {
  Tensor t = zeros({static_cast<int64_t>(labels.size()), C});
  for (size_t n = 0; n < labels.size(); ++n) t.mutable_data()[static_cast<int64_t>(n) * C + labels[n]] = 1.0f;
  return t;
}

void set_mode(Head& head, bool train) {
  if (train)
    head.train();
  else
    head.eval();
}

const char* mode_name(bool train) { return train ? "train" : "eval"; }

// The loss and its gradients w.r.t. the features and every parameter (in parameters() order).
struct LossAndGrads {
  double loss = 0.0;
  std::vector<Tensor> grads;
  Tensor scores;
};

template <class F>
LossAndGrads run(Head& head, const Tensor& features, F forward) {
  Tensor h = features.detach();
  h.set_requires_grad(true);
  for (auto& p : head.parameters()) p.tensor.zero_grad();
  HeadOutput out = forward(h);
  out.loss.backward();
  LossAndGrads r;
  r.loss = out.loss.item();
  r.scores = out.scores.detach();
  r.grads.push_back(h.grad());
  for (auto& p : head.parameters()) r.grads.push_back(p.tensor.grad());
  return r;
}

std::vector<std::string> grad_names(const Head& head) {
  std::vector<std::string> n = {"features"};
  for (const auto& p : head.parameters()) n.push_back(p.name);
  return n;
}

class SoftHeads : public ::testing::TestWithParam<SoftCase> {};

// ---- finite differences -------------------------------------------------------------------

TEST_P(SoftHeads, GradcheckInTrainAndEvalMode) {
  const SoftCase& c = GetParam();
  for (bool train : {true, false}) {
    SCOPED_TRACE(mode_name(train));
    Built b = build(c);
    set_mode(*b.head, train);
    std::vector<Tensor> inputs = {b.h};
    for (auto& p : b.head->parameters()) inputs.push_back(p.tensor);
    inputs[0].set_requires_grad(true);
    Head* head = b.head.get();
    const Tensor targets = b.targets;
    test::GradcheckOptions o;  // the tolerances of the hard-label gradchecks (test_heads.cpp)
    o.atol = 1e-3;
    o.rtol = 1e-2;
    const auto r = test::gradcheck(
        [&](const std::vector<Tensor>& in) { return head->forward_soft(in[0], targets).loss; }, inputs, o);
    EXPECT_TRUE(r.ok) << r.report;
  }
}

// ---- the one-hot case -----------------------------------------------------------------------

// With one-hot targets forward_soft is forward(): same scores, and loss and gradients within
// 1e-6 relative (+1e-6 absolute for gradients near 0). The row-rule heads (zloss, fourier,
// stablemax) run the same rule for both and differ by double rounding at most; softmax, ebv
// and cosine compare the float cross_entropy op with the double soft rule.
TEST_P(SoftHeads, OneHotTargetsGiveTheHardLossAndGradients) {
  const SoftCase& c = GetParam();
  Built b = build(c);
  const Tensor hot = one_hot(b.labels, c.C);
  const auto names = grad_names(*b.head);
  for (bool train : {true, false}) {
    SCOPED_TRACE(mode_name(train));
    set_mode(*b.head, train);
    const LossAndGrads hard = run(*b.head, b.h, [&](const Tensor& h) { return b.head->forward(h, b.labels); });
    const LossAndGrads soft = run(*b.head, b.h, [&](const Tensor& h) { return b.head->forward_soft(h, hot); });
    EXPECT_EQ(soft.scores.to_vector(), hard.scores.to_vector());
    EXPECT_NEAR(soft.loss, hard.loss, 1e-6 * std::abs(hard.loss));
    ASSERT_EQ(soft.grads.size(), hard.grads.size());
    for (size_t i = 0; i < hard.grads.size(); ++i) {
      ASSERT_TRUE(soft.grads[i].defined() && hard.grads[i].defined()) << names[i];
      for (int64_t j = 0; j < hard.grads[i].numel(); ++j) {
        const float r = hard.grads[i].data()[j];
        ASSERT_NEAR(soft.grads[i].data()[j], r, 1e-6 + 1e-6 * std::abs(r)) << "d " << names[i] << " element " << j;
      }
    }
  }
}

// ---- an independent float64 reference, written from docs/heads.md --------------------------

// The inputs of the reference in double, by name: "features", the head's parameters and buffers.
using Values = std::map<std::string, std::vector<double>>;

Values values_of(const Head& head, const Tensor& h) {
  auto to_double = [](const Tensor& t) {
    std::vector<double> v(static_cast<size_t>(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = t.data()[i];
    return v;
  };
  Values v;
  v["features"] = to_double(h);
  for (const auto& p : head.parameters()) v[p.name] = to_double(p.tensor);
  for (const auto& [name, t] : head.buffers()) v[name] = to_double(t);
  return v;
}

double cfg(const json& c, const char* key, double fallback) {
  return c.contains(key) && !c[key].is_null() ? c[key].get<double>() : fallback;
}

// x [rows, in] times w [out, in] transposed, plus bias [out] (if not empty).
std::vector<double> affine(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& bias,
                           int64_t rows, int64_t in, int64_t out) {
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t n = 0; n < rows; ++n)
    for (int64_t k = 0; k < out; ++k) {
      double s = bias.empty() ? 0.0 : bias[static_cast<size_t>(k)];
      for (int64_t d = 0; d < in; ++d) s += x[static_cast<size_t>(n * in + d)] * w[static_cast<size_t>(k * in + d)];
      y[static_cast<size_t>(n * out + k)] = s;
    }
  return y;
}

// Rows divided by max(norm, 1e-12).
std::vector<double> unit_rows(std::vector<double> x, int64_t cols) {
  for (size_t r = 0; r < x.size() / static_cast<size_t>(cols); ++r) {
    double n2 = 0.0;
    for (int64_t j = 0; j < cols; ++j) n2 += x[r * static_cast<size_t>(cols) + static_cast<size_t>(j)] * x[r * static_cast<size_t>(cols) + static_cast<size_t>(j)];
    const double n = std::max(std::sqrt(n2), 1e-12);
    for (int64_t j = 0; j < cols; ++j) x[r * static_cast<size_t>(cols) + static_cast<size_t>(j)] /= n;
  }
  return x;
}

// -sum_k q_k log softmax(lam)_k, q = (1 - eps) t + eps / C.
double soft_ce(const double* lam, const double* t, int64_t C, double eps) {
  double m = lam[0];
  for (int64_t k = 1; k < C; ++k) m = std::max(m, lam[k]);
  double z = 0.0;
  for (int64_t k = 0; k < C; ++k) z += std::exp(lam[k] - m);
  const double log_z = m + std::log(z);
  double l = 0.0;
  for (int64_t k = 0; k < C; ++k) l -= ((1.0 - eps) * t[k] + eps / static_cast<double>(C)) * (lam[k] - log_z);
  return l;
}

// The mean soft loss of one head over the batch, in double.
double reference_loss(const SoftCase& c, const Values& v, const std::vector<double>& t, bool train) {
  const std::string type = type_of(c);
  const json& p = c.config;
  const int64_t B = c.B, D = c.D, C = c.C;
  const auto& h = v.at("features");
  double total = 0.0;
  if (type == "softmax" || type == "ebv" || type == "cosine") {
    std::vector<double> lam;
    double eps = train ? cfg(p, "label_smoothing", 0.0) : 0.0;
    if (type == "softmax") {
      lam = affine(h, v.at("weight"), v.at("bias"), B, D, C);
      for (auto& x : lam) x /= cfg(p, "temperature", 1.0);
    } else if (type == "ebv") {
      const int64_t d = static_cast<int64_t>(v.at("bias").size());
      const auto u = unit_rows(affine(h, v.at("weight"), v.at("bias"), B, D, d), d);
      lam = affine(u, unit_rows(v.at("basis"), d), {}, B, d, C);
      for (auto& x : lam) x /= cfg(p, "tau", 0.07);
    } else {
      const auto cos = affine(unit_rows(h, D), unit_rows(v.at("weight"), D), {}, B, D, C);
      const double s = v.count("scale") ? v.at("scale")[0] : cfg(p, "scale", 16.0);
      const double m = train ? cfg(p, "margin", 0.0) : 0.0;
      lam.resize(cos.size());
      for (size_t i = 0; i < cos.size(); ++i) lam[i] = s * (cos[i] - m * t[i]);  // the margin follows t
    }
    for (int64_t n = 0; n < B; ++n) total += soft_ce(&lam[static_cast<size_t>(n * C)], &t[static_cast<size_t>(n * C)], C, eps);
  } else if (type == "zloss") {
    const double a = cfg(p, "a", 1.0), knee = cfg(p, "b", std::sqrt(static_cast<double>(C - 1)));
    const double var_eps = cfg(p, "var_eps", 1e-6);
    const auto o = affine(h, v.at("weight"), v.at("bias"), B, D, C);
    for (int64_t n = 0; n < B; ++n) {
      const double* on = &o[static_cast<size_t>(n * C)];
      double mu = 0.0, var = 0.0;
      for (int64_t k = 0; k < C; ++k) mu += on[k] / static_cast<double>(C);
      for (int64_t k = 0; k < C; ++k) var += (on[k] - mu) * (on[k] - mu) / static_cast<double>(C);
      for (int64_t k = 0; k < C; ++k) {
        const double z = (on[k] - mu) / std::sqrt(var + var_eps);
        total += t[static_cast<size_t>(n * C + k)] * std::log1p(std::exp(a * (knee - z))) / a;
      }
    }
  } else if (type == "stablemax") {
    const auto z = affine(h, v.at("weight"), v.at("bias"), B, D, C);
    for (int64_t n = 0; n < B; ++n) {
      std::vector<double> s(static_cast<size_t>(C));
      double sum = 0.0;
      for (int64_t k = 0; k < C; ++k) {
        const double x = z[static_cast<size_t>(n * C + k)];
        sum += s[static_cast<size_t>(k)] = x >= 0.0 ? x + 1.0 : 1.0 / (1.0 - x);
      }
      for (int64_t k = 0; k < C; ++k) total -= t[static_cast<size_t>(n * C + k)] * std::log(s[static_cast<size_t>(k)] / sum);
    }
  } else if (type == "fourier") {
    const int64_t J = static_cast<int64_t>(v.at("bias").size()) / 2;
    const double eps_log = cfg(p, "eps_log", 1e-5), gamma = train ? cfg(p, "gamma", 1e-6) : 0.0;
    const auto o = affine(h, v.at("weight"), v.at("bias"), B, D, 2 * J);
    using cd = std::complex<double>;
    for (int64_t n = 0; n < B; ++n) {
      std::vector<cd> a(static_cast<size_t>(J));
      double c0 = 0.0;
      for (int64_t j = 0; j < J; ++j) {
        a[static_cast<size_t>(j)] = cd(o[static_cast<size_t>(n * 2 * J + j)], o[static_cast<size_t>(n * 2 * J + J + j)]);
        c0 += std::norm(a[static_cast<size_t>(j)]);
      }
      std::vector<double> dens(static_cast<size_t>(C));
      double dsum = 0.0;
      for (int64_t i = 0; i < C; ++i) {
        const double x = -1.0 + (2.0 * static_cast<double>(i) + 1.0) / static_cast<double>(C);
        cd A = 0.0;
        for (int64_t j = 0; j < J; ++j) A += a[static_cast<size_t>(j)] * std::polar(1.0, std::numbers::pi * static_cast<double>(j) * x);
        dsum += dens[static_cast<size_t>(i)] = std::norm(A) / (2.0 * c0);
      }
      for (int64_t i = 0; i < C; ++i) {
        const double pi_i = (dens[static_cast<size_t>(i)] / dsum + eps_log) / (1.0 + static_cast<double>(C) * eps_log);
        total -= t[static_cast<size_t>(n * C + i)] * std::log(pi_i);
      }
      for (int64_t k = 1; k < J; ++k) {  // c_k = sum_j a_{j+k} conj(a_j)
        cd ck = 0.0;
        for (int64_t j = 0; j + k < J; ++j) ck += a[static_cast<size_t>(j + k)] * std::conj(a[static_cast<size_t>(j)]);
        total += gamma * 2.0 * 2.0 * std::numbers::pi * std::numbers::pi * static_cast<double>(k * k) * std::norm(ck);
      }
    }
  } else {
    ADD_FAILURE() << "no float64 reference for head '" << type << "'";
  }
  return total / static_cast<double>(B);
}

// Loss within 1e-5 relative (float32 forward); gradients against central differences of the
// reference in double (step 1e-6, truncation error ~1e-12) within 2e-5 + 1e-4 relative.
TEST_P(SoftHeads, MatchesAFloat64ReferenceInValueAndGradients) {
  const SoftCase& c = GetParam();
  Built b = build(c);
  const std::vector<float> tf = b.targets.to_vector();
  const std::vector<double> t(tf.begin(), tf.end());
  const auto names = grad_names(*b.head);
  for (bool train : {true, false}) {
    SCOPED_TRACE(mode_name(train));
    set_mode(*b.head, train);
    const LossAndGrads soft = run(*b.head, b.h, [&](const Tensor& h) { return b.head->forward_soft(h, b.targets); });
    Values v = values_of(*b.head, b.h);
    const double ref = reference_loss(c, v, t, train);
    EXPECT_NEAR(soft.loss, ref, 1e-5 * std::abs(ref) + 1e-7);
    for (size_t i = 0; i < names.size(); ++i) {
      std::vector<double>& x = v.at(names[i]);
      for (size_t j = 0; j < x.size(); ++j) {
        const double x0 = x[j], step = 1e-6;
        x[j] = x0 + step;
        const double lp = reference_loss(c, v, t, train);
        x[j] = x0 - step;
        const double lm = reference_loss(c, v, t, train);
        x[j] = x0;
        const double num = (lp - lm) / (2.0 * step);
        ASSERT_NEAR(soft.grads[i].data()[j], num, 2e-5 + 1e-4 * std::abs(num)) << "d " << names[i] << " element " << j;
      }
    }
  }
}

// ---- mixup: a two-class target is the mix of the two labels' losses ---------------------

// Every soft loss is linear in t where nothing else depends on t, so mixing targets mixes the
// hard losses. The cosine margin makes the logits depend on t: there it holds in eval mode only.
TEST_P(SoftHeads, MixupOfTwoLabelsMixesTheirLosses) {
  const SoftCase& c = GetParam();
  Built b = build(c);
  std::vector<int32_t> other(b.labels.size());
  for (size_t n = 0; n < other.size(); ++n) other[n] = static_cast<int32_t>((b.labels[n] + 1) % c.C);
  const float lam = 0.3f;
  Tensor mixed = zeros({c.B, c.C});
  for (int64_t n = 0; n < c.B; ++n) {
    mixed.mutable_data()[n * c.C + b.labels[static_cast<size_t>(n)]] = lam;
    mixed.mutable_data()[n * c.C + other[static_cast<size_t>(n)]] = 1.0f - lam;
  }
  NoGradGuard no_grad;
  for (bool train : {true, false}) {
    if (train && cfg(c.config, "margin", 0.0) > 0.0) continue;
    SCOPED_TRACE(mode_name(train));
    set_mode(*b.head, train);
    const double la = b.head->forward(b.h, b.labels).loss.item(), lb = b.head->forward(b.h, other).loss.item();
    const double expected = lam * la + (1.0 - lam) * lb;
    EXPECT_NEAR(b.head->forward_soft(b.h, mixed).loss.item(), expected, 1e-5 * std::abs(expected));
  }
}

// ---- label smoothing --------------------------------------------------------------------

// With smoothing eps in training, the loss and gradients on t equal those of the same head
// without smoothing on t' = (1 - eps) t + eps / C; in eval mode smoothing is off. Margins are
// left at 0 here: a margin follows the unsmoothed t (the float64 reference checks that case).
TEST(SoftTargets, LabelSmoothingAppliesToTheSoftTarget) {
  const std::vector<SoftCase> cases = {
      {"softmax", {{"type", "softmax"}, {"label_smoothing", 0.2}, {"temperature", 0.5}}},
      {"ebv", {{"type", "ebv"}, {"label_smoothing", 0.2}}},
      {"cosine", {{"type", "cosine"}, {"label_smoothing", 0.2}, {"learn_scale", true}}},
  };
  for (const SoftCase& c : cases) {
    SCOPED_TRACE(c.name);
    const double eps = 0.2;
    Built b = build(c);
    json plain = c.config;
    plain["label_smoothing"] = 0.0;
    auto ref = make(c, plain, 11);  // the same seed: the same parameters
    Tensor smoothed = empty({c.B, c.C});
    for (int64_t i = 0; i < smoothed.numel(); ++i)
      smoothed.mutable_data()[i] =
          static_cast<float>((1.0 - eps) * b.targets.data()[i] + eps / static_cast<double>(c.C));
    b.head->train();
    ref->train();
    const LossAndGrads got = run(*b.head, b.h, [&](const Tensor& h) { return b.head->forward_soft(h, b.targets); });
    const LossAndGrads want = run(*ref, b.h, [&](const Tensor& h) { return ref->forward_soft(h, smoothed); });
    const LossAndGrads unsmoothed = run(*ref, b.h, [&](const Tensor& h) { return ref->forward_soft(h, b.targets); });
    // t' rounds to float: 1e-6 relative is that rounding, far below the smoothing's effect.
    EXPECT_NEAR(got.loss, want.loss, 1e-6 * std::abs(want.loss));
    EXPECT_GT(std::abs(got.loss - unsmoothed.loss), 1e-3) << "smoothing must change the loss for this test to mean anything";
    for (size_t i = 0; i < want.grads.size(); ++i)
      for (int64_t j = 0; j < want.grads[i].numel(); ++j) {
        const float r = want.grads[i].data()[j];
        ASSERT_NEAR(got.grads[i].data()[j], r, 1e-6 + 1e-5 * std::abs(r)) << "gradient " << i << " element " << j;
      }
    b.head->eval();
    ref->eval();
    NoGradGuard no_grad;
    EXPECT_EQ(b.head->forward_soft(b.h, b.targets).loss.item(), ref->forward_soft(b.h, b.targets).loss.item());
  }
}

// ---- targets are data -------------------------------------------------------------------

TEST_P(SoftHeads, TargetsReceiveNoGradient) {
  const SoftCase& c = GetParam();
  Built b = build(c);
  b.head->train();  // the cosine margin reads the targets in training mode
  Tensor t = b.targets.detach();
  t.set_requires_grad(true);
  b.head->forward_soft(b.h, t).loss.backward();
  EXPECT_FALSE(t.grad().defined());
}

// ---- errors -----------------------------------------------------------------------------

TEST_P(SoftHeads, ABadTargetShapeNamesTheHeadAndBothShapes) {
  const SoftCase& c = GetParam();
  Built b = build(c);
  const Shape scores{c.B, c.C};
  for (const Shape& bad : {Shape{c.B, c.C + 1}, Shape{c.B + 1, c.C}, Shape{c.B * c.C}, Shape{c.C, c.B}}) {
    if (bad == scores) continue;
    try {
      b.head->forward_soft(b.h, full(bad, 1.0f / static_cast<float>(c.C)));
      ADD_FAILURE() << "accepted targets of shape " << bad;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(type_of(c)), std::string::npos) << msg;
      EXPECT_NE(msg.find(bad.str()), std::string::npos) << msg;
      EXPECT_NE(msg.find(scores.str()), std::string::npos) << msg;
    }
  }
  EXPECT_THROW(b.head->forward_soft(b.h, Tensor()), Error);
}

TEST_P(SoftHeads, TargetsThatAreNotDistributionsAreRejected) {
  const SoftCase& c = GetParam();
  Built b = build(c);
  auto rejects = [&](int64_t at, float value, const std::string& needle) {
    Tensor t = b.targets.detach().clone();
    t.mutable_data()[at] = value;
    try {
      b.head->forward_soft(b.h, t);
      ADD_FAILURE() << "accepted a target " << value << " at " << at;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  rejects(c.C + 1, -0.25f, "not a probability");
  rejects(2, std::nanf(""), "not a probability");
  rejects(0, b.targets.data()[0] + 0.5f, "sum to");  // row 0 sums to 1.5
}

INSTANTIATE_TEST_SUITE_P(All, SoftHeads, ::testing::ValuesIn(soft_cases()),
                         [](const ::testing::TestParamInfo<SoftCase>& info) { return info.param.name; });

// ---- the registry: which heads take soft targets ----------------------------------------

TEST(SoftTargets, TheTraitMarksExactlyTheHeadsWithASoftLoss) {
  for (const auto& name : head_registry().names())
    EXPECT_EQ(head_takes_soft_targets(name), kSoftHeads.count(name) == 1) << name;
  for (const auto& name : kSoftHeads) EXPECT_NE(head_registry().find(name), nullptr) << name;
  EXPECT_FALSE(head_takes_soft_targets("no_such_head"));
}

TEST(SoftTargets, EveryHeadWithTheTraitHasCases) {
  std::set<std::string> covered;
  for (const auto& c : soft_cases()) covered.insert(type_of(c));
  for (const auto& e : head_registry().entries())
    EXPECT_EQ(covered.count(e.name) == 1, e.soft_targets) << e.name;
}

// svm (a hinge has no meaning against a distribution), and any head without the trait, keeps
// the throwing default.
TEST(SoftTargets, HeadsWithoutTheTraitRefuse) {
  int refused = 0;
  for (const auto& e : head_registry().entries()) {
    if (e.soft_targets) continue;
    SoftCase c{e.name, {{"type", e.name}}};
    Built b = build(c);
    EXPECT_THROW(b.head->forward_soft(b.h, b.targets), Error) << e.name;
    ++refused;
  }
  EXPECT_GE(refused, 1);
  SoftCase svm{"svm", {{"type", "svm"}}};
  Built b = build(svm);
  EXPECT_THROW(b.head->forward_soft(b.h, b.targets), Error);
  EXPECT_FALSE(head_takes_soft_targets("svm"));
}

}  // namespace
