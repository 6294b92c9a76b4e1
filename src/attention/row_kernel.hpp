#pragma once
// The fused kernel behind every attention map that turns one row of logits into one row
// of weights (softmax, sigmoid, softplus, ReLU, power), DESIGN.md's "tiled over
// (batch x head, query block)":
//
//   forward, per (b·h, block of 32 queries):      X = s Q_blk Kᵀ,  P = map(X) row by row,
//                                                  O_blk = P V
//   backward, per b·h, 8 queries at a time:       recompute x_i and p_i from q_i and K,
//                                                  dp_i = V dO_i,  d_i = dO_i·o_i,
//                                                  dx_i = map'(x_i, p_i, dp_i, d_i),
//                                                  dq_i = s Kᵀ dx_i,  dK += s dx_i q_iᵀ,
//                                                  dV += p_i dO_iᵀ
//
// Nothing of size N x N is ever stored: a thread holds 8 rows each of logits and weights
// (and in backward of dp and dx) plus Kᵀ and Vᵀ of its head, so memory is O(N·Dh) per
// thread. Backward keeps only q, k, v and the output o (for d_i) and recomputes the
// logits: one extra Q·Kᵀ pass instead of B·H·N² saved floats.
// Causal rows see keys 0..i only: the map gets n = i + 1 and the loops stop there, so a
// masked pair contributes exactly zero and costs nothing.
// In bf16 (softlab/precision.hpp) the five products take bf16 operands with f32
// accumulation: q, k, v, dO and the weight rows p and dx are rounded into the pair layout
// of bf16_pairs.hpp (per head for k and v, per block for the rest) and multiplied there;
// the maps, their row statistics and d_i stay f32.
// Heads are addressed through a HeadLayout, so the same kernel runs on the per-head
// tensors of the Attention interface and, through PackedQkvAttention (end of this file),
// straight on the block's qkv projection output without split and merge copies.
//
// A map is a small struct with
//   void forward(const float* x, float* p, int64_t n) const;
//   void backward(const float* x, const float* p, const float* dp, float d, float* dx,
//                 int64_t n) const;
// where x holds the n logits s·q_i·k_j that row i sees, p the weights, dp_j = dO_i·v_j and
// d = dO_i·o_i. Maps are template arguments so their loops inline into the kernel and
// vectorise; RowOp<Map> makes one a FusedAttention op (kernels.hpp).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "attention/bf16_pairs.hpp"
#include "attention/kernels.hpp"
#include "softlab/attention.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/precision.hpp"
#include "softlab/tensor.hpp"

