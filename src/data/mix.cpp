// Mixup and CutMix on a prepared batch (src/data/mix.hpp), and the Beta sampler they draw
// lambda from. Definitions: timm's Mixup ("batch" mode, correct_lam), written as loops.
#include "data/mix.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

namespace softlab::augment {

namespace {

// Uniform in (0, 1): logs of it must be finite.
double uniform_open(Generator& g) { return (static_cast<double>(g.next_u64() >> 11) + 0.5) * 0x1.0p-53; }

// A standard normal in double (Box-Muller, one value per pair of draws): the rejection test
// below compares it to the fourth decimal, where a float's 24 bits are coarse.
double normal_double(Generator& g) {
  const double u1 = uniform_open(g), u2 = uniform01(g);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

// log of a Gamma(shape, 1) sample.
double log_gamma_sample(Generator& g, double shape) {
  if (shape < 1.0) {
    // Gamma(a) = Gamma(a + 1) * U^(1/a); in logs, U^(1/a) for a = 0.1 is 1e-10 typically
    // and can underflow a double, which would make both Betas' parts 0.
    const double u = uniform_open(g);
    return log_gamma_sample(g, shape + 1.0) + std::log(u) / shape;
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = 0.0, v = 0.0;
    do {
      x = normal_double(g);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = uniform_open(g);
    // The cheap squeeze accepts most samples; the exact test decides the rest.
    if (u < 1.0 - 0.0331 * x * x * x * x || std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v)))
      return std::log(d * v);
  }
}

}  // namespace

double sample_beta(Generator& g, double a, double b) {
  const double lx = log_gamma_sample(g, a), ly = log_gamma_sample(g, b);
  return 1.0 / (1.0 + std::exp(ly - lx));  // x / (x + y)
}

MixDraw draw_mix(Generator& g, const Augment& a, int64_t H, int64_t W) {
  MixDraw m;
  if (!a.mixes() || !(uniform01(g) < a.mix_prob)) return m;
  m.cutmix = a.mixup > 0.0 && a.cutmix > 0.0 ? uniform01(g) < a.switch_prob : a.cutmix > 0.0;
  const double alpha = m.cutmix ? a.cutmix : a.mixup;
  m.lambda = sample_beta(g, alpha, alpha);
  if (m.cutmix) {
    const double side = std::sqrt(1.0 - m.lambda);
    const int64_t cut_h = static_cast<int64_t>(static_cast<double>(H) * side);
    const int64_t cut_w = static_cast<int64_t>(static_cast<double>(W) * side);
    const int64_t cy = static_cast<int64_t>(g.below(static_cast<uint64_t>(H)));
    const int64_t cx = static_cast<int64_t>(g.below(static_cast<uint64_t>(W)));
    const int64_t y0 = std::clamp<int64_t>(cy - cut_h / 2, 0, H), y1 = std::clamp<int64_t>(cy + cut_h / 2, 0, H);
    const int64_t x0 = std::clamp<int64_t>(cx - cut_w / 2, 0, W), x1 = std::clamp<int64_t>(cx + cut_w / 2, 0, W);
    m.box = Box{.top = y0, .left = x0, .height = y1 - y0, .width = x1 - x0};
    // The box was clipped and rounded: the targets must say what the image really holds.
    m.lambda = 1.0 - static_cast<double>(m.box.height * m.box.width) / static_cast<double>(H * W);
  }
  m.mixed = m.lambda < 1.0;
  return m;
}

void apply_mix(const MixDraw& m, float* x, int64_t B, int64_t C, int64_t H, int64_t W,
               std::vector<int32_t>& labels, float* targets, int64_t K) {
  std::fill(targets, targets + B * K, 0.0f);
  if (!m.mixed) {
    for (int64_t i = 0; i < B; ++i) targets[i * K + labels[i]] = 1.0f;
    return;
  }
  const float lam = static_cast<float>(m.lambda), rest = 1.0f - lam;
  const std::vector<int32_t> own = labels;
  for (int64_t i = 0; i < B; ++i) {
    const int32_t partner = own[B - 1 - i];
    targets[i * K + own[i]] += lam;
    targets[i * K + partner] += rest;
    labels[i] = m.lambda >= 0.5 ? own[i] : partner;
  }
  // Rows i and B-1-i take from each other, so each pair is mixed together in one pass; the
  // middle row of an odd batch is its own partner and stays as it is.
  const int64_t n = C * H * W;
  for (int64_t i = 0; i < B - 1 - i; ++i) {
    float* a = x + i * n;
    float* b = x + (B - 1 - i) * n;
    if (m.cutmix) {
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = m.box.top; y < m.box.top + m.box.height; ++y)
          for (int64_t xx = m.box.left; xx < m.box.left + m.box.width; ++xx) {
            const int64_t k = (c * H + y) * W + xx;
            std::swap(a[k], b[k]);
          }
    } else {
      for (int64_t k = 0; k < n; ++k) {
        const float va = a[k], vb = b[k];
        a[k] = lam * va + rest * vb;
        b[k] = lam * vb + rest * va;
      }
    }
  }
}

}  // namespace softlab::augment
