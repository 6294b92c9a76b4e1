// k x k windows of a channels-last image, flattened: the im2col half of a strided
// convolution, whose other half is one GEMM (a Linear over the window rows). The convolutional
// stem of the ViT is built from it (docs/training.md, "Convolutional stem").
//
// x [B, H, W, C] -> y [B, Ho*Wo, k*k*C] with Ho = (H + 2 pad - k) / stride + 1 (Wo alike):
//
//   y[b, oy*Wo + ox, (i*k + j)*C + c] = x[b, oy*stride - pad + i, ox*stride - pad + j, c]
//
// and 0 where the row or column falls outside the image (zero padding). Taps are ordered
// row, column, channel, so each tap copies C contiguous floats.
//
// Backward: dx[b, y, x, c] = sum over the (output, tap) pairs that read (y, x) of g. Windows
// overlap when stride < k, so the sum scatters; each thread owns whole examples, which makes
// the scatter race-free and its order fixed (the result does not depend on the thread count).
#include <cstring>

#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {

struct WindowGeom {
  int64_t B, H, W, C, k, stride, pad, Ho, Wo;
};

void gather_windows(const float* x, float* y, const WindowGeom& g) {
  const int64_t row = g.k * g.k * g.C;
  parallel_for(0, g.B * g.Ho, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / g.Ho, oy = r % g.Ho;
      for (int64_t ox = 0; ox < g.Wo; ++ox) {
        float* dst = y + ((b * g.Ho + oy) * g.Wo + ox) * row;
        for (int64_t i = 0; i < g.k; ++i) {
          const int64_t iy = oy * g.stride - g.pad + i;
          for (int64_t j = 0; j < g.k; ++j, dst += g.C) {
            const int64_t ix = ox * g.stride - g.pad + j;
            if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) {
              std::memset(dst, 0, static_cast<size_t>(g.C) * sizeof(float));
              continue;
            }
            std::memcpy(dst, x + ((b * g.H + iy) * g.W + ix) * g.C, static_cast<size_t>(g.C) * sizeof(float));
          }
        }
      }
    }
  });
}

void scatter_windows(const float* gy, float* dx, const WindowGeom& g) {
  const int64_t row = g.k * g.k * g.C, image = g.H * g.W * g.C;
  parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* d = dx + b * image;
      std::memset(d, 0, static_cast<size_t>(image) * sizeof(float));
      for (int64_t oy = 0; oy < g.Ho; ++oy)
        for (int64_t ox = 0; ox < g.Wo; ++ox) {
          const float* src = gy + ((b * g.Ho + oy) * g.Wo + ox) * row;
          for (int64_t i = 0; i < g.k; ++i) {
            const int64_t iy = oy * g.stride - g.pad + i;
            for (int64_t j = 0; j < g.k; ++j, src += g.C) {
              const int64_t ix = ox * g.stride - g.pad + j;
              if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) continue;
              float* t = d + (iy * g.W + ix) * g.C;
              for (int64_t c = 0; c < g.C; ++c) t[c] += src[c];
            }
          }
        }
    }
  });
}

struct ImageWindowsNode final : Node {
  Shape x_shape;
  WindowGeom geom;
  const char* name() const override { return "image_windows"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx = empty(x_shape);
    if (dx.numel() > 0) scatter_windows(g.data(), dx.mutable_data(), geom);
    return {dx};
  }
};

}  // namespace

Tensor image_windows(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  detail::check_defined(x, "image_windows", "x");
  SOFTLAB_CHECK(x.rank() == 4, "image_windows: x must be channels-last images [B, H, W, C], got shape ", x.shape());
  SOFTLAB_CHECK(kernel >= 1 && stride >= 1 && pad >= 0 && pad < kernel, "image_windows: needs kernel >= 1, stride "
                ">= 1 and 0 <= pad < kernel, got kernel ", kernel, ", stride ", stride, ", pad ", pad);
  const int64_t B = x.shape()[0], H = x.shape()[1], W = x.shape()[2], C = x.shape()[3];
  SOFTLAB_CHECK(H + 2 * pad >= kernel && W + 2 * pad >= kernel, "image_windows: a ", kernel, "x", kernel,
                " window does not fit images of shape ", x.shape(), " padded by ", pad);
  const WindowGeom g{B, H, W, C, kernel, stride, pad, (H + 2 * pad - kernel) / stride + 1,
                     (W + 2 * pad - kernel) / stride + 1};
  Tensor y = empty({B, g.Ho * g.Wo, kernel * kernel * C});
  if (y.numel() > 0) gather_windows(x.data(), y.mutable_data(), g);
  if (needs_grad({&x})) {
    auto node = std::make_shared<ImageWindowsNode>();
    node->x_shape = x.shape();
    node->geom = g;
    attach(y, node, {&x});
  }
  return y;
}

}  // namespace softlab
