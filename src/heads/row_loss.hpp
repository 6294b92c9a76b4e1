#pragma once
// The fused loss of a head whose objective is a mean of per-example terms, each a function
// of one row of the head's linear output o [B, K]:
//
//     L = (1/B) sum_n l(o_n, y_n),   scores S_n = s(o_n) [C]
//
// A head supplies a "row rule" that evaluates one row: its scores, its loss term and the
// gradient dl/do_n, side by side in one function. Forward runs the rule over the rows in
// parallel and keeps the per-row gradients (B x K floats, small); backward scales them by
// the upstream gradient / B. So the loss costs one pass, the backward is a multiply, and
// nothing but o is read. Rules compute in double: rows are short (K <= a few dozen), and
// double keeps the head far below the tolerance of the golden tests.
//
// A rule is any type with
//   int64_t scratch() const;   // doubles of per-thread scratch the rule needs
//   // Writes scores[C] of the row o[K]. If t is not null also returns l(o, t) and, when
//   // grad is not null, writes dl/do into grad[K].
//   template <class Target>
//   double row(const float* o, const Target* t, float* scores, float* grad, double* scratch) const;
// Target is OneHot (forward: a label) or SoftRow (forward_soft: a distribution over the
// classes, docs/heads.md "Soft targets"). A rule written against both is one piece of maths
// for both paths; a rule without a soft loss (svm) takes `const OneHot*` only.
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/head.hpp"
#include "softlab/parallel.hpp"

