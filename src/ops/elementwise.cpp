// Element-wise ops: binary with numpy broadcasting (add, sub, mul, div) and unary maps
// (neg, scale, exp, log, sqrt, tanh, sigmoid, softplus, relu, elu, gelu), and the fused
// bias + GELU of the MLP (ops/fused.hpp). Forward and backward of each sit side by side.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/fast_math.hpp"
#include "ops/fused.hpp"
#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
constexpr int64_t kGrain = 1 << 14;  // elements per thread chunk for cheap maps
}

// ---- broadcasting ------------------------------------------------------------------------

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  const int64_t r = std::max(a.rank(), b.rank());
  std::vector<int64_t> out(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.rank() ? 1 : a.dims()[static_cast<size_t>(i - (r - a.rank()))];
    const int64_t db = i < r - b.rank() ? 1 : b.dims()[static_cast<size_t>(i - (r - b.rank()))];
    SOFTLAB_CHECK(da == db || da == 1 || db == 1, "shapes ", a, " and ", b,
                  " cannot be broadcast together (axis ", i, " of the result: ", da, " vs ", db, ")");
    out[static_cast<size_t>(i)] = std::max(da, db);
  }
  return Shape(std::move(out));
}

namespace {
// Strides of `s` read as a tensor of shape `out` (0 along broadcast axes).
std::vector<int64_t> broadcast_strides(const Shape& s, const Shape& out) {
  const int64_t r = out.rank();
  std::vector<int64_t> st(static_cast<size_t>(r), 0);
  const auto own = detail::row_major_strides(s);
  for (int64_t i = 0; i < s.rank(); ++i) {
    const int64_t oi = i + (r - s.rank());
    st[static_cast<size_t>(oi)] = s.dims()[static_cast<size_t>(i)] == 1 ? 0 : own[static_cast<size_t>(i)];
  }
  return st;
}

// Calls f(out_index, a_index, b_index) row by row: the last axis is the inner loop.
template <class F>
void for_each_broadcast(const Shape& out, const Shape& sa, const Shape& sb, const F& f) {
  const int64_t r = out.rank();
  const int64_t total = out.numel();
  if (total == 0) return;
  if (r == 0) {
    f(0, 0, 0, 1, 0, 0);
    return;
  }
  const auto ast = broadcast_strides(sa, out), bst = broadcast_strides(sb, out);
  const int64_t inner = out.dims().back();
  const int64_t rows = total / inner;
  const int64_t ia = ast.back(), ib = bst.back();
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      int64_t rem = row, oa = 0, ob = 0;
      for (int64_t d = r - 2; d >= 0; --d) {
        const int64_t n = out.dims()[static_cast<size_t>(d)];
        const int64_t c = rem % n;
        rem /= n;
        oa += c * ast[static_cast<size_t>(d)];
        ob += c * bst[static_cast<size_t>(d)];
      }
      f(row * inner, oa, ob, inner, ia, ib);
    }
  });
}

enum class BinOp { Add, Sub, Mul, Div };

template <BinOp op>
inline float apply(float a, float b) {
  if constexpr (op == BinOp::Add) return a + b;
  if constexpr (op == BinOp::Sub) return a - b;
  if constexpr (op == BinOp::Mul) return a * b;
  return a / b;
}

template <BinOp op>
Tensor binary_forward(const Tensor& a, const Tensor& b, const Shape& out_shape) {
  Tensor out = empty(out_shape);
  float* o = out.mutable_data();
  const float* pa = a.data();
  const float* pb = b.data();
  if (a.shape() == b.shape()) {
    parallel_for(0, out.numel(), kGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) o[i] = apply<op>(pa[i], pb[i]);
    });
  } else {
    for_each_broadcast(out_shape, a.shape(), b.shape(),
                       [&](int64_t oo, int64_t oa, int64_t ob, int64_t n, int64_t ia, int64_t ib) {
                         for (int64_t i = 0; i < n; ++i) o[oo + i] = apply<op>(pa[oa + i * ia], pb[ob + i * ib]);
                       });
  }
  return out;
}