namespace softlab::attention_kernel {

// Queries are processed kRows at a time: the products below keep kRows x kCols
// accumulators in registers (8 x 16 floats = 8 AVX-512 or 16 AVX2 registers), so each
// loaded key or value vector feeds kRows FMAs instead of one.
constexpr int64_t kRows = 8;
constexpr int64_t kCols = 16;
constexpr int64_t kBlocksPerItem = 4;  // forward work item: 4 x kRows = 32 queries of one head

// Where the N rows of head bh = b·H + h live: from (bh / H)·batch + (bh % H)·head, `row`
// floats apart. The per-head tensors [B, H, N, D] of the Attention interface are
// {H, H·N·D, N·D, D}; the qkv projection's output [B, N, 3, H, D] read in place is
// {H, N·3HD, D, 3HD} (from q, k or v's first channel), and the merged output
// [B, N, H, D] is {H, N·HD, D, HD}. The kernels only ever step from one row to the next,
// so a strided head costs nothing over a contiguous one, and the split / merge copies
// around the kernel disappear.
struct HeadLayout {
  int64_t H = 1, batch = 0, head = 0, row = 0;
  int64_t offset(int64_t bh) const { return (bh / H) * batch + (bh % H) * head; }
};
inline HeadLayout per_head_layout(int64_t H, int64_t N, int64_t D) { return {H, H * N * D, N * D, D}; }
// [B, N, parts, H, D]: token-major, `parts` blocks of H heads per token.
inline HeadLayout token_major_layout(int64_t H, int64_t N, int64_t D, int64_t parts) {
  return {H, N * parts * H * D, D, parts * H * D};
}

struct Dims {
  int64_t BH = 0, N = 0, D = 0;
  float scale = 1.0f;
  bool causal = false;
  HeadLayout in;   // q, k, v and their gradients dq, dk, dv
  HeadLayout out;  // o and its gradient dO
};

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// kt[d * ld + j] = k[j * ldk + d] for j < N, 0 for N <= j < ld: Kᵀ of one head (rows ldk
// floats apart), its rows padded to a multiple of kCols so that the logit kernel needs no
// column tail.
inline void transpose_head(const float* k, int64_t ldk, float* kt, int64_t N, int64_t D, int64_t ld) {
  for (int64_t d = 0; d < D; ++d) {
    float* row = kt + d * ld;
    for (int64_t j = 0; j < N; ++j) row[j] = k[j * ldk + d];
    std::fill(row + N, row + ld, 0.0f);
  }
}

// One kCols-wide register of floats. GCC/Clang vector extensions make the SIMD shape of
// the three products below explicit: left to itself, GCC vectorised them across rows with
// permutes and the forward ran 5-6x slower (docs/attention.md). (Without AVX-512 the compiler splits a
// vector into two AVX2 halves.)
using vf = float __attribute__((vector_size(kCols * sizeof(float))));
inline vf loadu(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storeu(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// One head row of D floats, copied or zeroed a vector at a time. These run for every row
// of every head (q, dO in, o, dq out; dk, dv zeroed), and with strided heads a row is only
// D = 16..64 floats: std::copy / std::fill became a libc call per row, which cost more than
// the copy itself (perf: memmove at 3% of a Fashion-MNIST step).
inline void copy_row(const float* src, float* dst, int64_t D) {
  int64_t d = 0;
  for (; d + kCols <= D; d += kCols) storeu(dst + d, loadu(src + d));
  for (; d < D; ++d) dst[d] = src[d];
}
inline void zero_row(float* dst, int64_t D) {
  int64_t d = 0;
  for (; d + kCols <= D; d += kCols) storeu(dst + d, vf{});
  for (; d < D; ++d) dst[d] = 0.0f;
}

// Copies rows [i0, i0 + rows) of a head (rows <= kRows, ldx floats apart) into a dense
// kRows x D block, zero-padded, so that every kernel below works on full blocks.
inline void load_rows(const float* x, int64_t ldx, int64_t i0, int64_t rows, int64_t D, float* blk) {
  for (int64_t r = 0; r < rows; ++r) copy_row(x + (i0 + r) * ldx, blk + r * D, D);
  for (int64_t r = rows; r < kRows; ++r) zero_row(blk + r * D, D);
}

// The reverse: rows [0, rows) of a dense block to rows [i0, i0 + rows) of a head.
inline void store_rows(const float* blk, int64_t rows, int64_t D, float* x, int64_t ldx, int64_t i0) {
  for (int64_t r = 0; r < rows; ++r) copy_row(blk + r * D, x + (i0 + r) * ldx, D);
}

// Row reductions for the maps, with kCols independent lanes: GCC does not vectorise a
// float sum or max reduction without -ffast-math (it would reorder the additions), so a
// map loop that also accumulates stays scalar unless the lanes are explicit. The lane
// order is fixed, so results are still deterministic.
inline float row_sum(const float* x, int64_t n) {
  vf acc = {};
  int64_t j = 0;
  for (; j + kCols <= n; j += kCols) acc += loadu(x + j);
  float s = 0.0f;
  for (; j < n; ++j) s += x[j];
  for (int64_t l = 0; l < kCols; ++l) s += acc[l];
  return s;
}
inline float row_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  vf acc = m - vf{};
  int64_t j = 0;
  for (; j + kCols <= n; j += kCols) {
    const vf v = loadu(x + j);
    acc = v > acc ? v : acc;
  }
  for (; j < n; ++j) m = std::max(m, x[j]);
  for (int64_t l = 0; l < kCols; ++l) m = std::max(m, acc[l]);
  return m;
}

// c[r * ldc + j] = alpha · Σ_d a[r * D + d] · bt[d * ldb + j]  for r < kRows, j < ncols
// (ncols a multiple of kCols): logits s Q Kᵀ and dP = dO Vᵀ. kRows accumulators; every
// loaded Kᵀ vector feeds kRows FMAs.
inline void rows_times_bt(const float* a, int64_t D, const float* bt, int64_t ldb, float* c, int64_t ldc,
                          int64_t ncols, float alpha) {
  for (int64_t j = 0; j < ncols; j += kCols) {
    vf acc[kRows] = {};
    for (int64_t d = 0; d < D; ++d) {
      const vf b = loadu(bt + d * ldb + j);
      for (int64_t r = 0; r < kRows; ++r) acc[r] += a[r * D + d] * b;
    }
    for (int64_t r = 0; r < kRows; ++r) storeu(c + r * ldc + j, alpha * acc[r]);
  }
}

// c[r * D + d] = alpha · Σ_{j<n} p[r * ldp + j] · m[j * ldm + d]: O = P V and dQ = s dX K.
inline void rows_times_m(const float* p, int64_t ldp, const float* m, int64_t ldm, int64_t n, int64_t D, float* c,
                         float alpha) {
  int64_t d0 = 0;
  for (; d0 + kCols <= D; d0 += kCols) {
    vf acc[kRows] = {};
    for (int64_t j = 0; j < n; ++j) {
      const vf mj = loadu(m + j * ldm + d0);
      for (int64_t r = 0; r < kRows; ++r) acc[r] += p[r * ldp + j] * mj;
    }
    for (int64_t r = 0; r < kRows; ++r) storeu(c + r * D + d0, alpha * acc[r]);
  }
  for (int64_t r = 0; r < kRows; ++r)  // head sizes that are not a multiple of kCols
    for (int64_t d = d0; d < D; ++d) {
      float acc = 0.0f;
      for (int64_t j = 0; j < n; ++j) acc += p[r * ldp + j] * m[j * ldm + d];
      c[r * D + d] = alpha * acc;
    }
}

// m[j * ldm + d] += alpha · Σ_r w[r * ldw + j] · a[r * D + d]  for j < n: dK += s dXᵀ Q
// and dV += Pᵀ dO, a kRows-rank update of the head's gradient rows.
inline void add_wt_times_rows(const float* w, int64_t ldw, const float* a, int64_t D, float* m, int64_t ldm,
                              int64_t n, float alpha) {
  for (int64_t j = 0; j < n; ++j) {
    float wj[kRows];
    for (int64_t r = 0; r < kRows; ++r) wj[r] = alpha * w[r * ldw + j];
    float* mj = m + j * ldm;
    int64_t d0 = 0;
    for (; d0 + kCols <= D; d0 += kCols) {
      vf acc = loadu(mj + d0);
      for (int64_t r = 0; r < kRows; ++r) acc += wj[r] * loadu(a + r * D + d0);
      storeu(mj + d0, acc);
    }
    for (int64_t d = d0; d < D; ++d)
      for (int64_t r = 0; r < kRows; ++r) mj[d] += wj[r] * a[r * D + d];
  }
}

// Keys query i sees: i + 1 when causal, else all N.
inline int64_t visible(const Dims& dm, int64_t i) { return dm.causal ? i + 1 : dm.N; }

// Row r of a block (query i = i0 + r) sees n_i keys; the map fills p[0, n_i) and the
// block's products run to the block's widest row, so the rest of the row is zeroed.
template <class Map>
void map_block(const Map& map, const float* x, float* p, int64_t ld, int64_t i0, int64_t rows, int64_t width,
               const Dims& dm) {
  for (int64_t r = 0; r < kRows; ++r) {
    float* pr = p + r * ld;
    const int64_t n = r < rows ? visible(dm, i0 + r) : 0;
    if (n > 0) map.forward(x + r * ld, pr, n);
    std::fill(pr + n, pr + width, 0.0f);
  }
}

// Whether this call's products run in bf16; a bf16 request on a CPU without the
// instruction the kernel uses is an error, never an emulation.
inline bool bf16_products() {
  if (matmul_precision() != Precision::bf16) return false;
  SOFTLAB_CHECK(bf16::cpu_has_dot_product(), "attention: train.precision = \"bf16\" needs AVX512-BF16");
  return true;
}

template <class Map>
void forward(const float* q, const float* k, const float* v, float* o, const Dims& dm, const Map& map) {
  const int64_t N = dm.N, D = dm.D, ld = round_up(N, kCols);
  const bool half = bf16_products();
  const int64_t Dp = (D + 1) / 2, Np = (N + 1) / 2;  // pairs along a head row, pairs of keys
  const int64_t rows_per_item = kRows * kBlocksPerItem;
  const int64_t per_head = (N + rows_per_item - 1) / rows_per_item;
  const int64_t items = dm.BH * per_head;
  const int64_t slots = detail::slots_for(items);
  // Per slot: Kᵀ of the current head (D x ld), a block of q rows and of outputs
  // (kRows x D each), and kRows rows of logits and of weights (kRows x ld each).
  const int64_t per_slot = D * ld + 2 * kRows * D + 2 * kRows * ld;
  Tensor scratch = empty({slots, per_slot});
  float* scr = scratch.mutable_data();
  // bf16 per slot: Kᵀ as pairs along d (Dp x ld), V as pairs of keys (Np x D), the q block
  // as pairs along d (kRows x Dp), the weights as pairs of keys (kRows x ld/2).
  const int64_t pairs_per_slot = half ? Dp * ld + Np * D + kRows * Dp + kRows * ld / 2 : 0;
  std::vector<bf16::pair_t> pair_scratch(static_cast<size_t>(slots * pairs_per_slot));
  detail::for_each_slot(items, slots, [&](int64_t t, int64_t it0, int64_t it1) {
    bf16::pair_t* kt2 = pair_scratch.data() + t * pairs_per_slot;
    bf16::pair_t* v2 = kt2 + Dp * ld;
    bf16::pair_t* q2 = v2 + Np * D;
    bf16::pair_t* p2 = q2 + kRows * Dp;
    float* kt = scr + t * per_slot;
    float* qb = kt + D * ld;
    float* ob = qb + kRows * D;
    float* x = ob + kRows * D;
    float* p = x + kRows * ld;
    int64_t cached_bh = -1;
    for (int64_t it = it0; it < it1; ++it) {
      const int64_t bh = it / per_head;
      const int64_t first = (it % per_head) * rows_per_item, last = std::min(N, first + rows_per_item);
      const int64_t in_off = dm.in.offset(bh), ldi = dm.in.row, ldo = dm.out.row;
      const float* qh = q + in_off;
      const float* vh = v + in_off;
      float* oh = o + dm.out.offset(bh);
      if (bh != cached_bh) {
        if (half) {
          for (int64_t d = 0; d < Dp; ++d) std::fill(kt2 + d * ld + N, kt2 + (d + 1) * ld, 0u);  // keys N..ld
          bf16::pack_pairs_in_rows(k + in_off, ldi, N, D, kt2, 1, ld);
          bf16::pack_pairs_of_rows(vh, ldi, N, D, v2, D, 1);
        } else {
          transpose_head(k + in_off, ldi, kt, N, D, ld);
        }
        cached_bh = bh;
      }
      for (int64_t i0 = first; i0 < last; i0 += kRows) {
        const int64_t rows = std::min(kRows, last - i0);
        const int64_t width = dm.causal ? std::min(N, i0 + rows) : N;  // keys the block's rows see
        const int64_t cols = round_up(width, kCols);
        load_rows(qh, ldi, i0, rows, D, qb);
        if (half) {
          bf16::pack_pairs_in_rows(qb, D, kRows, D, q2, Dp, 1);
          bf16::pair_products(q2, Dp, kt2, ld, Dp, kRows, cols, x, ld, dm.scale, false);
        } else {
          rows_times_bt(qb, D, kt, ld, x, ld, cols, dm.scale);
        }
        map_block(map, x, p, ld, i0, rows, width, dm);
        if (half) {
          bf16::pack_pairs_in_rows(p, ld, kRows, width, p2, ld / 2, 1);
          bf16::pair_products(p2, ld / 2, v2, D, (width + 1) / 2, kRows, D, ob, D, 1.0f, false);
        } else {
          rows_times_m(p, ld, vh, ldi, width, D, ob, 1.0f);
        }
        store_rows(ob, rows, D, oh, ldo, i0);
      }
    }
  });
}

template <class Map>
void backward(const float* q, const float* k, const float* v, const float* o, const float* dout, float* dq,
              float* dk, float* dv, const Dims& dm, const Map& map) {
  const int64_t N = dm.N, D = dm.D, ld = round_up(N, kCols);
  const bool half = bf16_products();
  const int64_t Dp = (D + 1) / 2, Np = (N + 1) / 2, Rp = kRows / 2;
  // Heads are independent; within a head dK and dV accumulate over queries, so one head
  // belongs to one thread and its query blocks run in order (deterministic sums).
  const int64_t slots = detail::slots_for(dm.BH);
  // Kᵀ, Vᵀ (D x ld each); q, dO, dQ blocks (kRows x D); x, p, dp, dx rows (kRows x ld).
  const int64_t per_slot = 2 * D * ld + 3 * kRows * D + 4 * kRows * ld;
  Tensor scratch = empty({slots, per_slot});
  float* scr = scratch.mutable_data();
  // bf16 per slot: Kᵀ and Vᵀ as pairs along d (Dp x ld each); K as pairs of keys (Np x D);
  // the q and dO blocks as pairs along d (kRows x Dp each) and as pairs of rows (Rp x D
  // each); dx as pairs of keys (kRows x ld/2); dxᵀ and pᵀ as pairs of rows (ld x Rp each).
  const int64_t pairs_per_slot = half ? 2 * Dp * ld + Np * D + 2 * kRows * Dp + 2 * Rp * D + kRows * ld / 2 + 2 * ld * Rp : 0;
  std::vector<bf16::pair_t> pair_scratch(static_cast<size_t>(slots * pairs_per_slot));
  detail::for_each_slot(dm.BH, slots, [&](int64_t t, int64_t bh0, int64_t bh1) {
    bf16::pair_t* kt2 = pair_scratch.data() + t * pairs_per_slot;
    bf16::pair_t* vt2 = kt2 + Dp * ld;
    bf16::pair_t* k2 = vt2 + Dp * ld;
    bf16::pair_t* q2 = k2 + Np * D;
    bf16::pair_t* g2 = q2 + kRows * Dp;
    bf16::pair_t* q2r = g2 + kRows * Dp;
    bf16::pair_t* g2r = q2r + Rp * D;
    bf16::pair_t* dx2 = g2r + Rp * D;
    bf16::pair_t* dxt2 = dx2 + kRows * ld / 2;
    bf16::pair_t* pt2 = dxt2 + ld * Rp;
    float* kt = scr + t * per_slot;
    float* vt = kt + D * ld;
    float* qb = vt + D * ld;
    float* gb = qb + kRows * D;
    float* dqb = gb + kRows * D;
    float* x = dqb + kRows * D;
    float* p = x + kRows * ld;
    float* dp = p + kRows * ld;
    float* dx = dp + kRows * ld;
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const int64_t in_off = dm.in.offset(bh), out_off = dm.out.offset(bh), ldi = dm.in.row, ldo = dm.out.row;
      const float *qh = q + in_off, *kh = k + in_off, *vh = v + in_off, *oh = o + out_off, *gh = dout + out_off;
      float *dqh = dq + in_off, *dkh = dk + in_off, *dvh = dv + in_off;
      if (half) {
        for (int64_t d = 0; d < 2 * Dp; ++d) std::fill(kt2 + d * ld + N, kt2 + (d + 1) * ld, 0u);  // keys N..ld
        bf16::pack_pairs_in_rows(kh, ldi, N, D, kt2, 1, ld);
        bf16::pack_pairs_in_rows(vh, ldi, N, D, vt2, 1, ld);
        bf16::pack_pairs_of_rows(kh, ldi, N, D, k2, D, 1);
      } else {
        transpose_head(kh, ldi, kt, N, D, ld);
        transpose_head(vh, ldi, vt, N, D, ld);
      }
      for (int64_t j = 0; j < N; ++j) {
        zero_row(dkh + j * ldi, D);
        zero_row(dvh + j * ldi, D);
      }
      for (int64_t i0 = 0; i0 < N; i0 += kRows) {
        const int64_t rows = std::min(kRows, N - i0);
        const int64_t width = dm.causal ? std::min(N, i0 + rows) : N;
        const int64_t cols = round_up(width, kCols);
        load_rows(qh, ldi, i0, rows, D, qb);
        load_rows(gh, ldo, i0, rows, D, gb);
        if (half) {
          bf16::pack_pairs_in_rows(qb, D, kRows, D, q2, Dp, 1);
          bf16::pack_pairs_in_rows(gb, D, kRows, D, g2, Dp, 1);
          bf16::pair_products(q2, Dp, kt2, ld, Dp, kRows, cols, x, ld, dm.scale, false);
        } else {
          rows_times_bt(qb, D, kt, ld, x, ld, cols, dm.scale);  // x = s q Kᵀ, recomputed
        }
        map_block(map, x, p, ld, i0, rows, width, dm);
        if (half)
          bf16::pair_products(g2, Dp, vt2, ld, Dp, kRows, cols, dp, ld, 1.0f, false);
        else
          rows_times_bt(gb, D, vt, ld, dp, ld, cols, 1.0f);  // dp = dO Vᵀ
        for (int64_t r = 0; r < kRows; ++r) {
          float* dxr = dx + r * ld;
          const int64_t n = r < rows ? visible(dm, i0 + r) : 0;
          if (n > 0) {
            float d = 0.0f;  // d_i = dO_i·o_i
            for (int64_t c = 0; c < D; ++c) d += gb[r * D + c] * oh[(i0 + r) * ldo + c];
            map.backward(x + r * ld, p + r * ld, dp + r * ld, d, dxr, n);
          }
          std::fill(dxr + n, dxr + width, 0.0f);
        }
        if (half) {
          bf16::pack_pairs_in_rows(dx, ld, kRows, width, dx2, ld / 2, 1);
          bf16::pack_pairs_of_rows(dx, ld, kRows, width, dxt2, 1, Rp);
          bf16::pack_pairs_of_rows(p, ld, kRows, width, pt2, 1, Rp);
          bf16::pack_pairs_of_rows(qb, D, kRows, D, q2r, D, 1);
          bf16::pack_pairs_of_rows(gb, D, kRows, D, g2r, D, 1);
          bf16::pair_products(dx2, ld / 2, k2, D, (width + 1) / 2, kRows, D, dqb, D, dm.scale, false);
          bf16::pair_products(dxt2, Rp, q2r, D, Rp, width, D, dkh, ldi, dm.scale, true);
          bf16::pair_products(pt2, Rp, g2r, D, Rp, width, D, dvh, ldi, 1.0f, true);
        } else {
          rows_times_m(dx, ld, kh, ldi, width, D, dqb, dm.scale);       // dq = s dx K
          add_wt_times_rows(dx, ld, qb, D, dkh, ldi, width, dm.scale);  // dK += s dxᵀ q
          add_wt_times_rows(p, ld, gb, D, dvh, ldi, width, 1.0f);       // dV += pᵀ dO
        }
        store_rows(dqb, rows, D, dqh, ldi, i0);
      }
    }
  });
}

// The FusedAttention op of a row map (kernels.hpp): scale 0 means Dh^-1/2.
template <class Map>
struct RowOp {
  float scale = 0.0f;
  bool causal = false;
  Map map;
  static constexpr bool kSavesOutput = true;  // d_i = dO_i·o_i