namespace softlab::heads {

// Labels must be one per row and in [0, C).
inline void check_labels(const char* head, std::span<const int32_t> labels, int64_t rows, int64_t classes) {
  SOFTLAB_CHECK(static_cast<int64_t>(labels.size()) == rows, head, " head: ", labels.size(), " labels for ", rows,
                " feature rows");
  for (size_t n = 0; n < labels.size(); ++n)
    SOFTLAB_CHECK(labels[n] >= 0 && labels[n] < classes, head, " head: label ", labels[n], " of example ", n,
                  " is outside [0, ", classes, ")");
}

namespace detail {
struct RowLossNode final : Node {
  const char* op_name = "row_loss";
  Tensor row_grads;  // [B, K]: dl_n/do_n, not yet divided by B
  const char* name() const override { return op_name; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const int64_t B = row_grads.shape()[0];
    const float s = g.item() / static_cast<float>(B);
    Tensor dx = empty(row_grads.shape());
    const float* r = row_grads.data();
    float* d = dx.mutable_data();
    for (int64_t i = 0, n = row_grads.numel(); i < n; ++i) d[i] = s * r[i];
    return {dx};
  }
};
}  // namespace detail

// The target of one row as a rule reads it: t_k, their sum ("mass", 1 for a distribution)
// and a walk over the non-zero t_k. A label is the one-hot case: its walk has one term, so a
// rule's hard path costs what a label-only rule would.
struct OneHot {
  int32_t y;
  double mass() const { return 1.0; }
  double operator[](int64_t k) const { return k == y ? 1.0 : 0.0; }
  template <class F>
  void for_each(F&& f) const { f(int64_t{y}, 1.0); }
};

struct SoftRow {
  const float* t;  // [C]
  int64_t C;
  double total;    // sum_k t_k, ~1 (checked by check_targets)
  double mass() const { return total; }
  double operator[](int64_t k) const { return t[k]; }
  // Zeros are skipped: a class with no weight contributes nothing, even where its own term
  // would be infinite.
  template <class F>
  void for_each(F&& f) const {
    for (int64_t k = 0; k < C; ++k)
      if (t[k] != 0.0f) f(k, double{t[k]});
  }
};

// Soft targets must be [B, C] like the scores, finite and non-negative, with rows that sum
// to 1 up to float rounding: a row that does not is a bug upstream (a mixing weight applied
// to one side only), not a distribution to train on.
inline void check_targets(const char* head, const Tensor& targets, const Shape& scores) {
  SOFTLAB_CHECK(targets.defined() && targets.shape() == scores, head, " head: soft targets of shape ",
                targets.defined() ? targets.shape() : Shape{}, " do not match the scores' shape ", scores,
                " (one distribution over the classes per example)");
  const int64_t B = scores[0], C = scores[1];
  const float* t = targets.data();
  for (int64_t n = 0; n < B; ++n) {
    double sum = 0.0;
    for (int64_t k = 0; k < C; ++k) {
      const float v = t[n * C + k];
      SOFTLAB_CHECK(std::isfinite(v) && v >= 0.0f, head, " head: soft target ", v, " of example ", n, ", class ", k,
                    " is not a probability");
      sum += v;
    }
    SOFTLAB_CHECK(std::abs(sum - 1.0) <= 1e-3, head, " head: the soft targets of example ", n, " sum to ", sum,
                  ", not 1");
  }
}

namespace detail {
// Runs the rule over the rows in parallel; target_at(n) gives row n's target when with_loss.
template <class Rule, class TargetAt>
HeadOutput run_rows(const char* name, const Tensor& o, int64_t classes, bool with_loss, const TargetAt& target_at,
                    const Rule& rule) {
  using Target = decltype(target_at(int64_t{0}));
  const int64_t B = o.shape()[0], K = o.shape()[1];
  const bool grad = with_loss && needs_grad({&o});
  HeadOutput out;
  out.scores = empty({B, classes});
  Tensor row_grads = grad ? empty({B, K}) : Tensor();
  std::vector<double> row_loss(static_cast<size_t>(B), 0.0);
  const float* op = o.data();
  float* sp = out.scores.mutable_data();
  float* gp = grad ? row_grads.mutable_data() : nullptr;
  parallel_for(0, B, 16, [&](int64_t n0, int64_t n1) {
    std::vector<double> scratch(static_cast<size_t>(rule.scratch()));
    for (int64_t n = n0; n < n1; ++n) {
      float* sn = sp + n * classes;
      float* gn = gp ? gp + n * K : nullptr;
      if (!with_loss) {
        rule.row(op + n * K, static_cast<const Target*>(nullptr), sn, gn, scratch.data());
        continue;
      }
      const Target t = target_at(n);
      row_loss[static_cast<size_t>(n)] = rule.row(op + n * K, &t, sn, gn, scratch.data());
    }
  });
  if (!with_loss) return out;
  double total = 0.0;
  for (double v : row_loss) total += v;  // fixed order: the same result for any thread count
  out.loss = scalar(static_cast<float>(total / static_cast<double>(B)));
  if (grad) {  // the targets are data: the node has o as its only input
    auto node = std::make_shared<RowLossNode>();
    node->op_name = name;
    node->row_grads = row_grads;
    attach(out.loss, node, {&o});
  }
  return out;
}

inline void check_rows(const char* name, const Tensor& o) {
  SOFTLAB_CHECK(o.defined() && o.rank() == 2, name, ": expected a [batch, K] input, got ",
                o.defined() ? o.shape() : Shape{});
}
}  // namespace detail

// Scores [B, classes] (no autograd history) and, when labels are given, the mean loss
// with its fused backward into o.
template <class Rule>
HeadOutput row_loss(const char* name, const Tensor& o, int64_t classes, std::span<const int32_t> labels,
                    const Rule& rule) {
  detail::check_rows(name, o);
  if (!labels.empty()) check_labels(name, labels, o.shape()[0], classes);
  return detail::run_rows(
      name, o, classes, !labels.empty(), [&](int64_t n) { return OneHot{labels[static_cast<size_t>(n)]}; }, rule);
}

// The same with soft targets [B, classes]: the mean of l(o_n, t_n).
template <class Rule>
HeadOutput row_loss_soft(const char* name, const Tensor& o, int64_t classes, const Tensor& targets,
                         const Rule& rule) {
  detail::check_rows(name, o);
  check_targets(name, targets, Shape{o.shape()[0], classes});
  const float* t = targets.data();
  return detail::run_rows(
      name, o, classes, true,
      [&](int64_t n) {
        const float* row = t + n * classes;
        double total = 0.0;
        for (int64_t k = 0; k < classes; ++k) total += row[k];
        return SoftRow{row, classes, total};
      },
      rule);
}

// Cross-entropy of one row of logits lam[C] against q = (1 - eps) t + eps / C, in double:
//   l = -sum_k q_k log softmax(lam)_k = (sum q) LSE(lam) - sum_k q_k lam_k.
// Writes dl/dlam = (sum q) softmax(lam) - q into g (if not null) and returns l.
template <class Target>
double row_cross_entropy(const float* lam, int64_t C, const Target& t, double eps, float* g) {
  double m = lam[0];
  for (int64_t k = 1; k < C; ++k) m = std::max(m, double{lam[k]});
  double z = 0.0, lam_sum = 0.0;
  for (int64_t k = 0; k < C; ++k) {
    z += std::exp(lam[k] - m);
    lam_sum += lam[k];
  }
  const double lse = m + std::log(z), off = eps / static_cast<double>(C);
  const double mass = (1.0 - eps) * t.mass() + eps;  // sum_k q_k
  if (g)
    for (int64_t k = 0; k < C; ++k) g[k] = static_cast<float>(mass * std::exp(lam[k] - lse) - (1.0 - eps) * t[k] - off);
  double tl = 0.0;
  t.for_each([&](int64_t k, double tk) { tl += tk * lam[k]; });
  return mass * lse - (1.0 - eps) * tl - off * lam_sum;
}

// The row rule of the softmax-family heads' soft loss (softmax, ebv, cosine): the scores
// are the logits. Their hard loss stays on the fused float cross_entropy op, which needs no
// [B, C] target; this rule is the same formula with a dense target, and with a one-hot row
// the two agree to float rounding (tests/test_heads_soft.cpp).
struct CrossEntropyRule {
  int64_t C = 0;
  double eps = 0.0;
  int64_t scratch() const { return 0; }
  template <class Target>
  double row(const float* lam, const Target* t, float* scores, float* g, double*) const {
    for (int64_t k = 0; k < C; ++k) scores[k] = lam[k];
    return t ? row_cross_entropy(lam, C, *t, eps, g) : 0.0;
  }
};

// Mean cross-entropy of logits [B, C] against soft targets, smoothed by eps; differentiable
// in the logits only.
inline Tensor soft_cross_entropy(const char* head, const Tensor& logits, const Tensor& targets, double eps) {
  detail::check_rows(head, logits);
  const int64_t C = logits.shape()[1];
  return row_loss_soft(head, logits, C, targets, CrossEntropyRule{C, eps}).loss;
}

// nn.Linear's default initialisation U(-1/sqrt(D), 1/sqrt(D)), divided by `div` (the
// Fourier head's init_div), for a [rows, D] weight and a [rows] bias.
struct LinearInit {
  Tensor weight, bias;
};
LinearInit linear_init(const HeadContext& ctx, int64_t rows, const char* head, float div = 1.0f);

}  // namespace softlab::heads
