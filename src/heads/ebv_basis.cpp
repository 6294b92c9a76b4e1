// The Equiangular Basis Vectors generator (docs/heads.md, after the authors'
// Generate_EBV.py): C unit rows in R^d, pushed apart by plain gradient descent on
//   Lgen = sum_{i != j} relu(|cos_ij| - alpha),
//   dLgen/dW = 2 (M o sign(W W^T)) W,  M_ij = [|cos_ij| > alpha, i != j],
// re-normalising the rows before every step and stopping as soon as max |cos| <= alpha + 1e-4
// (tested on the normalised rows, so the result has unit rows). In double, from softlab's
// own seeded Gaussian stream: the authors' CUDA stream cannot be reproduced anyway.
#include <cmath>
#include <vector>

#include "softlab/error.hpp"
#include "softlab/head.hpp"
#include "softlab/random.hpp"

namespace softlab {

namespace {
void normalize_rows(std::vector<double>& w, int64_t C, int64_t d) {
  for (int64_t i = 0; i < C; ++i) {
    double n2 = 0.0;
    for (int64_t j = 0; j < d; ++j) n2 += w[i * d + j] * w[i * d + j];
    const double inv = 1.0 / std::max(std::sqrt(n2), 1e-12);
    for (int64_t j = 0; j < d; ++j) w[i * d + j] *= inv;
  }
}

// Off-diagonal cosines of unit rows, [C, C] (diagonal 0).
void gram(const std::vector<double>& w, int64_t C, int64_t d, std::vector<double>& g) {
  for (int64_t i = 0; i < C; ++i)
    for (int64_t k = 0; k < C; ++k) {
      double s = 0.0;
      if (i != k)
        for (int64_t j = 0; j < d; ++j) s += w[i * d + j] * w[k * d + j];
      g[i * C + k] = s;
    }
}

double max_abs(const std::vector<double>& g) {
  double m = 0.0;
  for (double v : g) m = std::max(m, std::abs(v));
  return m;
}
}  // namespace

double welch_bound(int64_t classes, int64_t dim) {
  if (dim >= classes || classes < 2) return 0.0;
  return std::sqrt(static_cast<double>(classes - dim) / static_cast<double>(dim * (classes - 1)));
}

double max_pairwise_cos(const Tensor& rows) {
  SOFTLAB_CHECK(rows.rank() == 2, "max_pairwise_cos: expected [C, d] rows, got ", rows.shape());
  const int64_t C = rows.shape()[0], d = rows.shape()[1];
  std::vector<double> w(rows.data(), rows.data() + C * d), g(static_cast<size_t>(C * C));
  normalize_rows(w, C, d);
  gram(w, C, d, g);
  return max_abs(g);
}

EbvBasis generate_ebv_basis(int64_t classes, int64_t dim, double threshold, double lr, int64_t max_steps,
                            uint64_t seed) {
  SOFTLAB_CHECK(classes >= 1 && dim >= 1, "generate_ebv_basis: need classes >= 1 and dim >= 1, got ", classes, ", ",
                dim);
  const int64_t C = classes, d = dim;
  Generator gen(seed);
  std::vector<double> w(static_cast<size_t>(C * d)), g(static_cast<size_t>(C * C)), step(w.size());
  for (double& v : w) v = gen.normal();
  EbvBasis r;
  for (;; ++r.steps) {
    normalize_rows(w, C, d);
    gram(w, C, d, g);
    r.max_cos = max_abs(g);
    if (r.max_cos <= threshold + 1e-4 || r.steps >= max_steps) break;
    // step = 2 (M o sign(G)) W
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < d; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < C; ++k) {
          const double c = g[i * C + k];
          if (std::abs(c) > threshold) s += (c > 0.0 ? 1.0 : -1.0) * w[k * d + j];
        }
        step[i * d + j] = 2.0 * s;
      }
    for (size_t i = 0; i < w.size(); ++i) w[i] -= lr * step[i];
  }
  r.converged = r.max_cos <= threshold + 1e-4;
  r.basis = empty({C, d});
  float* out = r.basis.mutable_data();
  for (size_t i = 0; i < w.size(); ++i) out[i] = static_cast<float>(w[i]);
  return r;
}

}  // namespace softlab
