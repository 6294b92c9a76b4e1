// The random-resized crop, the shift and random erasing (src/data/augment.hpp). Parameter
// draws follow torchvision's RandomResizedCrop and timm's RandomErasing (docs/training.md,
// "Augmentation and mixing"); the pixel loops are plain loops over one image.
#include "data/augment.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace softlab::augment {

Box draw_resized_crop_box(Generator& g, int64_t H, int64_t W, const std::array<double, 2>& scale,
                          const std::array<double, 2>& ratio) {
  const double area = static_cast<double>(H * W);
  const double log_lo = std::log(ratio[0]), log_hi = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform_in(g, scale[0], scale[1]);
    const double aspect = std::exp(uniform_in(g, log_lo, log_hi));  // width / height
    const int64_t w = std::llround(std::sqrt(target * aspect));
    const int64_t h = std::llround(std::sqrt(target / aspect));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      Box b{.height = h, .width = w};
      b.top = static_cast<int64_t>(g.below(static_cast<uint64_t>(H - h + 1)));
      b.left = static_cast<int64_t>(g.below(static_cast<uint64_t>(W - w + 1)));
      return b;
    }
  }
  // Ten misses happen only for ranges far from the image's shape; the centred crop closest to
  // it keeps the output sensible without looping forever.
  const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
  int64_t w = W, h = H;
  if (in_ratio < ratio[0]) {
    h = std::llround(static_cast<double>(w) / ratio[0]);
  } else if (in_ratio > ratio[1]) {
    w = std::llround(static_cast<double>(h) * ratio[1]);
  }
  h = std::clamp<int64_t>(h, 1, H);
  w = std::clamp<int64_t>(w, 1, W);
  return Box{.top = (H - h) / 2, .left = (W - w) / 2, .height = h, .width = w};
}

namespace {
// One axis of the bilinear resampling: for each of the n output positions, the two source
// indices inside [0, len) and the weight of the second.
struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<double> f;
};
Taps bilinear_taps(int64_t n, int64_t len) {
  Taps t;
  t.i0.resize(n);
  t.i1.resize(n);
  t.f.resize(n);
  const double step = static_cast<double>(len) / static_cast<double>(n);
  for (int64_t k = 0; k < n; ++k) {
    // Pixel centres aligned; left of the first centre there is nothing to blend with.
    const double s = std::max(0.0, (static_cast<double>(k) + 0.5) * step - 0.5);
    const int64_t a = std::min(static_cast<int64_t>(s), len - 1);
    t.i0[k] = a;
    t.i1[k] = std::min(a + 1, len - 1);
    t.f[k] = s - static_cast<double>(a);
  }
  return t;
}
}  // namespace

void resized_crop(const uint8_t* src, uint8_t* dst, int64_t C, int64_t H, int64_t W, const Box& box) {
  const Taps ty = bilinear_taps(H, box.height), tx = bilinear_taps(W, box.width);
  for (int64_t c = 0; c < C; ++c) {
    const uint8_t* s = src + c * H * W;
    uint8_t* d = dst + c * H * W;
    for (int64_t y = 0; y < H; ++y) {
      const uint8_t* r0 = s + (box.top + ty.i0[y]) * W + box.left;
      const uint8_t* r1 = s + (box.top + ty.i1[y]) * W + box.left;
      const double fy = ty.f[y];
      for (int64_t x = 0; x < W; ++x) {
        const double fx = tx.f[x];
        const double top = (1.0 - fx) * r0[tx.i0[x]] + fx * r0[tx.i1[x]];
        const double bottom = (1.0 - fx) * r1[tx.i0[x]] + fx * r1[tx.i1[x]];
        d[y * W + x] = to_pixel((1.0 - fy) * top + fy * bottom);
      }
    }
  }
}

void shift(const uint8_t* src, uint8_t* dst, int64_t C, int64_t H, int64_t W, int64_t dy, int64_t dx) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = 0; y < H; ++y) {
      const int64_t sy = y + dy;
      uint8_t* d = dst + (c * H + y) * W;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sx = x + dx;
        d[x] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? src[(c * H + sy) * W + sx] : 0;
      }
    }
}

EraseDraw draw_erase_box(Generator& g, int64_t H, int64_t W, double probability) {
  EraseDraw e;
  if (!(uniform01(g) < probability)) return e;
  e.gated = true;
  const double area = static_cast<double>(H * W);
  const double log_lo = std::log(kEraseMinRatio), log_hi = std::log(kEraseMaxRatio);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform_in(g, kEraseMinArea, kEraseMaxArea);
    const double aspect = std::exp(uniform_in(g, log_lo, log_hi));  // height / width
    const int64_t h = std::llround(std::sqrt(target * aspect));
    const int64_t w = std::llround(std::sqrt(target / aspect));
    if (h < H && w < W) {
      e.placed = true;
      e.box.height = h;
      e.box.width = w;
      e.box.top = static_cast<int64_t>(g.below(static_cast<uint64_t>(H - h + 1)));
      e.box.left = static_cast<int64_t>(g.below(static_cast<uint64_t>(W - w + 1)));
      return e;
    }
  }
  return e;
}

void erase(float* img, int64_t C, int64_t H, int64_t W, const Box& box, Generator& g) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = box.top; y < box.top + box.height; ++y)
      for (int64_t x = box.left; x < box.left + box.width; ++x) img[(c * H + y) * W + x] = g.normal();
}

}  // namespace softlab::augment
