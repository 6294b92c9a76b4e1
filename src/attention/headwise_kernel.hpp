#pragma once
// What the linear-complexity attention kernels (linear.cpp, mala.cpp) share: the feature
// map phi = elu + 1 and its derivative, the walks over (prefix) state, the key-side
// gradients, and HeadwiseOp, which makes a kernel that runs one (b, h) at a time a
// FusedAttention op (kernels.hpp). Not part of the public API.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

#include "attention/kernels.hpp"
#include "softlab/tensor.hpp"

namespace softlab::detail {

// phi(x) = elu(x) + 1, computed as x + 1 for x > 0 and exp(x) otherwise: elu(x) + 1 =
// (e^x - 1) + 1 would cancel for x << 0 (spec/attention.md 3, numerics). phi > 0 always.
// Evaluated in double, as every quantity the kernels accumulate.
inline double elu1(float x) { return x > 0.0f ? static_cast<double>(x) + 1.0 : std::exp(static_cast<double>(x)); }
// phi'(x) = 1 for x > 0, e^x otherwise (so phi'(x) = phi(x) for x <= 0).
inline double elu1_grad(float x) { return x > 0.0f ? 1.0 : std::exp(static_cast<double>(x)); }

// phi of one row of n features into out[0, n).
inline void elu1_row(const float* x, double* out, int64_t n) {
  for (int64_t d = 0; d < n; ++d) out[d] = elu1(x[d]);
}

// Σ_e a[e]·b[e] in double with 8 independent lanes. GCC keeps a plain double reduction
// scalar (vectorising it would reorder the additions), and these dot products over Dv are
// the O(N·Dh·Dv) inner loops of the backward kernels. The lane order is fixed, so results
// stay deterministic.
inline double dot(const double* a, const float* b, int64_t n) {
  using vd = double __attribute__((vector_size(8 * sizeof(double))));
  using vf = float __attribute__((vector_size(8 * sizeof(float))));
  vd acc = {};
  int64_t e = 0;
  for (; e + 8 <= n; e += 8) {
    vd x;
    vf y;
    std::memcpy(&x, a + e, sizeof x);
    std::memcpy(&y, b + e, sizeof y);
    acc += x * __builtin_convertvector(y, vd);
  }
  double s = 0.0;
  for (; e < n; ++e) s += a[e] * b[e];
  for (int l = 0; l < 8; ++l) s += acc[l];
  return s;
}

// Adds key j to the running state of a linear kernel: fk = phi(k_j), S += fk v_jᵀ
// (Dh x Dv, row-major), z += fk, and vs += v_j unless vs is null.
inline void add_key_to_state(const float* kj, const float* vj, int64_t Dh, int64_t Dv, double* fk, double* S,
                             double* z, double* vs) {
  elu1_row(kj, fk, Dh);
  for (int64_t d = 0; d < Dh; ++d) {
    double* Sd = S + d * Dv;
    for (int64_t e = 0; e < Dv; ++e) Sd[e] += fk[d] * vj[e];
    z[d] += fk[d];
  }
  if (vs)
    for (int64_t e = 0; e < Dv; ++e) vs[e] += vj[e];
}

// What query i reads from the state: out = Sᵀ fq (Dv) and the return value
// init + fq·z, summed in that order (fq = phi(q_i)).
inline double read_state(const double* fq, const double* S, const double* z, int64_t Dh, int64_t Dv, double* out,
                         double init) {
  for (int64_t e = 0; e < Dv; ++e) out[e] = 0.0;
  double c = init;
  for (int64_t d = 0; d < Dh; ++d) {
    const double* Sd = S + d * Dv;
    for (int64_t e = 0; e < Dv; ++e) out[e] += fq[d] * Sd[e];
    c += fq[d] * z[d];
  }
  return c;
}

// Backward's read of the state for query i with upstream gradient g_i: t = S g_i (Dh),
// *g_dot = fq·t, and the return value init + fq·z.
inline double read_state_grad(const double* fq, const double* S, const double* z, const float* gi, int64_t Dh,
                              int64_t Dv, double* t, double init, double* g_dot) {
  double c = init, gt = 0.0;
  for (int64_t d = 0; d < Dh; ++d) {
    t[d] = dot(S + d * Dv, gi, Dv);
    c += fq[d] * z[d];
    gt += fq[d] * t[d];
  }
  *g_dot = gt;
  return c;
}

// Adds query i to backward's key-side sums: fq = phi(q_i), R += a fq g_iᵀ, r += b fq.
inline void add_query_to_state(const float* qi, const float* gi, double a, double b, int64_t Dh, int64_t Dv,
                               double* fq, double* R, double* r) {
  elu1_row(qi, fq, Dh);
  for (int64_t d = 0; d < Dh; ++d) {
    const double x = fq[d] * a;
    double* Rd = R + d * Dv;
    for (int64_t e = 0; e < Dv; ++e) Rd[e] += x * gi[e];
    r[d] += b * fq[d];
  }
}

// The walk every linear kernel makes: visit(i) for i = 0 .. N-1, or N-1 .. 0 when reverse,
// with add(j) called for each token the state at i includes: all N up front when
// bidirectional; when causal, token i just before i is visited (a prefix sum walking
// forward, a reverse prefix sum walking backward).
template <class Add, class Visit>
void walk_state(int64_t N, bool causal, bool reverse, const Add& add, const Visit& visit) {
  if (!causal)
    for (int64_t j = 0; j < N; ++j) add(j);
  for (int64_t step = 0; step < N; ++step) {
    const int64_t i = reverse ? N - 1 - step : step;
    if (causal) add(i);
    visit(i);
  }
}

// The key-side gradients of a linear kernel from the (reverse-prefix) sums R (Dh x Dv) and
// r (Dh) over the queries that see key j: dv_j = Rᵀ phi(k_j) + p (p may be null) and
// dk_j = (R v_j + r) ∘ phi'(k_j). fk = phi(k_j); w is Dv doubles of scratch.
inline void key_grads(const double* R, const double* r, const double* p, const double* fk, const float* kj,
                      const float* vj, int64_t Dh, int64_t Dv, double* w, float* dkj, float* dvj) {
  for (int64_t e = 0; e < Dv; ++e) w[e] = p ? p[e] : 0.0;
  for (int64_t d = 0; d < Dh; ++d) {  // row by row of R: unit stride
    const double* Rd = R + d * Dv;
    for (int64_t e = 0; e < Dv; ++e) w[e] += Rd[e] * fk[d];
  }
  for (int64_t e = 0; e < Dv; ++e) dvj[e] = static_cast<float>(w[e]);
  for (int64_t d = 0; d < Dh; ++d) {
    const double* Rd = R + d * Dv;
    dkj[d] = static_cast<float>((r[d] + dot(Rd, vj, Dv)) * elu1_grad(kj[d]));
  }
}

// Calls f(bh, scratch) for every (b, h) in [0, B*H), in parallel: one thread slot per
// contiguous range of heads, each slot owning `scratch_doubles` doubles of scratch that its
// heads reuse (the kernels reset what they read). The scratch is one tensor, so
// tensor_memory() (the inference-memory tests) sees it; it is allocated as floats, two per
// double (Storage is 64-byte aligned, and every slot starts at a multiple of 8 bytes).
template <class F>
void for_each_head(int64_t heads, int64_t scratch_doubles, const F& f) {
  if (heads <= 0) return;
  const int64_t slots = slots_for(heads);
  Tensor scratch = empty({slots, 2 * scratch_doubles});
  float* base = scratch.mutable_data();
  for_each_slot(heads, slots, [&](int64_t t, int64_t bh0, int64_t bh1) {
    double* mine = reinterpret_cast<double*>(base + t * 2 * scratch_doubles);
    for (int64_t bh = bh0; bh < bh1; ++bh) f(bh, mine);
  });
}

// The FusedAttention op of a per-head kernel. Kernel is a small struct holding the
// module's settings, with
//   int64_t forward_scratch(const HeadDims&) const;   doubles of scratch per thread
//   int64_t backward_scratch(const HeadDims&) const;
//   void forward(q, k, v, o, const HeadDims&, double* scratch) const;          one head
//   void backward(q, k, v, dO, dq, dk, dv, const HeadDims&, double* scratch) const;
// where the pointers address that head's [N, Dh] or [N, Dv] rows. The kernels rebuild
// their (prefix) state and per-row statistics from q, k, v, so the output is not kept.
template <class Kernel>
struct HeadwiseOp {
  Kernel kernel;
  static constexpr bool kSavesOutput = false;

