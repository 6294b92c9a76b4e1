#pragma once
// The fused kernel behind every attention map that turns one row of logits into one row
// of weights (softmax, sigmoid, softplus, ReLU, power), DESIGN.md's "tiled over
// (batch x head, query block)":
//
//   forward, per (b·h, block of kRows queries):   X = s Q_blk Kᵀ,  P = map(X) row by row,
//                                                  O_blk = P V
//   backward, per b·h, query by query:            recompute x_i and p_i from q_i and K,
//                                                  dp_i = V dO_i,  d_i = dO_i·o_i,
//                                                  dx_i = map'(x_i, p_i, dp_i, d_i),
//                                                  dq_i = s Kᵀ dx_i,  dK += s dx_i q_iᵀ,
//                                                  dV += p_i dO_iᵀ
//
// Nothing of size N x N is ever stored: a thread holds kRows rows of logits and weights
// (forward) or one row each of x, p, dp, dx (backward) plus Kᵀ and Vᵀ of its head, so
// memory is O(N·Dh) per thread. Backward keeps only q, k, v and the output o (for d_i)
// and recomputes the logits: one extra Q·Kᵀ pass instead of B·H·N² saved floats.
// Causal rows see keys 0..i only: the map gets n = i + 1 and the loops stop there, so a
// masked pair contributes exactly zero and costs nothing.
//
// A map is a small struct with
//   void forward(const float* x, float* p, int64_t n, int64_t i, int64_t N) const;
//   void backward(const float* x, const float* p, const float* dp, float d, float* dx,
//                 int64_t n, int64_t i, int64_t N) const;
// where x holds the n visible logits s·q_i·k_j of row i (N keys in all), p the weights,
// dp_j = dO_i·v_j and d = dO_i·o_i. Maps are template arguments so their loops inline
// into the kernel and vectorise.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/tensor.hpp"

namespace softlab::attention_kernel {

constexpr int64_t kRows = 32;  // queries per forward block: kRows x N logits stay in L1/L2

struct Dims {
  int64_t BH = 0, N = 0, D = 0;
  float scale = 1.0f;
  bool causal = false;
};

// kt[d * N + j] = k[j * D + d]: Kᵀ of one head, so a logit row is D axpys over contiguous keys.
inline void transpose_head(const float* k, float* kt, int64_t N, int64_t D) {
  for (int64_t j = 0; j < N; ++j)
    for (int64_t d = 0; d < D; ++d) kt[d * N + j] = k[j * D + d];
}

// x[0..n) = s · q·kt[:, 0..n)
inline void logit_row(const float* q, const float* kt, float* x, int64_t n, int64_t N, int64_t D, float s) {
  std::fill(x, x + n, 0.0f);
  for (int64_t d = 0; d < D; ++d) {
    const float qd = s * q[d];
    const float* ktd = kt + d * N;
    for (int64_t j = 0; j < n; ++j) x[j] += qd * ktd[j];
  }
}

// Runs fn(t, item_begin, item_end) on one contiguous range of items per thread slot t, so
// each slot can own a scratch area. The partition is fixed for a given thread count.
template <class F>
void for_each_slot(int64_t items, int64_t slots, const F& fn) {
  parallel_for(0, slots, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) fn(t, items * t / slots, items * (t + 1) / slots);
  });
}

inline int64_t slots_for(int64_t items) { return std::max<int64_t>(1, std::min<int64_t>(items, num_threads())); }

template <class Map>
void forward(const float* q, const float* k, const float* v, float* o, const Dims& dm, const Map& map) {
  const int64_t N = dm.N, D = dm.D;
  const int64_t blocks = (N + kRows - 1) / kRows;
  const int64_t items = dm.BH * blocks;
  const int64_t slots = slots_for(items);
  // Per slot: Kᵀ of the current head (D x N) and kRows rows of logits and of weights.
  const int64_t per_slot = D * N + 2 * kRows * N;
  Tensor scratch = empty({slots, per_slot});
  float* scr = scratch.mutable_data();
  for_each_slot(items, slots, [&](int64_t t, int64_t it0, int64_t it1) {
    float* kt = scr + t * per_slot;
    float* xs = kt + D * N;
    float* ps = xs + kRows * N;
    int64_t cached_bh = -1;
    for (int64_t it = it0; it < it1; ++it) {
      const int64_t bh = it / blocks, i0 = (it % blocks) * kRows, i1 = std::min(N, i0 + kRows);
      const float* qh = q + bh * N * D;
      const float* vh = v + bh * N * D;
      float* oh = o + bh * N * D;
      if (bh != cached_bh) {
        transpose_head(k + bh * N * D, kt, N, D);
        cached_bh = bh;
      }
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = dm.causal ? i + 1 : N;
        float* x = xs + (i - i0) * N;
        float* p = ps + (i - i0) * N;
        logit_row(qh + i * D, kt, x, n, N, D, dm.scale);
        map.forward(x, p, n, i, N);
        float* oi = oh + i * D;
        std::fill(oi, oi + D, 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const float pj = p[j];
          const float* vj = vh + j * D;
          for (int64_t d = 0; d < D; ++d) oi[d] += pj * vj[d];
        }
      }
    }
  });
}

