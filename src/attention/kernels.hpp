#pragma once
// What the fused attention modules share (internal to softlab): the "scale" and "causal"
// parameters most of them take, the q/k/v shape check, the per-thread-slot parallel loop,
// and the autograd node and module around a fused op (FusedAttention), plus the fused
// softmax kernel that selective attention builds on.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "softlab/attention.hpp"
#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/tensor.hpp"

namespace softlab {

// O = softmax(scale · Q Kᵀ + M) V on [B, H, N, Dh]; M is the causal mask when causal.
// Fused, O(N·Dh) memory; see row_kernel.hpp.
Tensor softmax_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal);

inline ParamSpec scale_param() {
  return {.name = "scale", .type = ParamType::Float, .default_value = nullptr, .min = 0.0, .min_exclusive = true,
          .help = "logit scale s; null means Dh^-1/2", .nullable = true};
}
inline ParamSpec causal_param() {
  return {.name = "causal", .type = ParamType::Bool, .default_value = false, .help = "query i sees keys 0..i only"};
}
// The configured scale, or 0 for "Dh^-1/2", resolved by scale_for once q's shape is known.
inline float configured_scale(const json& params) {
  return params["scale"].is_null() ? 0.0f : params["scale"].get<float>();
}
inline float scale_for(float configured, const Tensor& q) {
  return configured > 0.0f ? configured : 1.0f / std::sqrt(static_cast<float>(q.shape()[-1]));
}

namespace detail {
// The sizes of per-head q, k [B, H, N, Dh] and v [B, H, N, Dv].
struct HeadDims {
  int64_t B = 0, H = 0, N = 0, Dh = 0, Dv = 0;
  int64_t heads() const { return B * H; }  // independent (b, h) problems
};

// Checks that q, k, v are per-head tensors of one attention call; names all three shapes.
inline HeadDims check_qkv(const char* module, const Tensor& q, const Tensor& k, const Tensor& v) {
  SOFTLAB_CHECK(q.defined() && k.defined() && v.defined(), module, ": q, k and v must be defined tensors");
  SOFTLAB_CHECK(q.rank() == 4 && k.shape() == q.shape() && v.rank() == 4 && v.shape()[0] == q.shape()[0] &&
                    v.shape()[1] == q.shape()[1] && v.shape()[2] == q.shape()[2],
                module, ": q and k must be [B, H, N, Dh] and v [B, H, N, Dv] with the same B, H, N; got q ",
                q.shape(), ", k ", k.shape(), ", v ", v.shape());
  return {q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3], v.shape()[3]};
}

// One thread slot per contiguous range of `items`, so that each slot can own a scratch
// area: fn(t, item_begin, item_end) for t < slots. The partition is fixed for a given
// thread count, which keeps the kernels' sums in a fixed order.
inline int64_t slots_for(int64_t items) { return std::max<int64_t>(1, std::min<int64_t>(items, num_threads())); }
template <class F>
void for_each_slot(int64_t items, int64_t slots, const F& fn) {
  parallel_for(0, slots, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) fn(t, items * t / slots, items * (t + 1) / slots);
  });
}

// A fused attention op on per-head q, k [B, H, N, Dh] and v [B, H, N, Dv] with a
// hand-written backward. Op holds the module's settings and provides
//   static constexpr bool kSavesOutput;    backward reads the output o
//   void forward(q, k, v, Tensor& o) const;                      o: [B, H, N, Dv], to fill
//   void backward(q, k, v, o, dO, Tensor& dq, Tensor& dk, Tensor& dv) const;
// (o is undefined in backward unless kSavesOutput). Kept for backward: q, k, v (the inputs
// themselves, no copy) and o if the op asks for it; the kernels recompute the rest.
template <class Op>
struct FusedAttentionNode final : Node {
  Saved q, k, v, o;
  Op op;
  const char* op_name = "";
  const char* name() const override { return op_name; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor &Q = q.get(), &K = k.get(), &V = v.get();
    SOFTLAB_ASSERT(g.shape() == V.shape(), op_name, " backward: gradient ", g.shape(), " for output ", V.shape());
    Tensor dq = empty(Q.shape()), dk = empty(K.shape()), dv = empty(V.shape());
    op.backward(Q, K, V, o.defined() ? o.get() : Tensor(), g, dq, dk, dv);
    return {dq, dk, dv};
  }
};

template <class Op>
Tensor fused_attention(const char* name, const Tensor& q, const Tensor& k, const Tensor& v, const Op& op) {
  check_qkv(name, q, k, v);
  Tensor o = empty(v.shape());
  op.forward(q, k, v, o);
  if (needs_grad({&q, &k, &v})) {
    auto node = std::make_shared<FusedAttentionNode<Op>>();
    node->q = Saved(q);
    node->k = Saved(k);
    node->v = Saved(v);
    if constexpr (Op::kSavesOutput) node->o = Saved(o);
    node->op = op;
    node->op_name = name;
    attach(o, node, {&q, &k, &v});
  }
  return o;
}

// The module: a name and a configured op.
template <class Op>
class FusedAttention final : public Attention {
 public:
  FusedAttention(const char* name, const Op& op) : name_(name), op_(op) {}
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) override {
    return fused_attention(name_, q, k, v, op_);
  }

 private:
  const char* name_;
  Op op_;
};

}  // namespace detail

}  // namespace softlab
