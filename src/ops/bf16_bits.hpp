#pragma once
// The one float -> bfloat16 rounding, shared by the GEMM's operand conversion
// (src/ops/precision.cpp) and the attention kernels' bf16 products.
#include <cstdint>
#include <cstring>

namespace softlab::detail {

// x rounded to bfloat16, as the upper half of a float's bits (the lower half zero): round
// to nearest, ties to even, on the bit pattern (add 0x7FFF plus the lowest kept bit, then
// drop the low half). A NaN would round into infinity, so it becomes a quiet NaN of the
// same sign instead. Branch-free 32-bit arithmetic, so callers' loops vectorise.
inline uint32_t bf16_high_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  const uint32_t q = (u | 0x00400000u) & 0xFFFF0000u;
  return is_nan ? q : r;
}

// The 16 bfloat16 bits of x.
inline uint16_t bf16_bits(float x) { return static_cast<uint16_t>(bf16_high_bits(x) >> 16); }

}  // namespace softlab::detail
