#pragma once
// What the linear-complexity attention kernels (linear.cpp, mala.cpp) share: the feature
// map phi = elu + 1 and its derivative, the q/k/v shape check, the per-(b, h) parallel
// loop, and the autograd node and module around a kernel that runs one (b, h) at a time.
// Not part of the public API.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include <memory>

#include "attention/kernels.hpp"
#include "softlab/attention.hpp"
#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
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
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(heads, num_threads()));
  Tensor scratch = empty({slots, 2 * scratch_doubles});
  float* base = scratch.mutable_data();
  parallel_for(0, slots, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      double* mine = reinterpret_cast<double*>(base + t * 2 * scratch_doubles);
      for (int64_t bh = heads * t / slots; bh < heads * (t + 1) / slots; ++bh) f(bh, mine);
    }
  });
}

// A fused attention op computed one (b, h) at a time. Kernel is a small struct holding the
// module's settings, with
//   int64_t forward_scratch(const HeadDims&) const;   doubles of scratch per thread
//   int64_t backward_scratch(const HeadDims&) const;
//   void forward(q, k, v, o, const HeadDims&, double* scratch) const;          one head
//   void backward(q, k, v, dO, dq, dk, dv, const HeadDims&, double* scratch) const;
// where the pointers address that head's [N, Dh] or [N, Dv] rows.
// Kept for backward: q, k and v only (the inputs themselves, no copy); the kernels rebuild
// their (prefix) state and per-row statistics from them.
template <class Kernel>
struct HeadwiseAttentionNode final : Node {
  Saved q, k, v;
  HeadDims dims;
  Kernel kernel;
  const char* op = "";
  const char* name() const override { return op; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor &Q = q.get(), &K = k.get(), &V = v.get();
    SOFTLAB_ASSERT(g.shape() == V.shape(), op, " backward: gradient ", g.shape(), " for output ", V.shape());
    Tensor dQ = empty(Q.shape()), dK = empty(K.shape()), dV = empty(V.shape());
    const float *pq = Q.data(), *pk = K.data(), *pv = V.data(), *pg = g.data();
    float *pdq = dQ.mutable_data(), *pdk = dK.mutable_data(), *pdv = dV.mutable_data();
    const int64_t qs = dims.N * dims.Dh, vs = dims.N * dims.Dv;
    for_each_head(dims.heads(), kernel.backward_scratch(dims), [&](int64_t bh, double* scratch) {
      kernel.backward(pq + bh * qs, pk + bh * qs, pv + bh * vs, pg + bh * vs, pdq + bh * qs, pdk + bh * qs,
                      pdv + bh * vs, dims, scratch);
    });
    return {dQ, dK, dV};
  }
};

template <class Kernel>
Tensor headwise_attention(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Kernel& kernel) {
  const HeadDims dims = check_qkv(op, q, k, v);
  Tensor o = empty(v.shape());
  const float *pq = q.data(), *pk = k.data(), *pv = v.data();
  float* po = o.mutable_data();
  const int64_t qs = dims.N * dims.Dh, vs = dims.N * dims.Dv;
  for_each_head(dims.heads(), kernel.forward_scratch(dims), [&](int64_t bh, double* scratch) {
    kernel.forward(pq + bh * qs, pk + bh * qs, pv + bh * vs, po + bh * vs, dims, scratch);
  });
  if (needs_grad({&q, &k, &v})) {
    auto node = std::make_shared<HeadwiseAttentionNode<Kernel>>();
    node->q = Saved(q);
    node->k = Saved(k);
    node->v = Saved(v);
    node->dims = dims;
    node->kernel = kernel;
    node->op = op;
    attach(o, node, {&q, &k, &v});
  }
  return o;
}

// The module: a name and a configured kernel.
template <class Kernel>
class HeadwiseAttention final : public Attention {
 public:
  HeadwiseAttention(const char* op, const Kernel& kernel) : op_(op), kernel_(kernel) {}
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) override {
    return headwise_attention(op_, q, k, v, kernel_);
  }

 private:
  const char* op_;
  Kernel kernel_;
};

}  // namespace softlab::detail
