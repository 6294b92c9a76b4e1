#pragma once
// SOFT's composed reference (AttentionEntry::reference of src/attention/soft.cpp, internal
// to softlab) and the two composed ops it is made of, which the tests of the fused ops
// (gaussian_kernel, spd_inverse) compare against as well. Each is the fused path's maths
// written another way from primitive ops, so that a slip in one shows against the other:
// the kernel by broadcasting instead of from differences in a loop, the inverse by
// Newton–Schulz composed from matmuls (autograd differentiates through its iterations), the
// landmarks by constant selection matrices instead of reshapes.
#include "softlab/attention.hpp"
#include "softlab/tensor.hpp"

namespace softlab::attention_ref {

// kappa(a, b) = exp(-||a_i - b_j||^2 / 2) for a [..., N, D], b [..., M, D]: [..., N, M].
Tensor gaussian_composed(const Tensor& a, const Tensor& b);

// (k + reg I)^-1 by `iters` Newton–Schulz steps from SOFT's start V0 = alpha (k + reg I),
// alpha = 1.8 / (max row-sum of |k|)^2 per matrix (spd_inverse.hpp, including its guard
// for a large reg), alpha a constant as in the fused op.
Tensor newton_schulz_composed(const Tensor& k, double reg, int64_t iters);

// The module's output for validated params and the context's grid; k is ignored (Q = K
// tied). inverse "newton" runs the configured steps; "cholesky" (exact) runs 40, past
// convergence for any landmark kernel the module meets (the error squares each step once
// below 1, which takes about log2(cond^2) steps: cond up to ~1e5).
Tensor soft_reference(Attention& module, const json& params, const AttentionContext& ctx, const Tensor& q,
                      const Tensor& k, const Tensor& v);

}  // namespace softlab::attention_ref
