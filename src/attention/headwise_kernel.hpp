#pragma once
// The chunked kernel of the linear-complexity attention modules (linear.cpp, mala.cpp),
// forward and hand-written backward, one (b, h) at a time. Not part of the public API.
//
// Both modules read, for every query i and its visible keys J(i) (all N, or j <= i when
// causal), with phi = elu + 1 and A_ij = phi(q_i).phi(k_j) > 0:
//
//   a_i = sum_{j in J(i)} A_ij v_j  (Dv),   c_i = sum_{j in J(i)} A_ij,   Vs_i = sum_{j in J(i)} v_j
//
// and turn them into o_i with a per-row rule (RowRule: linear's a / (c + eps), MALA's
// combination). The two ways of computing a_i and c_i:
//
//   state form:      a_i = S^T phi(q_i),  c_i = phi(q_i).z,  S = sum_j phi(k_j) v_j^T (Dh x Dv),
//                    z = sum_j phi(k_j) (Dh)
//   quadratic form:  the C x C tile A of one chunk of C tokens, a_i = sum_j A_ij v_j
//
// Bidirectional: S and z are the sums over all N keys, built chunk by chunk, then every
// query reads them. Causal: tokens go in chunks of C = kChunk; a query reads the state of
// all earlier chunks (state form) plus the keys j <= i of its own chunk (quadratic form,
// masked), and the chunk is added to the state after its queries. The backward does the same
// with the roles swapped (reverse-prefix sums over queries for the key-side gradients). No
// N x N matrix exists anywhere: per thread the kernel holds chunk tiles (C x Dh, C x Dv,
// C x C), the Dh x Dv state, and in backward three doubles per row.
//
// ---- precision: double where the error analysis says so, float elsewhere ----------------
// u = 2^-24 (float unit roundoff). For random-sign values an output o_i is a weighted mean
// of v_j and much smaller than the terms it sums (at N = 1000, |o| ~ 0.04 from terms ~ 1),
// so float rounding of the terms shows up amplified in o.
//  1. Sums over tokens (the state S = sum_j phi(k_j) v_j^T, z, the prefix sums, backward's
//     R, r, p). A float running sum over n terms has error ~ u sqrt(sum of squared partial
//     sums) ~ u n rms / sqrt(6) against a result ~ sqrt(n) rms: relative u sqrt(n / 6), which
//     grows without bound (26 u at n = 4096, 52 u at 16k). So the state between chunks is
//     always DOUBLE; a float partial sum covers at most C = kChunk tokens, relative error
//     ~ u sqrt(C / 6) = 2.3 u whatever N is (the N / C chunk errors are independent).
//  2. The forward is DOUBLE throughout (phi, tiles, reads). Measured with the float version
//     of this kernel (float chunk sums and float reads over Dh, double between chunks),
//     against the float64 formula: linear 2-3e-7 and MALA 6e-7 - 1.2e-6 of the largest
//     output at N = 17 ... 4096 (MALA subtracts sn a_i and sn c_i Vs_i / n_i, two terms ~ 10x
//     its output). The contract the existing tests hold the forward to is 2e-7 of the largest
//     output (~3 u: tests/test_attention_linear.cpp, MatchesFloat64DirectFormula), and
//     with every sum in double the forward sits at 3-6e-8 (the final rounding to float).
//     Cost: the forward's inner loops are 8-lane double FMAs instead of 16-lane float ones.
//  3. The backward is float inside a chunk and double between chunks (note 1), per-row
//     scalars in double. Gradients are measured against the float64 chain rule at 0.3-1.5e-7
//     of the largest sum of |terms| for N = 1 ... 4096 (tests/test_attention_chunked.cpp), and
//     against the composed float32 reference at the existing 1e-5 / 1e-4; a gradient has no
//     cancelling mean the way an output does, and it feeds an optimiser step, not a 3-ulp
//     comparison. The backward is about 3/4 of a training step's attention work, so this is
//     where float pays.
//  4. MALA's per-row rule o = (sn + 1/den) a - (sn c / n) Vs runs in double on double a_i,
//     c_i, Vs_i, and a_i, c_i come from the same sequence of operations (c is the column that
//     v = 1 would give), so with v = all ones a_i = c_i exactly and MALA's rows sum to one to
//     double precision (MalaAttention.RowsSumToOneWithZeroEps, 1e-6).
//  5. phi(x) = e^x for x <= 0 is a double polynomial (~1e-12 relative): unrounded in the
//     forward, rounded once to float (0.5 ulp) in the backward. softlab's fast_exp (~2 ulp)
//     is not used: an error in phi(q_i) does not average out over tokens as the keys' do.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

#include "attention/kernels.hpp"
#include "ops/fast_math.hpp"
#include "softlab/tensor.hpp"