  Dims dims(const Tensor& q, const Tensor& v) const {
    SOFTLAB_CHECK(v.shape() == q.shape(), "attention: v must have the shape of q and k, got q ", q.shape(), ", v ",
                  v.shape());
    const int64_t H = q.shape()[1], N = q.shape()[2], D = q.shape()[3];
    const HeadLayout per_head = per_head_layout(H, N, D);
    return {q.shape()[0] * H, N, D, scale_for(scale, q), causal, per_head, per_head};
  }
  void forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o) const {
    attention_kernel::forward(q.data(), k.data(), v.data(), o.mutable_data(), dims(q, v), map);
  }
  void backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& g, Tensor& dq,
                Tensor& dk, Tensor& dv) const {
    attention_kernel::backward(q.data(), k.data(), v.data(), o.data(), g.data(), dq.mutable_data(),
                               dk.mutable_data(), dv.mutable_data(), dims(q, v), map);
  }
};

// ---- q, k, v read in place from the qkv projection ----------------------------------------
//
// The block's qkv projection writes [B, N, 3, H, Dh] (token-major). Splitting that into the
// per-head q, k, v [B, H, N, Dh] of the Attention interface is a permute copy, and merging
// the per-head output back to [B, N, H·Dh] for the output projection is another; backward
// runs both copies again, and the split's three slices each build a zero-filled gradient
// of the whole qkv tensor that the tape then sums. With the heads as strided views
// (HeadLayout) all of that goes: forward reads q, k, v where the projection wrote them and
// writes o token-major, backward writes dq, dk, dv straight into one [B, N, 3·H·Dh]
// gradient. The kernel does the same arithmetic in the same order as on per-head tensors,
// so values and gradients are bit-identical to the split path.

