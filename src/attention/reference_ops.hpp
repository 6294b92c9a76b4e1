#pragma once
// Building blocks of the composed references (AttentionEntry::reference, internal to
// softlab): the pieces of a module's maths written with the differentiable primitive ops,
// on the explicit N x N form, so that autograd supplies the backward the fused kernels
// are tested against. They are written once here so that every reference masks, counts
// and scales the same way. Speed is no concern: a reference exists for the test suite.
#include <string>

#include "softlab/attention.hpp"
#include "softlab/tensor.hpp"

namespace softlab::attention_ref {

// [N, N]: 1 where query i sees key j (all of them, or j <= i when causal), else 0.
Tensor visibility(int64_t n, bool causal);
// [N, N]: 0 where visible, -inf above the diagonal when causal; added to logits before a
// softmax (all zeros when not causal).
Tensor causal_mask(int64_t n, bool causal);
// [N, 1]: n_i, the number of keys query i sees.
Tensor visible_counts(int64_t n, bool causal);
// s: the validated "scale" (a number, or null for Dh^-1/2) for q [B, H, N, Dh].
float scale_of(const json& params, const Tensor& q);
// s Q Kᵀ: [B, H, N, N], with s from scale_of.
Tensor logits(const json& params, const Tensor& q, const Tensor& k);
// Rows of non-negative weights (zero where masked) divided by their sum: g / Σ_j g.
Tensor l1_rows(const Tensor& g);
// M X for a constant M [R, N] and X [B, H, N, D]: [B, H, R, D]. matmul broadcasts only a
// 2-D right operand, so it is formed as (Xᵀ Mᵀ)ᵀ.
Tensor left_matmul(const Tensor& m, const Tensor& x);
// phi(x) = elu(x) + 1, the feature map of linear attention and MALA.
Tensor elu_plus_one(const Tensor& x);
// The module's parameter `name` (its tensor, so gradients reach the module); an Error
// naming the module's parameters if there is none.
Tensor parameter(Attention& module, const std::string& name);

}  // namespace softlab::attention_ref