namespace softlab::detail {

// Tokens per chunk. Causal: the quadratic tile is C x C, and its cost per token, C (Dh + Dv)
// / 2 per product, matches the state form's Dh Dv at C ~ Dh; 32 sits between the two head
// sizes softlab trains (16 and 64). Both forms: the float partial sums cover at most C
// tokens (precision note 1).
constexpr int64_t kChunk = 32;

// ---- feature map ------------------------------------------------------------------------

// e^x for x <= 0 (ops/fast_math.hpp), rounded to float for the backward.
inline float exp_nonpositive(float x) { return static_cast<float>(detail::exp_nonpositive_d(static_cast<double>(x))); }

// phi(x) = elu(x) + 1 = max(x, 0) + e^min(x, 0): x + 1 for x > 0, e^x otherwise, with no
// cancellation for x << 0. Three flat loops: GCC does not if-convert a select around the
// exp and would leave a fused loop scalar (it was the largest cost of a ViT step).
inline void phi_rows(const float* x, float* out, int64_t n) {
  for (int64_t e = 0; e < n; ++e) out[e] = std::min(std::max(x[e], -110.0f), 0.0f);
  for (int64_t e = 0; e < n; ++e) out[e] = exp_nonpositive(out[e]);
  for (int64_t e = 0; e < n; ++e) out[e] += std::max(x[e], 0.0f);
}
// phi'(x) = 1 for x > 0 and e^x = phi(x) otherwise, i.e. min(phi(x), 1).
inline float phi_grad(float phi) { return std::min(phi, 1.0f); }

// The forward's phi, in double and not rounded: x + 1 is exact in double and e^x carries
// ~1e-12 relative error (precision note 5: the forward is double). xd is n doubles of scratch.
// Flat single-type loops, so that each vectorises (a float-to-double loop with a select
// stayed scalar and took half the forward's time at Dh = 16).
inline void phi_rows(const float* x, double* out, double* xd, int64_t n) {
  for (int64_t e = 0; e < n; ++e) xd[e] = x[e];
  for (int64_t e = 0; e < n; ++e) out[e] = std::min(std::max(xd[e], -110.0), 0.0);
  for (int64_t e = 0; e < n; ++e) out[e] = detail::exp_nonpositive_d(out[e]);
  for (int64_t e = 0; e < n; ++e) out[e] += std::max(xd[e], 0.0);
}

// ---- tile products (row-major, explicit loops) --------------------------------------------
// T is float (backward) or double (forward); all operands of one call have the same type.
//
// Every product below is the same operation on one output row:
//   out[:M] (= or +=) sum_{idx in [begin, end)} coef(idx) * row(idx)[:M]
// and combine_rows does it with the output row held in registers: 64-byte vectors (GCC
// vector extensions), up to four at a time, summing over idx in order. Written as plain
// loops (out[m] += x * w[m] for every idx), GCC loads and stores the output row for every
// idx and the tile products ran at the speed of those stores (perf: 30% of the backward on
// the stores alone at Dh = 64).
template <class T>
struct Vec64;  // one 64-byte vector of T
template <>
struct Vec64<float> {
  using type = float __attribute__((vector_size(64)));
};
template <>
struct Vec64<double> {
  using type = double __attribute__((vector_size(64)));
};

template <class T, class Coef, class Row>
inline void combine_rows(T* out, int64_t M, bool accumulate, int64_t begin, int64_t end, const Coef& coef,
                         const Row& row) {
  constexpr int64_t W = 64 / sizeof(T);  // lanes of one vector
  using V = typename Vec64<T>::type;
  int64_t m0 = 0;
  for (; m0 + 4 * W <= M; m0 += 4 * W) {  // four vectors
    V acc[4] = {};
    if (accumulate)
      for (int b = 0; b < 4; ++b) std::memcpy(&acc[b], out + m0 + b * W, sizeof(V));
    for (int64_t idx = begin; idx < end; ++idx) {
      const T c = coef(idx);
      const T* r = row(idx) + m0;
      for (int b = 0; b < 4; ++b) {
        V x;
        std::memcpy(&x, r + b * W, sizeof(V));
        acc[b] += c * x;
      }
    }
    for (int b = 0; b < 4; ++b) std::memcpy(out + m0 + b * W, &acc[b], sizeof(V));
  }
  for (; m0 + W <= M; m0 += W) {  // one vector
    V acc = {};
    if (accumulate) std::memcpy(&acc, out + m0, sizeof(V));
    for (int64_t idx = begin; idx < end; ++idx) {
      V x;
      std::memcpy(&x, row(idx) + m0, sizeof(V));
      acc += coef(idx) * x;
    }
    std::memcpy(out + m0, &acc, sizeof(V));
  }
  for (; m0 < M; ++m0) {  // the rest, one lane at a time
    T acc = accumulate ? out[m0] : T(0);
    for (int64_t idx = begin; idx < end; ++idx) acc += coef(idx) * row(idx)[m0];
    out[m0] = acc;
  }
}

// out[i, :M] (=, or += when accumulate) sum_k X[i, k] W[k, :M] for i < L; X is L x K, W is K x M.
template <class T>
void matmul_rows(const T* X, const T* W, T* out, int64_t L, int64_t K, int64_t M, bool accumulate) {
  for (int64_t i = 0; i < L; ++i)
    combine_rows(
        out + i * M, M, accumulate, 0, K, [&](int64_t k) { return X[i * K + k]; },
        [&](int64_t k) { return W + k * M; });
}

// Xt [K x L] = X [L x K] transposed.
template <class T>
void transpose(const T* X, T* Xt, int64_t L, int64_t K) {
  for (int64_t i = 0; i < L; ++i)
    for (int64_t k = 0; k < K; ++k) Xt[k * L + i] = X[i * K + k];
}

// Causal tile reads; A is L x L (row i = query, column j = key), only j <= i is read.
// out[i, :M] += sum_{j <= i} A[i, j] Y[j, :M]        (a query's own-chunk keys)
template <class T>
void lower_times(const T* A, const T* Y, T* out, int64_t L, int64_t M) {
  for (int64_t i = 0; i < L; ++i)
    combine_rows(
        out + i * M, M, true, 0, i + 1, [&](int64_t j) { return A[i * L + j]; },
        [&](int64_t j) { return Y + j * M; });
}
// out[j, :M] += sum_{i >= j} A[i, j] Y[i, :M]        (a key's own-chunk queries)
template <class T>
void lower_t_times(const T* A, const T* Y, T* out, int64_t L, int64_t M) {
  for (int64_t j = 0; j < L; ++j)
    combine_rows(
        out + j * M, M, true, j, L, [&](int64_t i) { return A[i * L + j]; },
        [&](int64_t i) { return Y + i * M; });
}

// S [K x M] += X^T Y, X is L x K, Y is L x M, summing over the rows i in order; xs [K] += the
// column sums of X in the same order (so a column of Y equal to 1 gives exactly xs), unless
// null.
template <class T>
void add_outer_rows(const T* X, const T* Y, int64_t L, int64_t K, int64_t M, T* S, T* xs) {
  for (int64_t k = 0; k < K; ++k) {
    combine_rows(
        S + k * M, M, true, 0, L, [&](int64_t i) { return X[i * K + k]; }, [&](int64_t i) { return Y + i * M; });
    if (xs)
      for (int64_t i = 0; i < L; ++i) xs[k] += X[i * K + k] * T(1);
  }
}

// Backward: adds one chunk to a double state, S [K x M] += X^T Y (X is L x K, Y is L x M),
// summed over the chunk's L rows in float (tile, K x M) and then added in double (precision
// note 1); xs [K] += the column sums of X the same way, unless null.
inline void add_chunk_to_state(const float* X, const float* Y, int64_t L, int64_t K, int64_t M, float* tile,
                               float* xsum, double* S, double* xs) {
  std::memset(tile, 0, sizeof(float) * static_cast<size_t>(K * M));
  std::memset(xsum, 0, sizeof(float) * static_cast<size_t>(K));
  add_outer_rows(X, Y, L, K, M, tile, xsum);
  for (int64_t e = 0; e < K * M; ++e) S[e] += tile[e];
  if (xs)
    for (int64_t k = 0; k < K; ++k) xs[k] += xsum[k];
}

// Float copies of the double state for the float reads: Sf = S, St = S^T (M x K) if not null.
// (Converting first and transposing the floats: a strided double-to-float loop stayed
// scalar and cost 8% of the backward at Dh = 16.)
inline void state_to_float(const double* S, int64_t K, int64_t M, float* Sf, float* St) {
  for (int64_t e = 0; e < K * M; ++e) Sf[e] = static_cast<float>(S[e]);
  if (St) transpose(Sf, St, K, M);
}

// ---- the per-row rules --------------------------------------------------------------------

// What distinguishes linear attention from MALA: how a row's a_i, c_i (and Vs_i) become o_i,
// and the per-row scalars of the backward. In double (precision note 4). n is n_i, the number
// of keys row i sees.
//
// The backward in these variables: with g_i = dO_i, every rule gives three scalars such that
//   da_i = ka_i g_i,   dc_i (scalar),   dVs_i = kv_i g_i,
// and then, with dA_ij = da_i.v_j + dc_i for visible pairs,
//   dphi(q_i) = sum_j dA_ij phi(k_j) = ka_i S_i g_i + dc_i z_i        (t_i = S_i g_i)
//   dphi(k_j) = sum_i dA_ij phi(q_i) = R_j v_j + r_j,  R_j = sum_i phi(q_i) da_i^T, r_j = sum_i dc_i phi(q_i)
//   dv_j      = sum_i A_ij da_i + sum_i dVs_i = R_j^T phi(k_j) + p_j,  p_j = sum_i dVs_i
// over the queries i that see key j. g_i.a_i, which the rules need, is phi(q_i).t_i.
struct RowRule {
  bool mala = false;
  double s = 0.0;    // MALA's scale; 0 means Dh^-1/2 (ChunkedOp resolves it per call)
  double eps = 0.0;  // linear: c + eps; MALA: z + eps