// What the block asks of an attention module that can read the packed projection.
class PackedQkvAttention {
 public:
  virtual ~PackedQkvAttention() = default;
  // qkv: [B, N, 3·heads·Dh], q | k | v per token, heads inside each -> o: [B, N, heads·Dh].
  virtual Tensor forward_packed(const Tensor& qkv, int64_t heads) = 0;
};

template <class Map>
struct PackedRowNode final : Node {
  Saved qkv, o;  // the projection's output itself (no copy) and the attention output
  Dims dm;
  Map map;
  const char* op_name = "";
  const char* name() const override { return op_name; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& X = qkv.get();
    const Tensor& O = o.get();
    SOFTLAB_ASSERT(g.shape() == O.shape(), op_name, " backward: gradient ", g.shape(), " for output ", O.shape());
    // Every element is written: each head's kernel writes its dq, dk and dv rows.
    Tensor dx = empty(X.shape());
    if (X.numel() == 0) return {dx};
    const int64_t D = dm.in.H * dm.D;  // channels of q (and of k, v) per token
    const float* x = X.data();
    float* d = dx.mutable_data();
    attention_kernel::backward(x, x + D, x + 2 * D, O.data(), g.data(), d, d + D, d + 2 * D, dm, map);
    return {dx};
  }
};

