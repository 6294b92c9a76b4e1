// The convolutional stem: strided 3x3 convolutions (im2col + GEMM), LayerNorm, GELU.
#include <string>

#include "softlab/error.hpp"
#include "softlab/nn/layers.hpp"
#include "softlab/ops.hpp"

namespace softlab::nn {

int64_t ConvStem::stages(int64_t image_size, int64_t grid) {
  int64_t side = image_size, n = 0;
  while (side > grid) {
    side = (side + 1) / 2;  // a 3x3 window at stride 2 with padding 1: ceil(side / 2)
    ++n;
  }
  return side == grid ? n : 0;
}

ConvStem::ConvStem(int64_t channels, int64_t image_size, int64_t grid, int64_t width, int64_t dim, Generator& init)
    : channels_(channels), image_size_(image_size) {
  const int64_t n = stages(image_size, grid);
  SOFTLAB_CHECK(n > 0, "model.stem 'conv': halving ", image_size, " pixels never gives the ", grid, "x", grid,
                " patch grid (model.image_size / model.patch_size); pick a patch_size whose grid the halving "
                "reaches (28 pixels: 2, 4, 7, 14 or 28; 32 pixels: 2, 4, 8, 16 or 32)");
  SOFTLAB_CHECK(width > 0, "model.stem_width must be positive, got ", width);
  int64_t in = channels, out = width;
  for (int64_t s = 0; s < n; ++s, in = out, out *= 2) {
    convs.push_back(register_module("conv." + std::to_string(s), std::make_unique<Linear>(9 * in, out, init)));
    norms.push_back(register_module("norm." + std::to_string(s), std::make_unique<LayerNorm>(out)));
  }
  proj = register_module("proj", std::make_unique<Linear>(in, dim, init));
}

Tensor ConvStem::forward(const Tensor& images) const {
  SOFTLAB_CHECK(images.rank() == 4 && images.shape()[1] == channels_ && images.shape()[2] == image_size_ &&
                    images.shape()[3] == image_size_,
                "convolutional stem: expected images [B, ", channels_, ", ", image_size_, ", ", image_size_,
                "], got ", images.shape());
  const int64_t B = images.shape()[0];
  // Channels last, so that a window's taps are contiguous runs of channels.
  Tensor x = channels_ == 1 ? reshape(images, {B, image_size_, image_size_, 1}) : permute(images, {0, 2, 3, 1});
  int64_t side = image_size_;
  for (size_t s = 0; s < convs.size(); ++s) {
    side = (side + 1) / 2;
    const Tensor y = gelu(norms[s]->forward(convs[s]->forward(image_windows(x, 3, 2, 1))));
    x = reshape(y, {B, side, side, y.shape()[2]});
  }
  return proj->forward(reshape(x, {B, side * side, x.shape()[3]}));
}

}  // namespace softlab::nn