  static HeadDims dims(const Tensor& q, const Tensor& v) {
    return {q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3], v.shape()[3]};
  }
  void forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o) const {
    const HeadDims d = dims(q, v);
    const float *pq = q.data(), *pk = k.data(), *pv = v.data();
    float* po = o.mutable_data();
    const int64_t qs = d.N * d.Dh, vs = d.N * d.Dv;
    for_each_head(d.heads(), kernel.forward_scratch(d), [&](int64_t bh, double* scratch) {
      kernel.forward(pq + bh * qs, pk + bh * qs, pv + bh * vs, po + bh * vs, d, scratch);
    });
  }
  void backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor&, const Tensor& g, Tensor& dq,
                Tensor& dk, Tensor& dv) const {
    const HeadDims d = dims(q, v);
    const float *pq = q.data(), *pk = k.data(), *pv = v.data(), *pg = g.data();
    float *pdq = dq.mutable_data(), *pdk = dk.mutable_data(), *pdv = dv.mutable_data();
    const int64_t qs = d.N * d.Dh, vs = d.N * d.Dv;
    for_each_head(d.heads(), kernel.backward_scratch(d), [&](int64_t bh, double* scratch) {
      kernel.backward(pq + bh * qs, pk + bh * qs, pv + bh * vs, pg + bh * vs, pdq + bh * qs, pdk + bh * qs,
                      pdv + bh * vs, d, scratch);
    });
  }
};

// The module of a per-head kernel.
template <class Kernel>
std::unique_ptr<Attention> headwise_attention(const char* name, const Kernel& kernel) {
  return std::make_unique<FusedAttention<HeadwiseOp<Kernel>>>(name, HeadwiseOp<Kernel>{kernel});
}

}  // namespace softlab::detail