// o = attention(q, k, v) with q, k, v the three thirds of each token's qkv row; scale 0
// means Dh^-1/2 (as RowOp).
template <class Map>
Tensor packed_row_attention(const char* name, const Tensor& qkv, int64_t heads, float scale, bool causal,
                            const Map& map) {
  SOFTLAB_CHECK(qkv.defined() && qkv.rank() == 3, name, ": packed qkv must be [B, N, 3·H·Dh], got ",
                qkv.defined() ? qkv.shape() : Shape{});
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], C = qkv.shape()[2];
  SOFTLAB_CHECK(heads > 0 && C % (3 * heads) == 0, name, ": packed qkv of shape ", qkv.shape(),
                " does not split into 3 x ", heads, " heads");
  const int64_t Dh = C / (3 * heads), D = heads * Dh;
  const float s = scale > 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(Dh));  // scale_for's rule
  const Dims dm{B * heads, N, Dh, s, causal, token_major_layout(heads, N, Dh, 3), token_major_layout(heads, N, Dh, 1)};
  Tensor o = empty({B, N, D});
  if (o.numel() > 0) {
    const float* x = qkv.data();
    attention_kernel::forward(x, x + D, x + 2 * D, o.mutable_data(), dm, map);
  }
  if (needs_grad({&qkv})) {
    auto node = std::make_shared<PackedRowNode<Map>>();
    node->qkv = Saved(qkv);
    node->o = Saved(o);
    node->dm = dm;
    node->map = map;
    node->op_name = name;
    attach(o, node, {&qkv});
  }
  return o;
}

// The module of a row map: the Attention interface on per-head tensors (FusedAttention's
// behaviour) plus the packed entry point.
template <class Map>
class RowMapAttention final : public Attention, public PackedQkvAttention {
 public:
  RowMapAttention(const char* name, const RowOp<Map>& op) : name_(name), op_(op) {}
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) override {
    return detail::fused_attention(name_, q, k, v, op_);
  }
  Tensor forward_packed(const Tensor& qkv, int64_t heads) override {
    return packed_row_attention(name_, qkv, heads, op_.scale, op_.causal, op_.map);
  }

 private:
  const char* name_;
  RowOp<Map> op_;
};

template <class Map>
std::unique_ptr<Attention> row_map_attention(const char* name, float scale, bool causal, const Map& map) {
  return std::make_unique<RowMapAttention<Map>>(name, RowOp<Map>{scale, causal, map});
}

}  // namespace softlab::attention_kernel
