// TrivialAugment's ops (src/data/trivial_augment.hpp). The definitions are torchvision's
// (transforms/autoaugment.py and the functional ops it calls), rewritten as loops over one
// uint8 CHW image; where torchvision truncates a blended value to uint8 we round, so every op
// rounds the same way (augment::to_pixel).
#include "data/trivial_augment.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "data/augment.hpp"

namespace softlab::augment {

const char* ta_op_name(TaOp op) {
  switch (op) {
    case TaOp::Identity: return "identity";
    case TaOp::ShearX: return "shear_x";
    case TaOp::ShearY: return "shear_y";
    case TaOp::TranslateX: return "translate_x";
    case TaOp::TranslateY: return "translate_y";
    case TaOp::Rotate: return "rotate";
    case TaOp::Brightness: return "brightness";
    case TaOp::Color: return "color";
    case TaOp::Contrast: return "contrast";
    case TaOp::Sharpness: return "sharpness";
    case TaOp::Posterize: return "posterize";
    case TaOp::Solarize: return "solarize";
    case TaOp::AutoContrast: return "autocontrast";
    case TaOp::Equalize: return "equalize";
  }
  return "?";
}

std::vector<TaOp> ta_ops(int64_t channels) {
  std::vector<TaOp> ops{TaOp::Identity, TaOp::ShearX,     TaOp::ShearY,    TaOp::TranslateX, TaOp::TranslateY,
                        TaOp::Rotate,   TaOp::Brightness, TaOp::Color,     TaOp::Contrast,   TaOp::Sharpness,
                        TaOp::Posterize, TaOp::Solarize,  TaOp::AutoContrast, TaOp::Equalize};
  // Saturation of a grey image is the image itself: drawing it would only dilute the others.
  if (channels != 3) ops.erase(std::find(ops.begin(), ops.end(), TaOp::Color));
  return ops;
}

bool ta_has_magnitude(TaOp op) {
  return op != TaOp::Identity && op != TaOp::AutoContrast && op != TaOp::Equalize;
}

bool ta_signed(TaOp op) { return ta_has_magnitude(op) && op != TaOp::Posterize && op != TaOp::Solarize; }

double ta_magnitude(TaOp op, int bin, int64_t H, int64_t W) {
  const double t = static_cast<double>(bin) / static_cast<double>(kTaBins - 1);  // 0 .. 1
  switch (op) {
    case TaOp::ShearX:
    case TaOp::ShearY: return kTaMaxShear * t;
    case TaOp::TranslateX: return kTaMaxTranslate * static_cast<double>(W) * t;
    case TaOp::TranslateY: return kTaMaxTranslate * static_cast<double>(H) * t;
    case TaOp::Rotate: return kTaMaxRotate * t;
    case TaOp::Brightness:
    case TaOp::Color:
    case TaOp::Contrast:
    case TaOp::Sharpness: return kTaMaxEnhance * t;
    case TaOp::Posterize: return 8.0 - std::round(static_cast<double>(bin) / 5.0);  // 8 .. 2 bits
    case TaOp::Solarize: return 255.0 * (1.0 - t);                                  // 255 .. 0
    default: return 0.0;
  }
}

TaDraw draw_trivial_augment(Generator& g, int64_t C, int64_t H, int64_t W) {
  const std::vector<TaOp> ops = ta_ops(C);
  TaDraw d;
  d.op = ops[g.below(ops.size())];
  if (ta_has_magnitude(d.op)) d.magnitude = ta_magnitude(d.op, static_cast<int>(g.below(kTaBins)), H, W);
  if (ta_signed(d.op) && g.below(2) == 1) d.magnitude = -d.magnitude;
  return d;
}

namespace {

// Output pixel centre (X, Y) = (x + 0.5, y + 0.5) maps to the source point
// (m[0] X + m[1] Y + m[2], m[3] X + m[4] Y + m[5]) in the same edge-based coordinates; the
// nearest source pixel is the one containing that point, so its index is the floor.
void warp_nearest(uint8_t* img, int64_t C, int64_t H, int64_t W, const double m[6], std::vector<uint8_t>& scratch) {
  scratch.assign(img, img + C * H * W);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const double X = static_cast<double>(x) + 0.5, Y = static_cast<double>(y) + 0.5;
      const double sx = std::floor(m[0] * X + m[1] * Y + m[2]);
      const double sy = std::floor(m[3] * X + m[4] * Y + m[5]);
      const bool inside = sx >= 0.0 && sx < static_cast<double>(W) && sy >= 0.0 && sy < static_cast<double>(H);
      const int64_t k = inside ? static_cast<int64_t>(sy) * W + static_cast<int64_t>(sx) : 0;
      for (int64_t c = 0; c < C; ++c) img[(c * H + y) * W + x] = inside ? scratch[c * H * W + k] : 0;
    }
}

// Luma of each pixel (ITU-R 601 weights, as torchvision's rgb_to_grayscale); the image itself
// for one channel.
std::vector<double> grey_of(const uint8_t* img, int64_t C, int64_t HW) {
  std::vector<double> g(HW);
  for (int64_t p = 0; p < HW; ++p)
    g[p] = C == 3 ? 0.299 * img[p] + 0.587 * img[HW + p] + 0.114 * img[2 * HW + p] : img[p];
  return g;
}

// img = factor * img + (1 - factor) * degenerate, per pixel (degenerate has C*H*W values).
void blend(uint8_t* img, int64_t n, const double* degenerate, double factor) {
  for (int64_t i = 0; i < n; ++i) img[i] = to_pixel(degenerate[i] + factor * (img[i] - degenerate[i]));
}

void enhance_sharpness(uint8_t* img, int64_t C, int64_t H, int64_t W, double factor) {
  // The degenerate image smooths the interior with the 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13
  // (rounded to uint8, as PIL's SMOOTH filter) and keeps the border pixels as they are.
  std::vector<double> d(img, img + C * H * W);
  for (int64_t c = 0; c < C; ++c) {
    const uint8_t* s = img + c * H * W;
    for (int64_t y = 1; y + 1 < H; ++y)
      for (int64_t x = 1; x + 1 < W; ++x) {
        int sum = 4 * s[y * W + x];
        for (int64_t dy = -1; dy <= 1; ++dy)
          for (int64_t dx = -1; dx <= 1; ++dx) sum += s[(y + dy) * W + x + dx];
        d[(c * H + y) * W + x] = to_pixel(static_cast<double>(sum) / 13.0);
      }
  }
  blend(img, C * H * W, d.data(), factor);
}

void autocontrast(uint8_t* img, int64_t C, int64_t HW) {
  for (int64_t c = 0; c < C; ++c) {
    uint8_t* p = img + c * HW;
    const auto [lo_it, hi_it] = std::minmax_element(p, p + HW);
    const int lo = *lo_it, hi = *hi_it;
    if (hi == lo) continue;  // a flat channel has no range to stretch
    for (int64_t i = 0; i < HW; ++i) p[i] = to_pixel(static_cast<double>((p[i] - lo) * 255) / (hi - lo));
  }
}

// Histogram equalisation per channel, as PIL's ImageOps.equalize: value v moves to its
// cumulative count below v (plus half a step) divided by the step, the count of the pixels not
// at the highest value present over 255; so values spread over 0..255 by how many pixels lie
// below them, and the highest value lands at (or is clamped to) 255.
void equalize(uint8_t* img, int64_t C, int64_t HW) {
  for (int64_t c = 0; c < C; ++c) {
    uint8_t* p = img + c * HW;
    int64_t hist[256] = {};
    for (int64_t i = 0; i < HW; ++i) ++hist[p[i]];
    int top = 255;
    while (hist[top] == 0) --top;
    const int64_t step = (HW - hist[top]) / 255;
    if (step == 0) continue;  // one value, or too few pixels to spread: leave it
    uint8_t lut[256];
    int64_t n = step / 2;
    for (int v = 0; v < 256; ++v) {
      lut[v] = static_cast<uint8_t>(std::min<int64_t>(255, n / step));
      n += hist[v];
    }
    for (int64_t i = 0; i < HW; ++i) p[i] = lut[p[i]];
  }
}

}  // namespace

