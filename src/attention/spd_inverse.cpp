// W = (K + reg·I)^-1 for batches of small SPD matrices, by SOFT's Newton–Schulz iteration or
// by Cholesky, forward and backward side by side (see spd_inverse.hpp). Parallel over the
// matrices; each thread owns whole matrices, so results do not depend on the thread count.
// m is small (SOFT's landmark count, <= 64 in softlab's models), so the m x m products are
// plain loops in double, ordered i-k-j so the inner loop runs along rows and vectorises.
#include "attention/spd_inverse.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {

std::atomic<double> g_last_residual{std::numeric_limits<double>::quiet_NaN()};

// C = A B for m x m row-major matrices (C must not alias A or B). Four rows of C at a time,
// so each row of B is loaded once per four rows; every C_ij is summed over k in order.
// With `symmetric`, the caller knows C is symmetric: only j >= i is computed (per block of
// four rows, from its first row on) and the lower triangle is mirrored from the upper.
// `omp simd`: GCC's -O2 cost model would not vectorise a loop of unknown length.
void matmul_dd(const double* __restrict A, const double* __restrict B, double* __restrict C, int64_t m,
               bool symmetric = false) {
  std::fill(C, C + m * m, 0.0);
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    const int64_t j0 = symmetric ? i : 0;
    double* __restrict c0 = C + i * m;
    double* __restrict c1 = c0 + m;
    double* __restrict c2 = c1 + m;
    double* __restrict c3 = c2 + m;
    for (int64_t k = 0; k < m; ++k) {
      const double a0 = A[i * m + k], a1 = A[(i + 1) * m + k], a2 = A[(i + 2) * m + k], a3 = A[(i + 3) * m + k];
      const double* __restrict bk = B + k * m;
#pragma omp simd
      for (int64_t j = j0; j < m; ++j) {
        const double b = bk[j];
        c0[j] += a0 * b;
        c1[j] += a1 * b;
        c2[j] += a2 * b;
        c3[j] += a3 * b;
      }
    }
  }
  for (; i < m; ++i) {
    const int64_t j0 = symmetric ? i : 0;
    double* __restrict ci = C + i * m;
    for (int64_t k = 0; k < m; ++k) {
      const double aik = A[i * m + k];
      const double* __restrict bk = B + k * m;
#pragma omp simd
      for (int64_t j = j0; j < m; ++j) ci[j] += aik * bk[j];
    }
  }
  if (symmetric)
    for (int64_t r = 1; r < m; ++r)
      for (int64_t c = 0; c < r; ++c) C[r * m + c] = C[c * m + r];
}

// One Newton–Schulz step V <- 2V - V P V, with scratch X, Y (m x m each). For symmetric V
// and P (SOFT's case: V0 = alpha P), V P V is symmetric, so the second product needs only its
// upper triangle, and V stays exactly symmetric. Not the first: V P is symmetric only while
// V commutes with P, and forcing it (mirroring a triangle) turns rounding-level asymmetry
// into a perturbation that the early iterations amplify; the iteration then diverges.
void newton_step(const double* P, double* V, double* X, double* Y, int64_t m, bool symmetric) {
  matmul_dd(V, P, X, m);             // X = V P
  matmul_dd(X, V, Y, m, symmetric);  // Y = V P V
  for (int64_t e = 0; e < m * m; ++e) V[e] = 2.0 * V[e] - Y[e];
}

bool is_symmetric(const double* P, int64_t m) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < i; ++j)
      if (P[i * m + j] != P[j * m + i]) return false;
  return true;
}

// max |I - P V| over the entries; X is scratch.
double residual(const double* P, const double* V, double* X, int64_t m) {
  matmul_dd(P, V, X, m);
  double r = 0.0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      const double e = (i == j ? 1.0 : 0.0) - X[i * m + j];
      r = std::max(r, std::isnan(e) ? std::numeric_limits<double>::infinity() : std::fabs(e));
    }
  return r;
}

// SOFT (master): alpha = 1.8 / (max row-sum of K)^2, V0 = alpha P, T steps.
void newton_inverse(const float* K, const double* P, double* V, double* X, double* Y, int64_t m, int64_t iters) {
  double rs = 0.0, pn = 0.0;  // infinity-norms of K and of P = K + reg I
  for (int64_t i = 0; i < m; ++i) {
    double sk = 0.0, sp = 0.0;
    for (int64_t j = 0; j < m; ++j) {
      sk += std::fabs(static_cast<double>(K[i * m + j]));
      sp += std::fabs(P[i * m + j]);
    }
    rs = std::max(rs, sk);
    pn = std::max(pn, sp);
  }
  double alpha = 1.8 / (rs * rs);
  if (!(rs > 0.0) || alpha * pn * pn > 1.9) alpha = 1.8 / (pn * pn);  // see spd_inverse.hpp
  for (int64_t e = 0; e < m * m; ++e) V[e] = alpha * P[e];
  const bool symmetric = is_symmetric(P, m);  // SOFT's K2 = kappa(L, L) is, bit for bit
  for (int64_t t = 0; t < iters; ++t) newton_step(P, V, X, Y, m, symmetric);
}

