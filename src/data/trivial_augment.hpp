#pragma once
// TrivialAugment (Müller & Hutter 2021) on one uint8 CHW image: one op drawn uniformly from
// torchvision's TrivialAugmentWide list, a magnitude drawn uniformly from 31 bins, a random
// sign for the signed ops. The ranges are narrowed for 28x28 grey and 32x32 colour images
// (docs/training.md, "Augmentation and mixing"): the geometric ops take RandAugment's ranges
// (shear 0.3, translate 150/331 of the side, rotate 30 degrees), since the wide ones (shear
// 0.99, translate 32 px, rotate 135 degrees) push most of a 28-pixel digit out of the frame or
// turn a 6 into a 9; the photometric ops keep the wide ranges. Colour (saturation) is drawn
// only for 3-channel images. Internal: the loader draws and applies, tests call each op.
#include <cstdint>
#include <vector>

#include "softlab/random.hpp"

namespace softlab::augment {

enum class TaOp {
  Identity, ShearX, ShearY, TranslateX, TranslateY, Rotate, Brightness, Color, Contrast, Sharpness,
  Posterize, Solarize, AutoContrast, Equalize
};
const char* ta_op_name(TaOp op);

constexpr int kTaBins = 31;
constexpr double kTaMaxShear = 0.3;                     // shear factor (tan of the angle)
constexpr double kTaMaxTranslate = 150.0 / 331.0;       // fraction of the image side
constexpr double kTaMaxRotate = 30.0;                   // degrees
constexpr double kTaMaxEnhance = 0.99;                  // brightness, colour, contrast, sharpness: factor 1 +- this

// The ops drawn from, in torchvision's order: 14 for 3 channels, 13 (no Color) otherwise.
std::vector<TaOp> ta_ops(int64_t channels);
bool ta_has_magnitude(TaOp op);  // all but Identity, AutoContrast, Equalize
bool ta_signed(TaOp op);         // the geometric and enhance ops
// The unsigned magnitude of bin b in [0, 31): linear from 0 to the op's maximum (shear factor,
// pixels, degrees, enhance offset); Posterize: 8 - round(b / 5) bits (8..2); Solarize: the
// threshold 255 - 255 b / 30.
double ta_magnitude(TaOp op, int bin, int64_t H, int64_t W);

struct TaDraw {
  TaOp op = TaOp::Identity;
  double magnitude = 0.0;  // signed
};
// Draws, in order: the op, then its bin (ops with a magnitude), then its sign (signed ops).
TaDraw draw_trivial_augment(Generator& g, int64_t C, int64_t H, int64_t W);

// Applies `op` in place. Geometric ops map each output pixel back to the source by nearest
// neighbour, with pixel value 0 outside; shears are about the top-left corner and rotation
// about the centre, counter-clockwise for a positive angle, as torchvision's; translation uses
// the magnitude truncated to whole pixels, positive = right / down. Enhance ops blend with a
// degenerate image (black, grey, mean grey, 3x3-smoothed) by factor 1 + magnitude. Results are
// rounded to the nearest value and clamped to [0, 255]. `scratch` is reused between calls.
void apply_ta_op(uint8_t* img, int64_t C, int64_t H, int64_t W, TaOp op, double magnitude,
                 std::vector<uint8_t>& scratch);

}  // namespace softlab::augment