  // linear: o = a / (c + eps).
  // MALA (mala.cpp has the derivation): with sn = s/n and den = c + eps n / s,
  //   o = (sn + 1/den) a - (sn c / n) Vs.
  void forward(const double* a, double c, const double* vs, double n, int64_t Dv, float* o) const {
    if (!mala) {
      const double inv = 1.0 / (c + eps);
      for (int64_t e = 0; e < Dv; ++e) o[e] = static_cast<float>(a[e] * inv);
      return;
    }
    const double sn = s / n;
    const double alpha = sn + 1.0 / (c + eps * n / s);
    const double beta = sn * c / n;
    for (int64_t e = 0; e < Dv; ++e) o[e] = static_cast<float>(alpha * a[e] - beta * vs[e]);
  }

  // g_a = g_i.a_i, g_vs = g_i.Vs_i (MALA only). -(g.a)/den^2 is formed as two multiplications
  // by 1/den: den^2 alone can underflow when eps = 0 and phi(q_i) is tiny.
  void backward(double c, double g_a, double g_vs, double n, double* ka, double* dc, double* kv) const {
    if (!mala) {
      const double r_den = 1.0 / (c + eps);
      *ka = r_den;
      *dc = -(g_a * r_den) * r_den;
      *kv = 0.0;
      return;
    }
    const double sn = s / n;
    const double r_den = 1.0 / (c + eps * n / s);
    *ka = sn + r_den;
    *dc = -(g_a * r_den) * r_den - sn * g_vs / n;
    *kv = -sn * c / n;
  }
};

// ---- scratch ------------------------------------------------------------------------------

// Carves one thread's scratch into named arrays. Run once with base = null to count (the
// kernels' scratch sizes), then on the thread's area. Every array starts on a 64-byte
// boundary (16 floats), so doubles are aligned too and tiles start on a cache line.
struct Arena {
  float* base = nullptr;
  int64_t used = 0;  // floats
  float* floats(int64_t n) {
    float* p = base ? base + used : nullptr;
    used += (n + 15) / 16 * 16;
    return p;
  }
  double* doubles(int64_t n) { return reinterpret_cast<double*>(floats(2 * n)); }
};

// Every buffer one thread's forward or backward uses, for dims d and C = kChunk. S, z, vs are
// the state (backward's pass B reuses them as R, r, p); the float arrays are chunk tiles.
struct Buffers {
  double *S, *z, *vs;        // state, double: Dh x Dv, Dh, Dv
  double *zrun, *vrun;       // the causal per-row running z_i (Dh) and Vs_i or p_j (Dv)
  double *ka, *dc, *kv;      // backward's per-row scalars, N each
  float *Sf, *St, *zf, *vf;  // float copies of the state: Dh x Dv, Dv x Dh, Dh, Dv
  float *fq, *fk;            // phi of the chunk's queries and keys, C x Dh
  float *A, *B;              // C x C tiles: A = phi(Q) phi(K)^T, B = G V^T
  float *Xt;                 // C x max(Dh, Dv)-sized transposes
  float *a, *t;              // C x Dv (a_i, or dv rows) and C x Dh (t_i, or dphi(k) rows)
  float *c, *csum;           // C: c_i; K-sized float partial sums for add_chunk_to_state
  float* zrow;               // Dh: z_i in float for dq_i
  float *gs;                 // C x Dv: ka_i g_i
  float* tile;               // Dh x Dv: one chunk's float partial state
  double* xd;                // forward: C x Dh, phi's scratch
  double *fqd, *fkd, *vd;    // forward: phi(q), phi(k) (C x Dh) and v (C x Dv) of a chunk, in double
  double *Ad, *ad, *cd, *Xtd;  // forward: C x C tile, a_i (C x Dv), c_i (C), a C x max(Dh, Dv) transpose