// Exact inverse of P through its Cholesky factor (lower triangle of P), then one
// Newton–Schulz step with the full P. Returns false on a non-positive or non-finite pivot.
bool cholesky_inverse(const double* P, double* V, double* L, double* X, int64_t m) {
  std::fill(L, L + m * m, 0.0);
  for (int64_t j = 0; j < m; ++j) {
    double d = P[j * m + j];
    for (int64_t k = 0; k < j; ++k) d -= L[j * m + k] * L[j * m + k];
    if (!(d > 0.0) || !std::isfinite(d)) return false;
    const double ljj = std::sqrt(d);
    L[j * m + j] = ljj;
    for (int64_t i = j + 1; i < m; ++i) {
      double s = P[i * m + j];
      for (int64_t k = 0; k < j; ++k) s -= L[i * m + k] * L[j * m + k];
      L[i * m + j] = s / ljj;
    }
  }
  // X = L^-1 (lower triangular), column by column by forward substitution.
  std::fill(X, X + m * m, 0.0);
  for (int64_t j = 0; j < m; ++j) {
    X[j * m + j] = 1.0 / L[j * m + j];
    for (int64_t i = j + 1; i < m; ++i) {
      double s = 0.0;
      for (int64_t k = j; k < i; ++k) s -= L[i * m + k] * X[k * m + j];
      X[i * m + j] = s / L[i * m + i];
    }
  }
  // V = L^-T L^-1: V_ij = sum_{k >= max(i, j)} X_ki X_kj (symmetric).
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0.0;
      for (int64_t k = i; k < m; ++k) s += X[k * m + i] * X[k * m + j];
      V[i * m + j] = s;
      V[j * m + i] = s;
    }
  newton_step(P, V, X, L, m, is_symmetric(P, m));  // refinement with the full P (L, X are free now)
  return true;
}

// ---- backward: dK = -W^T G W^T per matrix, in double -------------------------------------
void inverse_backward(const float* pw, const float* pg, float* pd, int64_t batch, int64_t m) {
  parallel_for(0, batch, 1, [&](int64_t t0, int64_t t1) {
    std::vector<double> Wt(static_cast<size_t>(m * m)), G(static_cast<size_t>(m * m)),
        X(static_cast<size_t>(m * m)), Y(static_cast<size_t>(m * m));
    for (int64_t t = t0; t < t1; ++t) {
      const float* W = pw + t * m * m;
      const float* g = pg + t * m * m;
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < m; ++j) {
          Wt[static_cast<size_t>(i * m + j)] = W[j * m + i];
          G[static_cast<size_t>(i * m + j)] = g[i * m + j];
        }
      matmul_dd(Wt.data(), G.data(), X.data(), m);  // X = W^T G
      matmul_dd(X.data(), Wt.data(), Y.data(), m);  // Y = W^T G W^T
      float* d = pd + t * m * m;
      for (int64_t e = 0; e < m * m; ++e) d[e] = static_cast<float>(-Y[static_cast<size_t>(e)]);
    }
  });
}

struct SpdInverseNode final : Node {
  Saved w;  // the op's output
  const char* name() const override { return "spd_inverse"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& W = w.get();
    const int64_t m = W.shape()[-1];
    Tensor dk = empty(W.shape());
    inverse_backward(W.data(), g.data(), dk.mutable_data(), m ? W.numel() / (m * m) : 0, m);
    return {dk};
  }
};

}  // namespace

double spd_inverse_last_residual() { return g_last_residual.load(std::memory_order_relaxed); }

Tensor spd_inverse(const Tensor& k, const SpdInverseOptions& opt) {
  SOFTLAB_CHECK(k.defined(), "spd_inverse: undefined argument");
  SOFTLAB_CHECK(k.rank() >= 2 && k.shape()[-1] == k.shape()[-2], "spd_inverse: expected square matrices [..., m, m], got ",
                k.shape());
  SOFTLAB_CHECK(opt.reg >= 0.0 && std::isfinite(opt.reg), "spd_inverse: reg must be finite and >= 0, got ", opt.reg);
  SOFTLAB_CHECK(opt.newton_iters >= 0, "spd_inverse: newton_iters must be >= 0, got ", opt.newton_iters);
  const int64_t m = k.shape()[-1];
  const int64_t batch = m ? k.numel() / (m * m) : 0;
  Tensor out = empty(k.shape());
  const float* pk = k.data();
  float* po = out.mutable_data();
  std::vector<double> res(static_cast<size_t>(batch), 0.0);
  std::vector<char> failed(static_cast<size_t>(batch), 0);
  parallel_for(0, batch, 1, [&](int64_t t0, int64_t t1) {
    const size_t mm = static_cast<size_t>(m * m);
    std::vector<double> P(mm), V(mm), X(mm), Y(mm);
    for (int64_t t = t0; t < t1; ++t) {
      const float* K = pk + t * m * m;
      for (int64_t e = 0; e < m * m; ++e) P[static_cast<size_t>(e)] = K[e];
      for (int64_t i = 0; i < m; ++i) P[static_cast<size_t>(i * m + i)] += opt.reg;
      if (opt.method == SpdInverseMethod::Newton) {
        newton_inverse(K, P.data(), V.data(), X.data(), Y.data(), m, opt.newton_iters);
      } else if (!cholesky_inverse(P.data(), V.data(), X.data(), Y.data(), m)) {
        failed[static_cast<size_t>(t)] = 1;
        continue;
      }
      res[static_cast<size_t>(t)] = residual(P.data(), V.data(), X.data(), m);
      float* W = po + t * m * m;
      for (int64_t e = 0; e < m * m; ++e) W[e] = static_cast<float>(V[static_cast<size_t>(e)]);
    }
  });
  for (int64_t t = 0; t < batch; ++t)
    SOFTLAB_CHECK(!failed[static_cast<size_t>(t)], "spd_inverse: matrix ", t, " of ", k.shape(), " plus ", opt.reg,
                  "·I is not positive definite (or not finite): the Cholesky factorisation met a non-positive "
                  "pivot; use a larger reg");
  double r = 0.0;
  for (double x : res) r = std::max(r, x);
  g_last_residual.store(r, std::memory_order_relaxed);
  if (needs_grad({&k})) {
    auto node = std::make_shared<SpdInverseNode>();
    node->w = Saved(out);
    attach(out, node, {&k});
  }
  return out;
}

}  // namespace softlab