void apply_ta_op(uint8_t* img, int64_t C, int64_t H, int64_t W, TaOp op, double magnitude,
                 std::vector<uint8_t>& scratch) {
  const int64_t HW = H * W, n = C * HW;
  switch (op) {
    case TaOp::Identity: return;
    case TaOp::ShearX: {  // source x = X + m Y: rows further down read further right
      const double m[6] = {1.0, magnitude, 0.0, 0.0, 1.0, 0.0};
      return warp_nearest(img, C, H, W, m, scratch);
    }
    case TaOp::ShearY: {
      const double m[6] = {1.0, 0.0, 0.0, magnitude, 1.0, 0.0};
      return warp_nearest(img, C, H, W, m, scratch);
    }
    case TaOp::TranslateX: {
      const double t = std::trunc(magnitude);
      const double m[6] = {1.0, 0.0, -t, 0.0, 1.0, 0.0};
      return warp_nearest(img, C, H, W, m, scratch);
    }
    case TaOp::TranslateY: {
      const double t = std::trunc(magnitude);
      const double m[6] = {1.0, 0.0, 0.0, 0.0, 1.0, -t};
      return warp_nearest(img, C, H, W, m, scratch);
    }
    case TaOp::Rotate: {
      // Counter-clockwise on screen (y pointing down) by `magnitude` degrees about the centre:
      // the output at offset (u, v) from the centre shows the source at the offset turned
      // clockwise, (cos u - sin v, sin u + cos v).
      const double a = magnitude * std::numbers::pi / 180.0, co = std::cos(a), si = std::sin(a);
      const double cx = 0.5 * static_cast<double>(W), cy = 0.5 * static_cast<double>(H);
      const double m[6] = {co, -si, cx - co * cx + si * cy, si, co, cy - si * cx - co * cy};
      return warp_nearest(img, C, H, W, m, scratch);
    }
    case TaOp::Brightness: {  // blend with black
      for (int64_t i = 0; i < n; ++i) img[i] = to_pixel((1.0 + magnitude) * img[i]);
      return;
    }
    case TaOp::Color: {  // blend with the pixel's grey (saturation)
      if (C != 3) return;
      const std::vector<double> g = grey_of(img, C, HW);
      std::vector<double> d(n);
      for (int64_t c = 0; c < C; ++c) std::copy(g.begin(), g.end(), d.begin() + c * HW);
      return blend(img, n, d.data(), 1.0 + magnitude);
    }
    case TaOp::Contrast: {  // blend with the image's mean grey level
      const std::vector<double> g = grey_of(img, C, HW);
      double mean = 0.0;
      for (double v : g) mean += v;
      mean /= static_cast<double>(HW);
      const std::vector<double> d(n, mean);
      return blend(img, n, d.data(), 1.0 + magnitude);
    }
    case TaOp::Sharpness: return enhance_sharpness(img, C, H, W, 1.0 + magnitude);
    case TaOp::Posterize: {  // keep the top `bits` bits
      const int bits = std::clamp(static_cast<int>(magnitude), 0, 8);
      const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - bits));
      for (int64_t i = 0; i < n; ++i) img[i] &= mask;
      return;
    }
    case TaOp::Solarize: {  // invert the pixels at or above the threshold
      for (int64_t i = 0; i < n; ++i)
        if (static_cast<double>(img[i]) >= magnitude) img[i] = static_cast<uint8_t>(255 - img[i]);
      return;
    }
    case TaOp::AutoContrast: return autocontrast(img, C, HW);
    case TaOp::Equalize: return equalize(img, C, HW);
  }
}

}  // namespace softlab::augment
