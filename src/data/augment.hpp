#pragma once
// Per-image augmentation ops of the batch loader (src/data/loader.cpp) that are not
// TrivialAugment's (trivial_augment.hpp) nor the batch mixing (mix.hpp): the random-resized
// crop and the shift on uint8 CHW images, and random erasing on a normalised float image.
// Every draw goes through the caller's Generator, in a fixed order, so the loader stays
// deterministic from (seed, epoch, batch). Internal: tests include it to check each op alone.
#include <array>
#include <cstdint>

#include "softlab/random.hpp"

namespace softlab::augment {

// A rectangle of an image, in pixels.
struct Box {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// Uniform in [0, 1) with 53 random bits: the crop and erasing draws go through log and exp,
// where Generator::uniform's 24 bits would make the boxes visibly coarse.
inline double uniform01(Generator& g) { return static_cast<double>(g.next_u64() >> 11) * 0x1.0p-53; }
inline double uniform_in(Generator& g, double lo, double hi) { return lo + (hi - lo) * uniform01(g); }

// Rounds to the nearest integer, halves up, and clamps to a pixel value: every op that
// computes in double ends here, so all of them round the same way.
inline uint8_t to_pixel(double v) {
  if (!(v > 0.0)) return 0;  // also NaN
  if (v >= 255.0) return 255;
  return static_cast<uint8_t>(static_cast<int>(v + 0.5));
}

// ---- random-resized crop (torchvision's RandomResizedCrop)
// Up to 10 tries: an area of uniform(scale) times the image's, a width / height ratio
// log-uniform in `ratio`, sides rounded; the first box that fits is placed uniformly. If none
// fits, the largest centred box whose ratio is within `ratio`.
Box draw_resized_crop_box(Generator& g, int64_t H, int64_t W, const std::array<double, 2>& scale,
                          const std::array<double, 2>& ratio);
// Resamples `box` of `src` to the full H x W image by bilinear interpolation with pixel
// centres aligned as torch's interpolate(align_corners=False) does (source coordinate
// (x + 0.5) * w / W - 0.5, clamped to the box), rounded back to uint8. A box that is the whole
// image reproduces it exactly.
void resized_crop(const uint8_t* src, uint8_t* dst, int64_t C, int64_t H, int64_t W, const Box& box);

// dst(y, x) = src(y + dy, x + dx), pixel value 0 where that falls outside: random_crop's and
// translate's shift when something has to run between it and the flip.
void shift(const uint8_t* src, uint8_t* dst, int64_t C, int64_t H, int64_t W, int64_t dy, int64_t dx);

// ---- random erasing (timm's RandomErasing, mode "pixel", one rectangle)
constexpr double kEraseMinArea = 0.02;       // fraction of the image
constexpr double kEraseMaxArea = 1.0 / 3.0;
constexpr double kEraseMinRatio = 0.3;       // height / width, log-uniform
constexpr double kEraseMaxRatio = 1.0 / 0.3;

struct EraseDraw {
  bool gated = false;   // the probability draw said "erase"
  bool placed = false;  // one of the 10 tries fitted (gated && !placed: nothing is erased)
  Box box;
};
// With `probability`: up to 10 tries of an area uniform in [0.02, 1/3] of the image and a
// height / width ratio log-uniform in [0.3, 1/0.3], sides rounded; the first box strictly
// smaller than the image on both sides is placed uniformly.
EraseDraw draw_erase_box(Generator& g, int64_t H, int64_t W, double probability);
// Overwrites `box` in every channel of a normalised image with standard normal values, one per
// pixel and channel: noise with the statistics the normalised data has.
void erase(float* img, int64_t C, int64_t H, int64_t W, const Box& box, Generator& g);

}  // namespace softlab::augment
