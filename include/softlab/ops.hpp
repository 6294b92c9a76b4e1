#pragma once
// Differentiable primitive ops, as free functions. Each checks its arguments' shapes and
// throws softlab::Error naming both shapes; each records a backward Node when an input
// requires grad and grad mode is on. Axis arguments may be negative (from the end).
#include <cstdint>
#include <span>
#include <vector>

#include "softlab/tensor.hpp"

namespace softlab {

// ---- linear algebra (oneDNN) ------------------------------------------------------------
// a: [..., M, K] (or [..., K, M] with trans_a), b: [..., K, N] (or [..., N, K] with trans_b).
// The batch dimensions of a and b must be equal, or b is 2-D and shared by every batch.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// y = x W^T + bias, x: [..., in], weight: [out, in], bias: [out] or undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- element-wise, binary with numpy broadcasting -----------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Shape broadcast_shapes(const Shape& a, const Shape& b);  // throws naming both shapes

// ---- element-wise, unary ------------------------------------------------------------------
Tensor neg(const Tensor& x);
Tensor scale(const Tensor& x, float c);      // c * x
Tensor add_scalar(const Tensor& x, float c); // x + c
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor softplus(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor elu(const Tensor& x, float alpha = 1.0f);
enum class GeluKind { Tanh, Exact };
Tensor gelu(const Tensor& x, GeluKind kind = GeluKind::Tanh);

// ---- reductions ---------------------------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> shape []
Tensor mean(const Tensor& x);
Tensor max(const Tensor& x);  // gradient goes to the first maximal element
Tensor sum(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor mean(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor max(const Tensor& x, int64_t axis, bool keepdim = false);

// ---- softmax family (fused, last axis, numerically stable) --------------------------------
Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);

// ---- normalisation ------------------------------------------------------------------------
// Over the last axis; gamma and beta: [D] (either may be undefined: no affine part).
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps = 1e-5f);
// x / max(||x||, eps) along the last axis (torch's F.normalize), fused with its backward
// dx = (g - x_hat (x_hat . g)) / ||x|| (g / eps where the norm is clamped).
Tensor l2_normalize(const Tensor& x, float eps = 1e-12f);

// ---- shape --------------------------------------------------------------------------------
Tensor reshape(const Tensor& x, std::vector<int64_t> dims);  // one dim may be -1; free (a view)
inline Tensor reshape(const Tensor& x, std::initializer_list<int64_t> dims) {
  return reshape(x, std::vector<int64_t>(dims));
}
inline Tensor reshape(const Tensor& x, const Shape& shape) { return reshape(x, shape.dims()); }
Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1);  // a copy
Tensor permute(const Tensor& x, const std::vector<int64_t>& order);  // a copy
// [start, end) along axis: a free view when the block is contiguous (every axis before
// `axis` has size 1), else a copy.
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end);
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
// Rows of x picked by index along axis 0: out shape = index_shape + x.shape[1:].
Tensor index_select(const Tensor& x, std::span<const int32_t> index, const Shape& index_shape);
// Embedding lookup: weight [V, D], tokens of any shape -> tokens.shape + [D].
Tensor embedding(const Tensor& weight, std::span<const int32_t> tokens, const Shape& tokens_shape);

// ---- positions ----------------------------------------------------------------------------
// Rotary position embedding of x [..., N, Dh] (Dh even): channels (j, j + Dh/2) of position n
// turn by n * theta^(-2j/Dh) (the GPT-NeoX / Llama layout).
Tensor rope(const Tensor& x, float theta = 10000.0f);

// ---- convolution --------------------------------------------------------------------------
// Depthwise k x k convolution (k odd, zero padding k/2, stride 1) over the image grid of a
// token sequence x [B, N, C]: tokens [prefix, prefix + grid_h*grid_w) are the grid in
// row-major order, and the other tokens' outputs are 0. weight [G, k, k] with G dividing C:
// channel ch uses kernel ch / (C/G) (G = C: one per channel; G = heads: one per head).
// bias [C] or undefined; it is added at the grid tokens only.
Tensor grid_depthwise_conv(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t grid_h, int64_t grid_w,
                           int64_t prefix = 0);

// k x k windows of channels-last images x [B, H, W, C] at the given stride, zero-padded by
// pad on every side: [B, Ho*Wo, k*k*C] with Ho = (H + 2 pad - k)/stride + 1 (Wo alike), taps
// ordered (row, column, channel). A Linear over the last axis then is a strided convolution
// (im2col); the backward sums the overlapping windows' gradients.
Tensor image_windows(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad);

// ---- losses -------------------------------------------------------------------------------
// Mean over the batch of -log softmax(logits)[label], logits [N, C], labels in [0, C).
// With label smoothing eps the target is (1-eps) one-hot + eps/C (as torch).
Tensor cross_entropy(const Tensor& logits, std::span<const int32_t> labels,
                     float label_smoothing = 0.0f);

}  // namespace softlab

namespace softlab {
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator*(float c, const Tensor& a) { return scale(a, c); }
inline Tensor operator*(const Tensor& a, float c) { return scale(a, c); }
inline Tensor operator+(const Tensor& a, float c) { return add_scalar(a, c); }
}  // namespace softlab

namespace softlab {
class Generator;
// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
// The mask comes from `gen`, so a seeded generator gives a reproducible mask.
Tensor dropout(const Tensor& x, float p, Generator& gen);
// Drop path (stochastic depth): zeroes whole examples (rows of dimension 0) with
// probability p and scales the rest by 1/(1-p).
Tensor drop_path(const Tensor& x, float p, Generator& gen);
}  // namespace softlab
