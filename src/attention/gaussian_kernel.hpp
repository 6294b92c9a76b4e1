#pragma once
// The Gaussian kernel matrix of SOFT (docs/attention.md), as one fused op with a
// hand-written backward. Not part of the public API.
//
//   K_ij = kappa(a_i, b_j) = exp(-max(||a_i - b_j||^2, 0) / 2)
//
// a: [..., N, D], b: [..., M, D] with equal leading (batch) axes -> K: [..., N, M].
// The squared distance is summed from the differences (never negative, no cancellation
// for inputs of large magnitude, unlike ||a||^2 + ||b||^2 - 2 a.b).
//
// Backward, with G the upstream gradient and w_ij = G_ij K_ij:
//   da_i = sum_j w_ij (b_j - a_i),   db_j = sum_i w_ij (a_i - b_j).
// Both inputs may be the same tensor (K2 = kappa(L, L)): the node lists it twice and the
// autograd engine adds the two contributions.
// The node keeps a, b and K (K is the op's output, usually kept alive by the next op
// anyway): O(N·M + (N + M)·D) per batch element, nothing else.
#include "softlab/tensor.hpp"

namespace softlab {

Tensor gaussian_kernel(const Tensor& a, const Tensor& b);

}  // namespace softlab