  static Buffers carve(Arena& ar, const HeadDims& d, bool backward) {
    const int64_t C = kChunk, D = std::max(d.Dh, d.Dv);
    Buffers b{};
    b.S = ar.doubles(d.Dh * d.Dv);
    b.z = ar.doubles(d.Dh);
    b.vs = ar.doubles(d.Dv);
    b.zrun = ar.doubles(d.Dh);
    b.vrun = ar.doubles(d.Dv);
    if (backward) {
      b.ka = ar.doubles(d.N);
      b.dc = ar.doubles(d.N);
      b.kv = ar.doubles(d.N);
    }
    if (backward) {  // float tiles
      b.Sf = ar.floats(d.Dh * d.Dv);
      b.St = ar.floats(d.Dh * d.Dv);
      b.zf = ar.floats(d.Dh);
      b.vf = ar.floats(d.Dv);
      b.fq = ar.floats(C * d.Dh);
      b.fk = ar.floats(C * d.Dh);
      b.A = ar.floats(C * C);
      b.B = ar.floats(C * C);
      b.Xt = ar.floats(C * D);
      b.a = ar.floats(C * d.Dv);
      b.t = ar.floats(C * d.Dh);
      b.c = ar.floats(C);
      b.csum = ar.floats(D);
      b.zrow = ar.floats(d.Dh);
      b.gs = ar.floats(C * d.Dv);
      b.tile = ar.floats(d.Dh * d.Dv);
    } else {  // double tiles
      b.xd = ar.doubles(C * d.Dh);
      b.fqd = ar.doubles(C * d.Dh);
      b.fkd = ar.doubles(C * d.Dh);
      b.vd = ar.doubles(C * d.Dv);
      b.Ad = ar.doubles(C * C);
      b.ad = ar.doubles(C * d.Dv);
      b.cd = ar.doubles(C);
      b.Xtd = ar.doubles(C * D);
    }
    return b;
  }
  static int64_t floats_needed(const HeadDims& d, bool backward) {
    Arena count;
    carve(count, d, backward);
    return count.used;
  }
};

// ---- forward ----------------------------------------------------------------------------
// One (b, h): q, k [N, Dh], v [N, Dv] -> o [N, Dv], every product and sum in double
// (precision note 2): phi(q), phi(k) and v go into double chunk tiles first, so the inner
// loops are plain double FMAs over Dv (8 lanes).

inline void chunked_forward_head(const RowRule& rule, bool causal, const float* q, const float* k, const float* v,
                                 float* o, const HeadDims& d, const Buffers& b) {
  const int64_t N = d.N, Dh = d.Dh, Dv = d.Dv, C = kChunk;
  std::memset(b.S, 0, sizeof(double) * static_cast<size_t>(Dh * Dv));
  std::memset(b.z, 0, sizeof(double) * static_cast<size_t>(Dh));
  std::memset(b.vs, 0, sizeof(double) * static_cast<size_t>(Dv));
  // The chunk's v rows in double (vd) and phi(k) (fkd).
  auto load_keys = [&](int64_t c0, int64_t L) {
    phi_rows(k + c0 * Dh, b.fkd, b.xd, L * Dh);
    for (int64_t e = 0; e < L * Dv; ++e) b.vd[e] = v[c0 * Dv + e];
  };
  // Adds the loaded chunk to the state: S += phi(K)^T V, z += sum phi(k_j), vs += sum v_j.
  auto add_keys = [&](int64_t L) {
    add_outer_rows(b.fkd, b.vd, L, Dh, Dv, b.S, b.z);
    for (int64_t j = 0; j < L; ++j)
      for (int64_t e = 0; e < Dv; ++e) b.vs[e] += b.vd[j * Dv + e];
  };

  if (!causal) {
    // The state over all N keys; then every query reads it (n_i = N):
    // a = phi(Q) S, c = phi(Q) z (c exactly as a column of a would be: precision note 4).
    for (int64_t c0 = 0; c0 < N; c0 += C) {
      const int64_t L = std::min(C, N - c0);
      load_keys(c0, L);
      add_keys(L);
    }
    for (int64_t c0 = 0; c0 < N; c0 += C) {
      const int64_t L = std::min(C, N - c0);
      phi_rows(q + c0 * Dh, b.fqd, b.xd, L * Dh);
      matmul_rows(b.fqd, b.S, b.ad, L, Dh, Dv, false);
      matmul_rows(b.fqd, b.z, b.cd, L, Dh, 1, false);
      for (int64_t i = 0; i < L; ++i)
        rule.forward(b.ad + i * Dv, b.cd[i], b.vs, static_cast<double>(N), Dv, o + (c0 + i) * Dv);
    }
    return;
  }

  // Causal: per chunk, the earlier chunks' state (a = phi(Q) S, c = phi(Q) z) plus the chunk's
  // own keys j <= i (A = phi(Q) phi(K)^T, read below the diagonal: a += A V, c += row sums);
  // then the chunk joins the state. vrun = Vs_i, the prefix sum of v up to row i (MALA).
  for (int64_t c0 = 0; c0 < N; c0 += C) {
    const int64_t L = std::min(C, N - c0);
    phi_rows(q + c0 * Dh, b.fqd, b.xd, L * Dh);
    load_keys(c0, L);
    matmul_rows(b.fqd, b.S, b.ad, L, Dh, Dv, false);
    matmul_rows(b.fqd, b.z, b.cd, L, Dh, 1, false);
    transpose(b.fkd, b.Xtd, L, Dh);
    matmul_rows(b.fqd, b.Xtd, b.Ad, L, Dh, L, false);
    lower_times(b.Ad, b.vd, b.ad, L, Dv);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j <= i; ++j) b.cd[i] += b.Ad[i * L + j] * 1.0;  // as a column of a with v = 1
    std::memcpy(b.vrun, b.vs, sizeof(double) * static_cast<size_t>(Dv));
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t e = 0; e < Dv; ++e) b.vrun[e] += b.vd[i * Dv + e];
      rule.forward(b.ad + i * Dv, b.cd[i], b.vrun, static_cast<double>(c0 + i + 1), Dv, o + (c0 + i) * Dv);
    }
    add_keys(L);
  }
}

