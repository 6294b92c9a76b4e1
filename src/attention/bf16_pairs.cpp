// bf16 pair packing and the vdpbf16ps product kernel (bf16_pairs.hpp).
#include "attention/bf16_pairs.hpp"

#include <immintrin.h>

#include <cstring>


// Compiled for AVX512-BF16 whatever the build's -march; called only where the CPU has it.
#define SOFTLAB_BF16_KERNEL __attribute__((target("avx512f,avx512bw,avx512bf16")))

namespace softlab::attention_kernel::bf16 {

namespace {
inline double decode(uint32_t half) {
  const uint32_t u = half << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Lanes [0, n) of 16, n clipped to [0, 16].
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1u);
}
}  // namespace

bool cpu_has_dot_product() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

// The conversions use the hardware's rounding (vcvtne2ps2bf16: nearest even, NaN kept
// quiet), which is detail::bf16_bits' except that subnormal inputs become zero; the dot
// product instruction treats subnormal inputs as zero anyway.

// A row of floats, rounded, is already its own pairs: bf16 values in order, two per word.
// A strided destination (Kᵀ: one column per row of x) is written word by word from a
// converted vector, so the conversion itself always runs on whole vectors.
SOFTLAB_BF16_KERNEL void pack_pairs_in_rows(const float* x, int64_t ldx, int64_t rows, int64_t n, pair_t* out,
                                            int64_t s_row, int64_t s_pair) {
  const int64_t np = (n + 1) / 2;
  alignas(64) pair_t tmp[16];
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    pair_t* o = out + r * s_row;
    for (int64_t c = 0; c < n; c += 32) {
      const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(n - c), xr + c);
      const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(n - c - 16), xr + c + 16);
      const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // lo in the low 16 bf16 lanes
      const int64_t p0 = c / 2, count = np - p0 < 16 ? np - p0 : 16;
      if (s_pair == 1) {
        _mm512_mask_storeu_epi32(o + p0, first_lanes(count), v);
      } else {
        _mm512_store_si512(tmp, v);
        for (int64_t i = 0; i < count; ++i) o[(p0 + i) * s_pair] = tmp[i];
      }
    }
  }
}

// Two rows, rounded and interleaved lane by lane into words (low half from the first row).
SOFTLAB_BF16_KERNEL void pack_pairs_of_rows(const float* x, int64_t ldx, int64_t rows, int64_t n,
                                                      pair_t* out, int64_t s_pair, int64_t s_col) {
  // Word i of the result takes bf16 lane i (first row) and lane 16 + i (second row).
  alignas(64) static const int16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kInterleave);
  alignas(64) pair_t tmp[16];
  for (int64_t p = 0; p < (rows + 1) / 2; ++p) {
    const float* lo = x + 2 * p * ldx;
    const float* hi = 2 * p + 1 < rows ? lo + ldx : nullptr;
    pair_t* o = out + p * s_pair;
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 m = first_lanes(n - c);
      const __m512 l = _mm512_maskz_loadu_ps(m, lo + c);
      const __m512 h = hi ? _mm512_maskz_loadu_ps(m, hi + c) : _mm512_setzero_ps();
      const __m512i v = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(h, l));
      if (s_col == 1) {
        _mm512_mask_storeu_epi32(o + c, m, v);
      } else {
        _mm512_store_si512(tmp, v);
        for (int64_t i = 0; i < 16 && c + i < n; ++i) o[(c + i) * s_col] = tmp[i];
      }
    }
  }
}

// Eight rows of 16 f32 accumulators (8 of the 32 AVX-512 registers); every loaded pair
// vector of b feeds eight dot-product instructions. The accumulators are eight named
// variables: as an array GCC kept them on the stack and stored every one of them on each
// pass of the inner loop. Column tails use AVX-512 masks.
SOFTLAB_BF16_KERNEL void pair_products(const pair_t* a, int64_t lda, const pair_t* b,
                                                                 int64_t ldb, int64_t pairs, int64_t rows,
                                                                 int64_t cols, float* c, int64_t ldc, float alpha,
                                                                 bool accumulate) {
  constexpr int64_t R = 8, W = 16;
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t r0 = 0; r0 < rows; r0 += R) {
    const int64_t rr = rows - r0 < R ? rows - r0 : R;
    const pair_t *a0 = a + r0 * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda,
                 *a5 = a4 + lda, *a6 = a5 + lda, *a7 = a6 + lda;
    for (int64_t j0 = 0; j0 < cols; j0 += W) {
      const __mmask16 m = first_lanes(cols - j0);
      __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
      const pair_t* bp = b + j0;
      for (int64_t p = 0; p < pairs; ++p, bp += ldb) {
        const __m512bh bv = (__m512bh)_mm512_maskz_loadu_epi32(m, bp);
        auto bc = [](pair_t w) { return (__m512bh)_mm512_set1_epi32(static_cast<int>(w)); };
        c0 = _mm512_dpbf16_ps(c0, bc(a0[p]), bv);
        c1 = _mm512_dpbf16_ps(c1, bc(a1[p]), bv);
        c2 = _mm512_dpbf16_ps(c2, bc(a2[p]), bv);
        c3 = _mm512_dpbf16_ps(c3, bc(a3[p]), bv);
        c4 = _mm512_dpbf16_ps(c4, bc(a4[p]), bv);
        c5 = _mm512_dpbf16_ps(c5, bc(a5[p]), bv);
        c6 = _mm512_dpbf16_ps(c6, bc(a6[p]), bv);
        c7 = _mm512_dpbf16_ps(c7, bc(a7[p]), bv);
      }
      const __m512 acc[R] = {c0, c1, c2, c3, c4, c5, c6, c7};
      for (int64_t r = 0; r < rr; ++r) {
        float* cr = c + (r0 + r) * ldc + j0;
        __m512 out = _mm512_mul_ps(va, acc[r]);
        if (accumulate) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, cr));
        _mm512_mask_storeu_ps(cr, m, out);
      }
    }
  }
}

void pair_products_reference(const pair_t* a, int64_t lda, const pair_t* b, int64_t ldb, int64_t pairs,
                             int64_t rows, int64_t cols, float* c, int64_t ldc, float alpha, bool accumulate) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < pairs; ++p) {
        const pair_t x = a[r * lda + p], y = b[p * ldb + j];
        s += decode(x & 0xFFFFu) * decode(y & 0xFFFFu) + decode(x >> 16) * decode(y >> 16);
      }
      const double v = alpha * s;
      c[r * ldc + j] = static_cast<float>(accumulate ? c[r * ldc + j] + v : v);
    }
}

}  // namespace softlab::attention_kernel::bf16
