#pragma once
// bf16 products for the fused attention kernels (train.precision = "bf16").
//
// AVX512-BF16's dot-product instruction (vdpbf16ps) multiplies bf16 values in pairs: each
// 32-bit lane of its two operands holds two bf16 numbers, and the lane's f32 accumulator
// gains a0·b0 + a1·b1. So an operand of a bf16 product is stored as *pairs* along the
// reduction index: two consecutive terms of the sum in one 32-bit word, the first in the
// low half. The row kernel (row_kernel.hpp) packs q, k, v, dO, the weights p and dx into
// that layout, rounding each value once per block or head, and calls pair_products for
// each of its five products; everything between the products (the maps, d_i = dO_i·o_i)
// stays f32.
//
// The products accumulate in f32 and the result is f32, as oneDNN's bf16 matmul does for
// the linear layers. The instruction rounds each lane's update to nearest even and treats
// subnormal inputs and outputs as zero (Intel SDM, VDPBF16PS), which the tests allow for.
#include <cstdint>

namespace softlab::attention_kernel::bf16 {

using pair_t = uint32_t;  // two bf16 values, the first in the low 16 bits

// True when this CPU has AVX512-BF16 (read once). train.precision = "bf16" is refused at
// validation where oneDNN cannot run bf16 (softlab/precision.hpp); this is the kernels'
// own check on the instruction they use.
bool cpu_has_dot_product();

// Pairs along a row: out[r·s_row + p·s_pair] = (x[r·ldx + 2p], x[r·ldx + 2p + 1]) for
// r < rows, p < ceil(n/2); an odd n's missing partner is 0.
void pack_pairs_in_rows(const float* x, int64_t ldx, int64_t rows, int64_t n, pair_t* out, int64_t s_row,
                        int64_t s_pair);

// Pairs across two rows: out[p·s_pair + c·s_col] = (x[2p·ldx + c], x[(2p+1)·ldx + c]) for
// p < ceil(rows/2), c < n; an odd row count's missing partner is 0.
void pack_pairs_of_rows(const float* x, int64_t ldx, int64_t rows, int64_t n, pair_t* out, int64_t s_pair,
                        int64_t s_col);

// c[r·ldc + j] = alpha · Σ_{p<pairs} a[r·lda + p] · b[p·ldb + j]   for r < rows, j < cols,
// or c += that when accumulate. Each term is the two-product pair sum. Rows run in blocks
// of 8: a must hold round_up(rows, 8) rows (the padding rows are read, never stored).
void pair_products(const pair_t* a, int64_t lda, const pair_t* b, int64_t ldb, int64_t pairs, int64_t rows,
                   int64_t cols, float* c, int64_t ldc, float alpha, bool accumulate);

// The same sum with each pair decoded and accumulated in double: the tests' reference.
void pair_products_reference(const pair_t* a, int64_t lda, const pair_t* b, int64_t ldb, int64_t pairs,
                             int64_t rows, int64_t cols, float* c, int64_t ldc, float alpha, bool accumulate);

}  // namespace softlab::attention_kernel::bf16