// ---- backward -----------------------------------------------------------------------------
// One (b, h), upstream g = dO [N, Dv] -> dq, dk [N, Dh], dv [N, Dv]. With the RowRule's
// scalars (ka_i, dc_i, kv_i):
//   pass A, queries in order with the state S, z, vs rebuilt as in the forward:
//     t_i = S_i g_i, c_i, g_i.a_i = phi(q_i).t_i, g_i.Vs_i -> ka_i, dc_i, kv_i (kept, 3 doubles
//     a row), dq_i = (ka_i t_i + dc_i z_i) o phi'(q_i);
//   pass B, keys in reverse chunk order with R, r, p over the queries that see them:
//     dphi(k_j) = R_j v_j + r_j, dk_j = dphi(k_j) o phi'(k_j), dv_j = R_j^T phi(k_j) + p_j.
// Causal chunks split each sum into the state of the other chunks (state form) and the
// chunk's own pairs (quadratic form with the tiles A_ij = phi(q_i).phi(k_j) and
// B_ij = g_i.v_j or (ka_i g_i).v_j, read for j <= i).

inline void chunked_backward_head(const RowRule& rule, bool causal, const float* q, const float* k,
                                  const float* v, const float* g, float* dq, float* dk, float* dv, const HeadDims& d,
                                  const Buffers& b) {
  const int64_t N = d.N, Dh = d.Dh, Dv = d.Dv, C = kChunk;

  // ---- pass A: queries in order; dq and the per-row scalars.
  std::memset(b.S, 0, sizeof(double) * static_cast<size_t>(Dh * Dv));
  std::memset(b.z, 0, sizeof(double) * static_cast<size_t>(Dh));
  std::memset(b.vs, 0, sizeof(double) * static_cast<size_t>(Dv));
  auto refresh_state = [&] {
    state_to_float(b.S, Dh, Dv, b.Sf, b.St);
    state_to_float(b.z, Dh, 1, b.zf, nullptr);
  };
  auto add_keys = [&](int64_t c0, int64_t L) {
    add_chunk_to_state(b.fk, v + c0 * Dv, L, Dh, Dv, b.tile, b.csum, b.S, b.z);
    for (int64_t j = c0; j < c0 + L; ++j)
      for (int64_t e = 0; e < Dv; ++e) b.vs[e] += v[j * Dv + e];
  };
  // Row i of the chunk at c0, once t_i (b.t), c_i (b.c) and z_i, Vs_i are known.
  auto finish_row = [&](int64_t c0, int64_t i, const double* zi, const double* vsi, double n) {
    const int64_t row = c0 + i;
    const float* gi = g + row * Dv;
    const float* fqi = b.fq + i * Dh;
    const float* ti = b.t + i * Dh;
    double g_a = 0.0, g_vs = 0.0;
    for (int64_t dd = 0; dd < Dh; ++dd) g_a += static_cast<double>(fqi[dd]) * ti[dd];
    if (rule.mala)
      for (int64_t e = 0; e < Dv; ++e) g_vs += static_cast<double>(gi[e]) * vsi[e];
    rule.backward(b.c[i], g_a, g_vs, n, &b.ka[row], &b.dc[row], &b.kv[row]);
    // dq_i = (ka_i t_i + dc_i z_i) o phi'(q_i), in float like the rest of the backward: z_i
    // to float first (b.zrow), then one flat loop GCC vectorises.
    const float ka = static_cast<float>(b.ka[row]), dc = static_cast<float>(b.dc[row]);
    float* zf_i = b.zrow;
    for (int64_t dd = 0; dd < Dh; ++dd) zf_i[dd] = static_cast<float>(zi[dd]);
    float* dqi = dq + row * Dh;
    for (int64_t dd = 0; dd < Dh; ++dd) dqi[dd] = (ka * ti[dd] + dc * zf_i[dd]) * phi_grad(fqi[dd]);
  };

  if (!causal) {
    for (int64_t c0 = 0; c0 < N; c0 += C) {
      const int64_t L = std::min(C, N - c0);
      phi_rows(k + c0 * Dh, b.fk, L * Dh);
      add_keys(c0, L);
    }
    refresh_state();
    for (int64_t c0 = 0; c0 < N; c0 += C) {
      const int64_t L = std::min(C, N - c0);
      phi_rows(q + c0 * Dh, b.fq, L * Dh);
      matmul_rows(b.fq, b.zf, b.c, L, Dh, 1, false);      // c_i
      matmul_rows(g + c0 * Dv, b.St, b.t, L, Dv, Dh, false);  // t_i = S g_i
      for (int64_t i = 0; i < L; ++i) finish_row(c0, i, b.z, b.vs, static_cast<double>(N));
    }
  } else {
    refresh_state();
    for (int64_t c0 = 0; c0 < N; c0 += C) {
      const int64_t L = std::min(C, N - c0);
      const float* vc = v + c0 * Dv;
      const float* gc = g + c0 * Dv;
      phi_rows(q + c0 * Dh, b.fq, L * Dh);
      phi_rows(k + c0 * Dh, b.fk, L * Dh);
      // c_i: the state's part and the chunk's own keys, exactly as in the forward.
      matmul_rows(b.fq, b.zf, b.c, L, Dh, 1, false);
      transpose(b.fk, b.Xt, L, Dh);
      matmul_rows(b.fq, b.Xt, b.A, L, Dh, L, false);
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j <= i; ++j) b.c[i] += b.A[i * L + j] * 1.0f;
      // t_i = S g_i + sum_{j <= i} (g_i.v_j) phi(k_j): B = G V^T, then the lower product.
      matmul_rows(gc, b.St, b.t, L, Dv, Dh, false);
      transpose(vc, b.Xt, L, Dv);
      matmul_rows(gc, b.Xt, b.B, L, Dv, L, false);
      lower_times(b.B, b.fk, b.t, L, Dh);
      // z_i and Vs_i, the running prefix sums, in double.
      std::memcpy(b.zrun, b.z, sizeof(double) * static_cast<size_t>(Dh));
      std::memcpy(b.vrun, b.vs, sizeof(double) * static_cast<size_t>(Dv));
      for (int64_t i = 0; i < L; ++i) {
        for (int64_t dd = 0; dd < Dh; ++dd) b.zrun[dd] += b.fk[i * Dh + dd];
        for (int64_t e = 0; e < Dv; ++e) b.vrun[e] += vc[i * Dv + e];
        finish_row(c0, i, b.zrun, b.vrun, static_cast<double>(c0 + i + 1));
      }
      add_keys(c0, L);
      refresh_state();
    }
  }

  // ---- pass B: keys in reverse chunk order; R = sum phi(q_i) (ka_i g_i)^T, r = sum dc_i
  // phi(q_i), p = sum kv_i g_i over the queries that see the key (all of them, or the later
  // chunks' plus the own chunk's i >= j). S, z, vs hold R, r, p; Sf/St their float copies.
  double* R = b.S;
  double* r = b.z;
  double* p = b.vs;
  std::memset(R, 0, sizeof(double) * static_cast<size_t>(Dh * Dv));
  std::memset(r, 0, sizeof(double) * static_cast<size_t>(Dh));
  std::memset(p, 0, sizeof(double) * static_cast<size_t>(Dv));
  // gs = ka_i g_i for the chunk's rows (float), the da_i of the rule.
  auto scaled_grads = [&](int64_t c0, int64_t L) {
    for (int64_t i = 0; i < L; ++i) {
      const float ka = static_cast<float>(b.ka[c0 + i]);
      for (int64_t e = 0; e < Dv; ++e) b.gs[i * Dv + e] = ka * g[(c0 + i) * Dv + e];
    }
  };
  // Adds the chunk's queries to R, r, p.
  auto add_queries = [&](int64_t c0, int64_t L) {
    add_chunk_to_state(b.fq, b.gs, L, Dh, Dv, b.tile, b.csum, R, nullptr);
    for (int64_t i = c0; i < c0 + L; ++i) {
      for (int64_t dd = 0; dd < Dh; ++dd) r[dd] += b.dc[i] * static_cast<double>(b.fq[(i - c0) * Dh + dd]);
      if (rule.mala)
        for (int64_t e = 0; e < Dv; ++e) p[e] += b.kv[i] * static_cast<double>(g[i * Dv + e]);
    }
  };
  // The state's part of the chunk's key gradients: dv = phi(K) Rf + p (b.a), dphi(k) =
  // V R^T + r (b.t); the float copies of r and p go in zf and vf.
  auto read_key_state = [&](int64_t c0, int64_t L) {
    state_to_float(R, Dh, Dv, b.Sf, b.St);
    state_to_float(r, Dh, 1, b.zf, nullptr);
    state_to_float(p, Dv, 1, b.vf, nullptr);
    matmul_rows(b.fk, b.Sf, b.a, L, Dh, Dv, false);
    matmul_rows(v + c0 * Dv, b.St, b.t, L, Dv, Dh, false);
    for (int64_t j = 0; j < L; ++j) {
      for (int64_t e = 0; e < Dv; ++e) b.a[j * Dv + e] += b.vf[e];
      for (int64_t dd = 0; dd < Dh; ++dd) b.t[j * Dh + dd] += b.zf[dd];
    }
  };
  // dk_j = dphi(k_j) o phi'(k_j), dv_j from the rows of b.t and b.a.
  auto write_key_grads = [&](int64_t c0, int64_t L) {
    for (int64_t j = 0; j < L; ++j) {
      for (int64_t dd = 0; dd < Dh; ++dd)
        dk[(c0 + j) * Dh + dd] = b.t[j * Dh + dd] * phi_grad(b.fk[j * Dh + dd]);
      std::memcpy(dv + (c0 + j) * Dv, b.a + j * Dv, sizeof(float) * static_cast<size_t>(Dv));
    }
  };

  if (!causal) {
    // With a single chunk (N <= C: the Fashion-MNIST ViT's 17 tokens) b.fq and b.fk
    // still hold phi(Q) and phi(K) from pass A.
    const bool one_chunk = N <= C;
    for (int64_t c0 = 0; c0 < N; c0 += C) {
      const int64_t L = std::min(C, N - c0);
      if (!one_chunk) phi_rows(q + c0 * Dh, b.fq, L * Dh);
      scaled_grads(c0, L);
      add_queries(c0, L);
    }
    for (int64_t c0 = 0; c0 < N; c0 += C) {
      const int64_t L = std::min(C, N - c0);
      if (!one_chunk) phi_rows(k + c0 * Dh, b.fk, L * Dh);
      read_key_state(c0, L);
      write_key_grads(c0, L);
    }
    return;
  }

  const int64_t last = (N - 1) / C * C;
  for (int64_t c0 = last; c0 >= 0; c0 -= C) {
    const int64_t L = std::min(C, N - c0);
    const float* vc = v + c0 * Dv;
    const float* gc = g + c0 * Dv;
    phi_rows(q + c0 * Dh, b.fq, L * Dh);
    phi_rows(k + c0 * Dh, b.fk, L * Dh);
    scaled_grads(c0, L);
    read_key_state(c0, L);  // the later chunks' queries
    // The chunk's own queries i >= j:
    //   A = phi(Q) phi(K)^T;  dv_j += sum_{i >= j} A_ij ka_i g_i
    //   dA_ij = (ka_i g_i).v_j + dc_i;  dphi(k_j) += sum_{i >= j} dA_ij phi(q_i)
    transpose(b.fk, b.Xt, L, Dh);
    matmul_rows(b.fq, b.Xt, b.A, L, Dh, L, false);
    lower_t_times(b.A, b.gs, b.a, L, Dv);
    transpose(vc, b.Xt, L, Dv);
    matmul_rows(b.gs, b.Xt, b.B, L, Dv, L, false);
    for (int64_t i = 0; i < L; ++i) {
      const float dci = static_cast<float>(b.dc[c0 + i]);
      for (int64_t j = 0; j <= i; ++j) b.B[i * L + j] += dci;
    }
    lower_t_times(b.B, b.fq, b.t, L, Dh);
    // MALA: dv_j += sum_{i >= j, own chunk} kv_i g_i, a reverse running sum in double.
    if (rule.mala) {
      std::memset(b.vrun, 0, sizeof(double) * static_cast<size_t>(Dv));
      for (int64_t j = L - 1; j >= 0; --j) {
        for (int64_t e = 0; e < Dv; ++e) {
          b.vrun[e] += b.kv[c0 + j] * static_cast<double>(gc[j * Dv + e]);
          b.a[j * Dv + e] += static_cast<float>(b.vrun[e]);
        }
      }
    }
    write_key_grads(c0, L);
    add_queries(c0, L);
  }
}

