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
//   // Writes scores[C] of the row o[K]. If y >= 0 also returns l(o, y) and, when grad is
//   // not null, writes dl/do into grad[K].
//   double row(const float* o, int32_t y, float* scores, float* grad, double* scratch) const;
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

// Scores [B, classes] (no autograd history) and, when labels are given, the mean loss
// with its fused backward into o.
template <class Rule>
HeadOutput row_loss(const char* name, const Tensor& o, int64_t classes, std::span<const int32_t> labels,
                    const Rule& rule) {
  SOFTLAB_CHECK(o.defined() && o.rank() == 2, name, ": expected a [batch, K] input, got ",
                o.defined() ? o.shape() : Shape{});
  const int64_t B = o.shape()[0], K = o.shape()[1];
  const bool with_loss = !labels.empty();
  if (with_loss) check_labels(name, labels, B, classes);
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
      const int32_t y = with_loss ? labels[static_cast<size_t>(n)] : -1;
      row_loss[static_cast<size_t>(n)] =
          rule.row(op + n * K, y, sp + n * classes, gp ? gp + n * K : nullptr, scratch.data());
    }
  });
  if (!with_loss) return out;
  double total = 0.0;
  for (double v : row_loss) total += v;  // fixed order: the same result for any thread count
  out.loss = scalar(static_cast<float>(total / static_cast<double>(B)));
  if (grad) {
    auto node = std::make_shared<detail::RowLossNode>();
    node->op_name = name;
    node->row_grads = row_grads;
    attach(out.loss, node, {&o});
  }
  return out;
}

// Cross-entropy of one row of logits lam[C] against (1 - eps) onehot(y) + eps / C, in
// double. Writes dl/dlam = softmax(lam) - q into g (if not null) and returns l.
inline double row_cross_entropy(const double* lam, int64_t C, int32_t y, double eps, double* g) {
  double m = lam[0];
  for (int64_t k = 1; k < C; ++k) m = std::max(m, lam[k]);
  double z = 0.0, lam_sum = 0.0;
  for (int64_t k = 0; k < C; ++k) {
    z += std::exp(lam[k] - m);
    lam_sum += lam[k];
  }
  const double lse = m + std::log(z);
  if (g) {
    for (int64_t k = 0; k < C; ++k) g[k] = std::exp(lam[k] - lse) - eps / static_cast<double>(C);
    g[y] -= 1.0 - eps;
  }
  return lse - (1.0 - eps) * lam[y] - eps / static_cast<double>(C) * lam_sum;
}

// nn.Linear's default initialisation U(-1/sqrt(D), 1/sqrt(D)), divided by `div` (the
// Fourier head's init_div), for a [rows, D] weight and a [rows] bias.
struct LinearInit {
  Tensor weight, bias;
};
LinearInit linear_init(const HeadContext& ctx, int64_t rows, const char* head, float div = 1.0f);

}  // namespace softlab::heads
