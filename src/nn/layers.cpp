// Linear, LayerNorm, Mlp and PatchEmbed.
#include "softlab/nn/layers.hpp"

#include "ops/fused.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab::nn {

Linear::Linear(int64_t in, int64_t out, Generator& init, bool with_bias) {
  weight = register_parameter("weight", trunc_normal({out, in}, init, 0.02f));
  if (with_bias) bias = register_parameter("bias", zeros({out}), false);
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

GridConv::GridConv(int64_t channels, int64_t groups, int64_t kernel, bool with_bias, Generator& init) {
  SOFTLAB_CHECK(kernel > 0 && kernel % 2 == 1, "grid conv: the kernel size must be odd (zero padding k/2 keeps "
                "the grid's size), got ", kernel);
  SOFTLAB_CHECK(groups > 0 && channels % groups == 0, "grid conv: ", groups, " kernels do not divide ", channels,
                " channels");
  const float bound = 1.0f / static_cast<float>(kernel);  // 1/sqrt(fan_in), fan_in = k*k
  weight = register_parameter("weight", uniform({groups, kernel, kernel}, init, -bound, bound));
  if (with_bias) bias = register_parameter("bias", uniform({channels}, init, -bound, bound), false);
}

Tensor GridConv::forward(const Tensor& x, int64_t grid_h, int64_t grid_w, int64_t prefix) const {
  return grid_depthwise_conv(x, weight, bias, grid_h, grid_w, prefix);
}

LayerNorm::LayerNorm(int64_t dim, float eps_) : eps(eps_) {
  gamma = register_parameter("weight", ones({dim}), false);
  beta = register_parameter("bias", zeros({dim}), false);
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, gamma, beta, eps); }

Mlp::Mlp(int64_t dim, int64_t hidden, Generator& init) {
  fc1 = register_module("fc1", std::make_unique<Linear>(dim, hidden, init));
  fc2 = register_module("fc2", std::make_unique<Linear>(hidden, dim, init));
}

// fc2(gelu_tanh(fc1(x))), with fc1's bias added in the fused bias + GELU pass rather than by
// the GEMM (ops/fused.hpp): one pass over the hidden activations in backward instead of two.
Tensor Mlp::forward(const Tensor& x) const { return fc2->forward(bias_gelu(linear(x, fc1->weight), fc1->bias)); }

Tensor image_patches(const Tensor& images, int64_t p) {
  SOFTLAB_CHECK(images.rank() == 4, "image_patches: images must be [B, C, H, W], got ", images.shape());
  const int64_t B = images.shape()[0], C = images.shape()[1], H = images.shape()[2], W = images.shape()[3];
  SOFTLAB_CHECK(p > 0 && H % p == 0 && W % p == 0, "image_patches: image size ", H, "x", W,
                " is not divisible by the patch size ", p);
  const int64_t gh = H / p, gw = W / p, row = C * p * p;
  Tensor out = empty({B, gh * gw, row});
  const float* src = images.data();
  float* dst = out.mutable_data();
  parallel_for(0, B * gh, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / gh, py = r % gh;
      for (int64_t px = 0; px < gw; ++px) {
        float* d = dst + ((b * gh + py) * gw + px) * row;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t dy = 0; dy < p; ++dy) {
            const float* s = src + ((b * C + c) * H + py * p + dy) * W + px * p;
            for (int64_t dx = 0; dx < p; ++dx) *d++ = s[dx];
          }
      }
    }
  });
  return out;
}

PatchEmbed::PatchEmbed(int64_t channels, int64_t image_size, int64_t patch, int64_t dim, Generator& init)
    : channels_(channels), image_size_(image_size), patch_(patch), grid_(image_size / patch) {
  SOFTLAB_CHECK(patch > 0 && image_size % patch == 0, "model.image_size (", image_size,
                ") must be divisible by model.patch_size (", patch, ")");
  proj = register_module("proj", std::make_unique<Linear>(channels * patch * patch, dim, init));
}

Tensor PatchEmbed::forward(const Tensor& images) const {
  SOFTLAB_CHECK(images.rank() == 4 && images.shape()[1] == channels_ && images.shape()[2] == image_size_ &&
                    images.shape()[3] == image_size_,
                "patch embedding: expected images [B, ", channels_, ", ", image_size_, ", ", image_size_, "], got ",
                images.shape());
  return proj->forward(image_patches(images, patch_));
}

}  // namespace softlab::nn