// ---- the op -------------------------------------------------------------------------------

// Calls f(bh, scratch) for every (b, h) in [0, B*H), in parallel: one thread slot per
// contiguous range of heads (a fixed partition for a given thread count, so results do not
// depend on scheduling), each slot owning `floats` floats of scratch that its heads reuse
// (the kernels reset what they read). The scratch is one tensor, so tensor_memory() (the
// inference-memory tests) sees it.
template <class F>
void for_each_head(int64_t heads, int64_t floats, const F& f) {
  if (heads <= 0) return;
  const int64_t slots = slots_for(heads);
  Tensor scratch = empty({slots, floats});
  float* base = scratch.mutable_data();
  for_each_slot(heads, slots, [&](int64_t t, int64_t bh0, int64_t bh1) {
    Arena ar{base + t * floats, 0};
    for (int64_t bh = bh0; bh < bh1; ++bh) f(bh, ar);
  });
}

// The FusedAttention op of the chunked kernel (kernels.hpp): the module's RowRule and its
// causal flag. Backward recomputes the state and the tiles from q, k, v, so the output is not
// kept.
struct ChunkedOp {
  RowRule rule;
  bool causal = false;
  static constexpr bool kSavesOutput = false;

  static HeadDims dims(const Tensor& q, const Tensor& v) {
    return {q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3], v.shape()[3]};
  }
  RowRule resolved(const HeadDims& d) const {
    RowRule r = rule;
    if (r.s <= 0.0) r.s = 1.0 / std::sqrt(static_cast<double>(d.Dh));
    return r;
  }
  void forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o) const {
    const HeadDims d = dims(q, v);
    const RowRule rr = resolved(d);
    const float *pq = q.data(), *pk = k.data(), *pv = v.data();
    float* po = o.mutable_data();
    const int64_t qs = d.N * d.Dh, vs = d.N * d.Dv;
    for_each_head(d.heads(), Buffers::floats_needed(d, false), [&](int64_t bh, Arena ar) {
      const Buffers b = Buffers::carve(ar, d, false);
      chunked_forward_head(rr, causal, pq + bh * qs, pk + bh * qs, pv + bh * vs, po + bh * vs, d, b);
    });
  }
  void backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor&, const Tensor& g, Tensor& dq,
                Tensor& dk, Tensor& dv) const {
    const HeadDims d = dims(q, v);
    const RowRule rr = resolved(d);
    const float *pq = q.data(), *pk = k.data(), *pv = v.data(), *pg = g.data();
    float *pdq = dq.mutable_data(), *pdk = dk.mutable_data(), *pdv = dv.mutable_data();
    const int64_t qs = d.N * d.Dh, vs = d.N * d.Dv;
    for_each_head(d.heads(), Buffers::floats_needed(d, true), [&](int64_t bh, Arena ar) {
      const Buffers b = Buffers::carve(ar, d, true);
      chunked_backward_head(rr, causal, pq + bh * qs, pk + bh * qs, pv + bh * vs, pg + bh * vs, pdq + bh * qs,
                            pdk + bh * qs, pdv + bh * vs, d, b);
    });
  }
};

// The module of a chunked-kernel rule.
inline std::unique_ptr<Attention> chunked_attention(const char* name, const RowRule& rule, bool causal) {
  return std::make_unique<FusedAttention<ChunkedOp>>(name, ChunkedOp{rule, causal});
}

}  // namespace softlab::detail