const char* bin_name(BinOp op) {
  switch (op) {
    case BinOp::Add: return "add";
    case BinOp::Sub: return "sub";
    case BinOp::Mul: return "mul";
    default: return "div";
  }
}

struct BinaryNode final : Node {
  BinOp op;
  Shape sa, sb, so;
  Saved a, b;  // only mul and div keep their operands
  bool need_a = false, need_b = false;
  const char* name() const override { return bin_name(op); }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor ga, gb;
    if (op == BinOp::Add || op == BinOp::Sub) {
      if (need_a) ga = detail::sum_to(g, sa);
      if (need_b) gb = detail::sum_to(op == BinOp::Add ? g : neg(g), sb);
      return {ga, gb};
    }
    const Tensor& A = a.get();
    const Tensor& B = b.get();
    if (op == BinOp::Mul) {
      if (need_a) ga = detail::sum_to(mul(g, B), sa);
      if (need_b) gb = detail::sum_to(mul(g, A), sb);
    } else {
      if (need_a) ga = detail::sum_to(div(g, B), sa);
      // d(a/b)/db = -a / b^2
      if (need_b) gb = detail::sum_to(neg(div(mul(g, A), mul(B, B))), sb);
    }
    return {ga, gb};
  }
};

template <BinOp op>
Tensor binary(const Tensor& a, const Tensor& b) {
  detail::check_defined(a, bin_name(op), "a");
  detail::check_defined(b, bin_name(op), "b");
  Shape out_shape = [&] {
    try {
      return broadcast_shapes(a.shape(), b.shape());
    } catch (const Error& e) {
      throw Error(detail::cat(bin_name(op), ": ", e.what()));
    }
  }();
  Tensor out = binary_forward<op>(a, b, out_shape);
  if (needs_grad({&a, &b})) {
    auto node = std::make_shared<BinaryNode>();
    node->op = op;
    node->sa = a.shape();
    node->sb = b.shape();
    node->need_a = a.requires_grad();
    node->need_b = b.requires_grad();
    if (op == BinOp::Mul || op == BinOp::Div) {
      node->a = Saved(a);
      node->b = Saved(b);
    }
    attach(out, node, {&a, &b});
  }
  return out;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary<BinOp::Add>(a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary<BinOp::Sub>(a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary<BinOp::Mul>(a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary<BinOp::Div>(a, b); }

namespace detail {
Tensor sum_to(const Tensor& g, const Shape& target) {
  if (g.shape() == target) return g;
  // Reduce in a fixed order (row-major over g) so results do not depend on threads.
  Tensor out = zeros(target);
  float* o = out.mutable_data();
  const float* pg = g.data();
  const Shape& gs = g.shape();
  const auto ts = broadcast_strides(target, gs);
  const int64_t r = gs.rank();
  const int64_t inner = r ? gs.dims().back() : 1;
  const int64_t rows = gs.numel() / std::max<int64_t>(inner, 1);
  const int64_t it = r ? ts.back() : 0;
  for (int64_t row = 0; row < rows; ++row) {
    int64_t rem = row, ot = 0;
    for (int64_t d = r - 2; d >= 0; --d) {
      const int64_t n = gs.dims()[static_cast<size_t>(d)];
      ot += (rem % n) * ts[static_cast<size_t>(d)];
      rem /= n;
    }
    const float* src = pg + row * inner;
    if (it == 0) {
      float s = 0.0f;
      for (int64_t i = 0; i < inner; ++i) s += src[i];
      o[ot] += s;
    } else {
      for (int64_t i = 0; i < inner; ++i) o[ot + i] += src[i];
    }
  }
  return out;
}
}  // namespace detail

// ---- unary maps --------------------------------------------------------------------------

namespace {
// y = f(x); dx = g * df(x, y). kX / kY say which of x and y backward keeps.
template <bool kX, bool kY, class DF>
struct UnaryNode final : Node {
  const char* op;
  DF df;
  Saved x, y;
  UnaryNode(const char* op, DF df) : op(op), df(df) {}
  const char* name() const override { return op; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx = empty(g.shape());
    float* d = dx.mutable_data();
    const float* pg = g.data();
    const float* px = kX ? x.get().data() : nullptr;
    const float* py = kY ? y.get().data() : nullptr;
    parallel_for(0, g.numel(), kGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) d[i] = pg[i] * df(kX ? px[i] : 0.0f, kY ? py[i] : 0.0f);
    });
    return {dx};
  }
};

template <bool kX, bool kY, class F, class DF>
Tensor unary(const char* op, const Tensor& x, F f, DF df) {
  detail::check_defined(x, op, "x");
  Tensor y = empty(x.shape());
  float* py = y.mutable_data();
  const float* px = x.data();
  parallel_for(0, x.numel(), kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) py[i] = f(px[i]);
  });
  if (needs_grad({&x})) {
    auto node = std::make_shared<UnaryNode<kX, kY, DF>>(op, df);
    if constexpr (kX) node->x = Saved(x);
    if constexpr (kY) node->y = Saved(y);
    attach(y, node, {&x});
  }
  return y;
}

