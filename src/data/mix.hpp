#pragma once
// Batch mixing as timm's Mixup in its default "batch" mode: one draw per batch decides whether
// the batch is mixed (mix_prob), whether by mixup (Zhang et al. 2018) or CutMix (Yun et al.
// 2019; switch_prob when both are on) and lambda ~ Beta(alpha, alpha); row i is then mixed
// with row B-1-i (the batch in reverse order). CutMix pastes one box, the same for every row,
// from the partner and corrects lambda to the exact share of the image it kept. Internal: the
// loader draws and applies on the normalised batch; tests call it on crafted batches.
#include <cstdint>
#include <vector>

#include "data/augment.hpp"
#include "softlab/data.hpp"
#include "softlab/random.hpp"

namespace softlab::augment {

// Beta(a, b) from two Gamma samples (Marsaglia & Tsang's method, with the U^(1/alpha) boost
// below 1, kept in logs so that small alphas do not underflow to 0/0); a, b > 0.
double sample_beta(Generator& g, double a, double b);

struct MixDraw {
  bool mixed = false;   // false: the batch stays as it is, with one-hot targets
  bool cutmix = false;
  double lambda = 1.0;  // share of each row's own image (and own class)
  Box box;              // CutMix: the pasted box
};
// Draws, in order: mixed or not (mix_prob), CutMix or mixup (switch_prob, only when both are
// on), lambda, and for CutMix the box centre (uniform over the image). The box has sides
// floor(side * sqrt(1 - lambda)), halved either way of the centre and clipped to the image;
// lambda becomes 1 - box area / image area. A lambda of exactly 1 leaves the batch unmixed.
MixDraw draw_mix(Generator& g, const Augment& a, int64_t H, int64_t W);

// Mixes the normalised images x [B, C, H, W] in place, writes targets [B, K] (zeroed first)
// and replaces each label by the class with the larger share (its own at lambda >= 1/2).
void apply_mix(const MixDraw& m, float* x, int64_t B, int64_t C, int64_t H, int64_t W,
               std::vector<int32_t>& labels, float* targets, int64_t K);

}  // namespace softlab::augment
