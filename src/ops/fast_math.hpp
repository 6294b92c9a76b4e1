#pragma once
// Branch-free exp and tanh that GCC vectorises (glibc's expm1f/tanhf are scalar calls and
// took a quarter of a ViT training step). exp: Cody-Waite range reduction x = n ln2 + r,
// |r| <= ln2/2, a degree-6 Taylor polynomial for e^r (truncation error < 1.3e-7 relative),
// and 2^n built in the exponent bits (the scheme of Dukhan & Ablavatski, "The Two-Pass Softmax Algorithm", arXiv:2001.04438).
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

namespace softlab::detail {

// Sixteen floats: one AVX-512 register (two AVX2 halves without AVX-512). For row
// reductions with one partial sum per lane: GCC keeps the source order of float additions,
// so a plain `s += x[j]` loop stays scalar (one dependent add per ~4 cycles). Lane-wise
// partial sums, then the lanes added in a fixed order, then the scalar tail: the order
// depends only on the row length, so results are the same from run to run and for any
// thread count.
constexpr int64_t kLanes = 16;
using lanes16 = float __attribute__((vector_size(kLanes * sizeof(float))));
inline lanes16 load_lanes(const float* p) {
  lanes16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline float sum_lanes(lanes16 v) {
  float s = 0.0f;
  for (int64_t l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

inline float fast_exp(float x) {
  // Clamped so that 2^n stays a normal float: below -87.33 the result is ~1.2e-38 instead of
  // a subnormal or 0, above 88.37 it saturates at ~2.5e38 instead of +inf. Both limits are
  // far outside what the callers feed in (and saturating keeps 2 / (e + 1) exact at 0).
  // No branches, so loops over it vectorise.
  x = std::min(std::max(x, -87.33f), 88.37f);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  return p * scale;
}

// e^x for x <= 0 in double, for linear attention's feature map (attention/headwise_kernel.hpp):
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Taylor to r^11 (truncation ~1e-13
// relative, far below float's 6e-8), 2^n from the exponent bits (t's low bits hold n after
// the rounding trick). Branch-free, so the loop in phi_rows vectorises; callers clamp x to [-110, 0] (e^-110 already rounds to 0 in
// float, and 2^-159 is still a normal double).
inline double exp_nonpositive_d(double x) {
  constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const double t = x * 1.4426950408889634 + kRound;
  const double n = t - kRound;
  const double r = (x - n * 0.6931471805598903) - n * 5.497923018708371e-14;
  double p = 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t n_bits;
  std::memcpy(&n_bits, &t, sizeof t);  // low 51 bits: n in two's complement
  const int64_t scale_bits = (n_bits + 1023) << 52;
  double scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}
// tanh(u) = 1 - 2 / (e^{2u} + 1): exact limits +-1, absolute error ~1e-7 near 0.
inline float fast_tanh(float u) { return 1.0f - 2.0f / (fast_exp(2.0f * u) + 1.0f); }

// log(1 + e) for e in [0, 1], as 2 atanh(t) with t = e / (2 + e) <= 1/3 and the odd series
// of atanh to t^15 (truncation < 5e-10 relative). 1 + e is never formed, so a tiny e keeps
// its full relative precision, as log1p does; unlike glibc's log1pf it vectorises. Used
// for softplus(z) = max(z, 0) + log1p(e^-|z|).
inline float fast_log1p_unit(float e) {
  const float t = e / (2.0f + e), t2 = t * t;
  float p = 1.0f / 15.0f;
  p = p * t2 + 1.0f / 13.0f;
  p = p * t2 + 1.0f / 11.0f;
  p = p * t2 + 1.0f / 9.0f;
  p = p * t2 + 1.0f / 7.0f;
  p = p * t2 + 1.0f / 5.0f;
  p = p * t2 + 1.0f / 3.0f;
  p = p * t2 + 1.0f;
  return 2.0f * t * p;
}

}  // namespace softlab::detail