// Branch forms that never overflow.
inline float stable_sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}
inline float stable_softplus(float x) { return std::max(x, 0.0f) + std::log1p(std::exp(-std::fabs(x))); }

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluC = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
}  // namespace

Tensor neg(const Tensor& x) {
  return unary<false, false>("neg", x, [](float v) { return -v; }, [](float, float) { return -1.0f; });
}

Tensor scale(const Tensor& x, float c) {
  return unary<false, false>("scale", x, [c](float v) { return c * v; }, [c](float, float) { return c; });
}

Tensor add_scalar(const Tensor& x, float c) {
  return unary<false, false>("add_scalar", x, [c](float v) { return v + c; }, [](float, float) { return 1.0f; });
}

Tensor exp(const Tensor& x) {
  return unary<false, true>("exp", x, [](float v) { return std::exp(v); }, [](float, float y) { return y; });
}

Tensor log(const Tensor& x) {
  return unary<true, false>("log", x, [](float v) { return std::log(v); }, [](float v, float) { return 1.0f / v; });
}

Tensor sqrt(const Tensor& x) {
  return unary<false, true>("sqrt", x, [](float v) { return std::sqrt(v); },
                            [](float, float y) { return 0.5f / y; });
}

Tensor tanh(const Tensor& x) {
  return unary<false, true>("tanh", x, [](float v) { return std::tanh(v); },
                            [](float, float y) { return 1.0f - y * y; });
}

Tensor sigmoid(const Tensor& x) {
  return unary<false, true>("sigmoid", x, stable_sigmoid, [](float, float y) { return y * (1.0f - y); });
}

Tensor softplus(const Tensor& x) {
  return unary<true, false>("softplus", x, stable_softplus, [](float v, float) { return stable_sigmoid(v); });
}

Tensor relu(const Tensor& x) {
  return unary<true, false>("relu", x, [](float v) { return v > 0.0f ? v : 0.0f; },
                            [](float v, float) { return v > 0.0f ? 1.0f : 0.0f; });
}

Tensor elu(const Tensor& x, float alpha) {
  // For x <= 0, d/dx alpha (e^x - 1) = alpha e^x = y + alpha.
  return unary<true, true>("elu", x, [alpha](float v) { return v > 0.0f ? v : alpha * std::expm1(v); },
                           [alpha](float v, float y) { return v > 0.0f ? 1.0f : y + alpha; });
}

namespace {
// The tanh GELU, 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))), and its derivative: shared
// by gelu and the fused bias_gelu so that the two cannot drift apart.
inline float gelu_tanh_value(float v) {
  return 0.5f * v * (1.0f + detail::fast_tanh(kSqrt2OverPi * (v + kGeluC * v * v * v)));
}
inline float gelu_tanh_grad(float v) {
  const float t = detail::fast_tanh(kSqrt2OverPi * (v + kGeluC * v * v * v));
  return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluC * v * v);
}
}  // namespace

Tensor gelu(const Tensor& x, GeluKind kind) {
  if (kind == GeluKind::Tanh) {
    return unary<true, false>(
        "gelu_tanh", x, [](float v) { return gelu_tanh_value(v); }, [](float v, float) { return gelu_tanh_grad(v); });
  }
  return unary<true, false>(
      "gelu_exact", x, [](float v) { return 0.5f * v * (1.0f + std::erf(v * kInvSqrt2)); },
      [](float v, float) {
        return 0.5f * (1.0f + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5f * v * v);
      });
}

