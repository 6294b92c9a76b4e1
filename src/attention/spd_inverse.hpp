#pragma once
// The regularised inverse W = (K + reg·I)^-1 of a batch of small symmetric positive
// (semi-)definite matrices, SOFT's m x m landmark kernel (docs/attention.md), as one fused
// op with a hand-written backward. Not part of the public API.
//
// k: [..., m, m] -> W: [..., m, m]. Each matrix is copied to double, P = K + reg·I, and:
//   Newton:   the SOFT (master) Newton–Schulz iteration: alpha = 1.8 / (max row-sum of K)^2
//             per matrix, V0 = alpha·P, then V <- 2V - V P V, `newton_iters` times. The row
//             sum is of |K_ij| (the infinity-norm; equal to the plain row sum for SOFT's
//             positive kernel matrices). Convergence needs alpha·sigma_max(P)^2 < 2; should
//             reg be so large against the row sum that the release's alpha could break that
//             (1.8·||P||inf^2 / rowsum^2 > 1.9, never the case for a Gaussian K with reg <=
//             0.027), alpha = 1.8 / ||P||inf^2 is used instead.
//   Cholesky: the exact inverse through the Cholesky factor of P (its lower triangle), then
//             one Newton–Schulz step V <- 2V - V P V with the full P. That step is iterative
//             refinement in double, and it makes W a function of every entry of K whose
//             first derivative is that of the true inverse, so the backward below is exact
//             for any perturbation, not only symmetric ones. A non-positive pivot (K + reg·I
//             not positive definite, or not finite) is an error.
// All m x m arithmetic is in double; W is rounded to float at the end.
//
// Backward (both methods, docs/attention.md): dK = -W^T dW W^T, computed once in double from the
// returned W (the Newton iterate, not the exact inverse, as the SOFT release does). It is
// the derivative of the forward only once the iteration has converged: check
// spd_inverse_last_residual(). The node keeps only W, the op's output (which the next
// product usually keeps alive anyway): B·H·m^2 floats.
#include <cstdint>

#include "softlab/tensor.hpp"

namespace softlab {

enum class SpdInverseMethod { Newton, Cholesky };

struct SpdInverseOptions {
  SpdInverseMethod method = SpdInverseMethod::Newton;
  int64_t newton_iters = 20;
  double reg = 0.01;
};

Tensor spd_inverse(const Tensor& k, const SpdInverseOptions& opt = {});

// max over the matrices of the last spd_inverse call (in this process) of
// max_ij |(I - P·W)_ij|, with P = K + reg·I and W the double-precision result before
// rounding. NaN before the first call. For diagnostics and tests.
double spd_inverse_last_residual();

}  // namespace softlab
