#pragma once
// The basic layers: Linear, LayerNorm, Mlp (Linear-GELU-Linear), PatchEmbed and ConvStem.
// Initialisation follows standard ViT practice (timm): truncated normal, std 0.02, for
// linear weights and embeddings; zeros for biases; ones for norm gains.
#include <vector>

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

// The convolutional stem of "Early Convolutions Help Transformers See Better" (Xiao et al.
// 2021), in place of the patch embedding: 3x3 stride-2 convolutions, each followed by a
// LayerNorm over its channels and GELU, halve the image (rounding up) until it is the patch
// grid, with width, 2 width, 4 width, ... channels; a 1x1 convolution then maps to `dim`.
// Each convolution is image_windows + a Linear: its weight is [out, 3*3*in], taps ordered
// (row, column, channel). The tokens are the same grid as PatchEmbed's (docs/training.md,
// "Convolutional stem").
class ConvStem : public Module {
 public:
  ConvStem(int64_t channels, int64_t image_size, int64_t grid, int64_t width, int64_t dim, Generator& init);
  Tensor forward(const Tensor& images) const;  // [B, C, H, W] -> [B, grid*grid, dim]
  // The number of halvings that take image_size to grid; 0 when none does (grid >= image_size
  // or the halving skips it).
  static int64_t stages(int64_t image_size, int64_t grid);
  std::vector<Linear*> convs;
  std::vector<LayerNorm*> norms;
  Linear* proj;

 private:
  int64_t channels_, image_size_;
};

// [B, C, H, W] -> [B, (H/p)(W/p), C p p]; not differentiable (images are inputs).
Tensor image_patches(const Tensor& images, int64_t patch);

}  // namespace softlab::nn