template <class Map>
void backward(const float* q, const float* k, const float* v, const float* o, const float* dout, float* dq,
              float* dk, float* dv, const Dims& dm, const Map& map) {
  const int64_t N = dm.N, D = dm.D;
  const float s = dm.scale;
  // Heads are independent; within a head dK and dV accumulate over queries, so one head
  // belongs to one thread and its queries run in order (deterministic sums).
  const int64_t slots = slots_for(dm.BH);
  const int64_t per_slot = 2 * D * N + 4 * N;  // Kᵀ, Vᵀ, and one row each of x, p, dp, dx
  Tensor scratch = empty({slots, per_slot});
  float* scr = scratch.mutable_data();
  for_each_slot(dm.BH, slots, [&](int64_t t, int64_t bh0, int64_t bh1) {
    float* kt = scr + t * per_slot;
    float* vt = kt + D * N;
    float* x = vt + D * N;
    float* p = x + N;
    float* dp = p + N;
    float* dx = dp + N;
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const int64_t off = bh * N * D;
      const float *qh = q + off, *kh = k + off, *vh = v + off, *oh = o + off, *gh = dout + off;
      float *dqh = dq + off, *dkh = dk + off, *dvh = dv + off;
      transpose_head(kh, kt, N, D);
      transpose_head(vh, vt, N, D);
      std::fill(dkh, dkh + N * D, 0.0f);
      std::fill(dvh, dvh + N * D, 0.0f);
      for (int64_t i = 0; i < N; ++i) {
        const int64_t n = dm.causal ? i + 1 : N;
        const float* qi = qh + i * D;
        const float* gi = gh + i * D;
        logit_row(qi, kt, x, n, N, D, s);
        map.forward(x, p, n, i, N);
        logit_row(gi, vt, dp, n, N, D, 1.0f);  // dp_j = dO_i·v_j
        float d = 0.0f;
        for (int64_t c = 0; c < D; ++c) d += gi[c] * oh[i * D + c];
        map.backward(x, p, dp, d, dx, n, i, N);
        float* dqi = dqh + i * D;
        std::fill(dqi, dqi + D, 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const float sx = s * dx[j], pj = p[j];
          const float* kj = kh + j * D;
          float* dkj = dkh + j * D;
          float* dvj = dvh + j * D;
          for (int64_t c = 0; c < D; ++c) {
            dqi[c] += sx * kj[c];
            dkj[c] += sx * qi[c];
            dvj[c] += pj * gi[c];
          }
        }
      }
    }
  });
}

inline Dims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v) {
  SOFTLAB_CHECK(q.defined() && k.defined() && v.defined(), op, ": q, k and v must be defined");
  SOFTLAB_CHECK(q.rank() == 4 && q.shape() == k.shape() && q.shape() == v.shape(), op,
                " attention: q, k, v must all be [B, H, N, Dh], got q ", q.shape(), ", k ", k.shape(), ", v ",
                v.shape());
  Dims dm;
  dm.BH = q.shape()[0] * q.shape()[1];
  dm.N = q.shape()[2];
  dm.D = q.shape()[3];
  return dm;
}

template <class Map>
struct RowAttentionNode final : Node {
  Saved q, k, v, o;
  Dims dims;
  Map map;
  const char* op = "";
  const char* name() const override { return op; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor &Q = q.get(), &K = k.get(), &V = v.get(), &O = o.get();
    Tensor dq = empty(Q.shape()), dk = empty(K.shape()), dv = empty(V.shape());
    attention_kernel::backward(Q.data(), K.data(), V.data(), O.data(), g.data(), dq.mutable_data(),
                               dk.mutable_data(), dv.mutable_data(), dims, map);
    return {dq, dk, dv};
  }
};

// O = map(s Q Kᵀ) V for q, k, v [B, H, N, Dh], with the hand-written backward above.
template <class Map>
Tensor row_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                     const Map& map) {
  Dims dm = check_qkv(op, q, k, v);
  dm.scale = scale;
  dm.causal = causal;
  Tensor o = empty(q.shape());
  forward(q.data(), k.data(), v.data(), o.mutable_data(), dm, map);
  if (needs_grad({&q, &k, &v})) {
    auto node = std::make_shared<RowAttentionNode<Map>>();
    node->q = Saved(q);
    node->k = Saved(k);
    node->v = Saved(v);
    node->o = Saved(o);
    node->dims = dm;
    node->map = map;
    node->op = op;
    attach(o, node, {&q, &k, &v});
  }
  return o;
}

}  // namespace softlab::attention_kernel
