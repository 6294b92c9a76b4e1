#pragma once
// Fused ops of the transformer block (internal to softlab, used by src/nn/): each replaces
// a chain of primitives from softlab/ops.hpp with one pass forward and one pass backward,
// and is tested against that chain (tests/test_fused_ops.cpp) and by finite differences
// (tests/test_gradcheck.cpp).
#include "softlab/tensor.hpp"

namespace softlab {

// gelu(h + bias, GeluKind::Tanh) for h [..., C], bias [C]: the MLP's fc1 bias and
// activation (elementwise.cpp).
Tensor bias_gelu(const Tensor& h, const Tensor& bias);

}  // namespace softlab
