#pragma once
// The basic layers: Linear, LayerNorm, Mlp (Linear-GELU-Linear) and PatchEmbed.
// Initialisation follows standard ViT practice (timm): truncated normal, std 0.02, for
// linear weights and embeddings; zeros for biases; ones for norm gains.
#include "softlab/module.hpp"
#include "softlab/random.hpp"

namespace softlab::nn {

class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, Generator& init, bool bias = true);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;  // [out, in], [out]
};

// Depthwise k x k convolution over the image grid of a token sequence
// (grid_depthwise_conv in softlab/ops.hpp): weight [groups, k, k], one kernel per group of
// channels/groups channels, and a bias [channels] when with_bias. Initialised as PyTorch's
// Conv2d (kaiming-uniform with a = sqrt 5: U(-1/k, 1/k) for a depthwise kernel, the bias too).
class GridConv : public Module {
 public:
  GridConv(int64_t channels, int64_t groups, int64_t kernel, bool with_bias, Generator& init);
  // x [B, N, channels]; tokens [prefix, prefix + grid_h*grid_w) are the grid, row-major.
  Tensor forward(const Tensor& x, int64_t grid_h, int64_t grid_w, int64_t prefix) const;
  Tensor weight, bias;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, float eps = 1e-6f);
  Tensor forward(const Tensor& x) const;
  Tensor gamma, beta;
  float eps;
};

class Mlp : public Module {
 public:
  Mlp(int64_t dim, int64_t hidden, Generator& init);
  Tensor forward(const Tensor& x) const;
  Linear* fc1;
  Linear* fc2;
};

// Non-overlapping p x p patches of [B, C, H, W] images, flattened (c, dy, dx) and projected
// to `dim`: a convolution with kernel = stride = p, written as im2col + one GEMM.
class PatchEmbed : public Module {
 public:
  PatchEmbed(int64_t channels, int64_t image_size, int64_t patch, int64_t dim, Generator& init);
  Tensor forward(const Tensor& images) const;  // -> [B, num_patches, dim]
  int64_t num_patches() const { return grid_ * grid_; }
  Linear* proj;

 private:
  int64_t channels_, image_size_, patch_, grid_;
};

// [B, C, H, W] -> [B, (H/p)(W/p), C p p]; not differentiable (images are inputs).
Tensor image_patches(const Tensor& images, int64_t patch);

}  // namespace softlab::nn