// ---- bias + GELU, fused (the MLP's first activation) -----------------------------------------
//
// y = gelu_tanh(h + b) for h [..., C] (the bias-free fc1 product) and b [C]. Unfused, the
// bias rides on the GEMM but backward then makes two passes over the [rows, C] gradient:
// gelu's (dh = g gelu'(u)) and linear's bias sum (db = column sums of dh, one thread). Here
// forward is one pass and backward one pass that writes dh and sums db together.
// Backward recomputes u = h + b and the tanh instead of saving them: h is kept anyway (no
// copy), and the vectorised fast_tanh costs less than a second [rows, C] buffer.

namespace {
// bias_gelu backward: rows per partial bias sum. Fixed (not per thread), so the partials and
// their sum in block order are the same for any thread count.
constexpr int64_t kRowBlock = 32;

struct BiasGeluNode final : Node {
  Saved h, b;
  bool need_h = false, need_b = false;
  const char* name() const override { return "bias_gelu"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& H = h.get();
    const Tensor& Bias = b.get();
    const int64_t C = Bias.numel();
    const int64_t R = C ? H.numel() / C : 0;
    const float* ph = H.data();
    const float* pb = Bias.data();
    const float* pg = g.data();
    // dh is needed for db even when h itself needs no gradient.
    Tensor dh = empty(H.shape());
    Tensor db = zeros(Shape{C});
    float* pdh = dh.mutable_data();
    float* pdb = db.mutable_data();
    // Threads take blocks of kRowBlock whole rows, so h, g and dh stream contiguously (an
    // earlier split by columns, which summed db in plain row order, ran 2x slower: each
    // thread read every other half row and the prefetcher lost the stream). Each block
    // sums its own partial db; the partials are added in block order below.
    const int64_t blocks = (R + kRowBlock - 1) / kRowBlock;
    std::vector<float> part(static_cast<size_t>(blocks * C), 0.0f);
    parallel_for(0, blocks, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, kRowBlock * C)),
                 [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        float* pk = part.data() + k * C;
        for (int64_t r = k * kRowBlock; r < std::min(R, (k + 1) * kRowBlock); ++r) {
          const float* hr = ph + r * C;
          const float* gr = pg + r * C;
          float* dr = pdh + r * C;
          for (int64_t c = 0; c < C; ++c) {
            const float d = gr[c] * gelu_tanh_grad(hr[c] + pb[c]);
            dr[c] = d;
            pk[c] += d;
          }
        }
      }
    });
    for (int64_t k = 0; k < blocks; ++k)  // block order: thread-count independent
      for (int64_t c = 0; c < C; ++c) pdb[c] += part[static_cast<size_t>(k * C + c)];
    return {need_h ? dh : Tensor(), need_b ? db : Tensor()};
  }
};
}  // namespace

Tensor bias_gelu(const Tensor& h, const Tensor& bias) {
  detail::check_defined(h, "bias_gelu", "h");
  detail::check_defined(bias, "bias_gelu", "bias");
  SOFTLAB_CHECK(h.rank() >= 1 && bias.shape() == Shape{h.shape()[-1]}, "bias_gelu: bias of shape ", bias.shape(),
                " does not match the last axis of h ", h.shape());
  const int64_t C = bias.numel();
  const int64_t R = C ? h.numel() / C : 0;
  Tensor y = empty(h.shape());
  const float* ph = h.data();
  const float* pb = bias.data();
  float* py = y.mutable_data();
  parallel_for(0, R, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* hr = ph + r * C;
      float* yr = py + r * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = gelu_tanh_value(hr[c] + pb[c]);
    }
  });
  if (needs_grad({&h, &bias})) {
    auto node = std::make_shared<BiasGeluNode>();
    node->h = Saved(h);
    node->b = Saved(bias);
    node->need_h = h.requires_grad();
    node->need_b = bias.requires_grad();
    attach(y, node, {&h, &bias});
  }
  return y;
}

}  // namespace softlab
