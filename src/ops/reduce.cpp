// Reductions: sum, mean and max, over all elements or along one axis.
#include <cmath>
#include <limits>

#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
Shape reduced_shape(const Shape& s, int64_t axis, bool keepdim) {
  std::vector<int64_t> d = s.dims();
  const auto a = static_cast<size_t>(s.axis(axis));
  if (keepdim) d[a] = 1;
  else d.erase(d.begin() + static_cast<std::ptrdiff_t>(a));
  return Shape(std::move(d));
}

// sum and mean along an axis: out[o, i] = c * sum_j x[o, j, i].
struct SumAxisNode final : Node {
  Shape in_shape;
  int64_t axis;
  float c;
  bool is_mean;
  const char* name() const override { return is_mean ? "mean" : "sum"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const auto v = detail::axis_view(in_shape, axis);
    Tensor dx = empty(in_shape);
    float* d = dx.mutable_data();
    const float* pg = g.data();
    parallel_for(0, v.outer, 1, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o)
        for (int64_t j = 0; j < v.n; ++j)
          for (int64_t i = 0; i < v.inner; ++i) d[(o * v.n + j) * v.inner + i] = c * pg[o * v.inner + i];
    });
    return {dx};
  }
};

Tensor sum_axis(const char* op, const Tensor& x, int64_t axis, bool keepdim, bool is_mean) {
  detail::check_defined(x, op, "x");
  const auto v = detail::axis_view(x.shape(), axis);
  const float c = is_mean ? (v.n > 0 ? 1.0f / static_cast<float>(v.n) : 0.0f) : 1.0f;
  Tensor out = empty(reduced_shape(x.shape(), axis, keepdim));
  float* o = out.mutable_data();
  const float* px = x.data();
  parallel_for(0, v.outer, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t oo = o0; oo < o1; ++oo) {
      float* dst = o + oo * v.inner;
      for (int64_t i = 0; i < v.inner; ++i) dst[i] = 0.0f;
      for (int64_t j = 0; j < v.n; ++j) {
        const float* src = px + (oo * v.n + j) * v.inner;
        for (int64_t i = 0; i < v.inner; ++i) dst[i] += src[i];
      }
      for (int64_t i = 0; i < v.inner; ++i) dst[i] *= c;
    }
  });
  if (needs_grad({&x})) {
    auto node = std::make_shared<SumAxisNode>();
    node->in_shape = x.shape();
    node->axis = x.shape().axis(axis);
    node->c = c;
    node->is_mean = is_mean;
    attach(out, node, {&x});
  }
  return out;
}

// max along an axis; the gradient goes to the first maximal element (the saved argmax).
struct MaxAxisNode final : Node {
  Shape in_shape;
  int64_t axis;
  std::vector<int64_t> argmax;  // one per output element
  const char* name() const override { return "max"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const auto v = detail::axis_view(in_shape, axis);
    Tensor dx = zeros(in_shape);
    float* d = dx.mutable_data();
    const float* pg = g.data();
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t i = 0; i < v.inner; ++i) {
        const int64_t k = o * v.inner + i;
        d[(o * v.n + argmax[static_cast<size_t>(k)]) * v.inner + i] += pg[k];
      }
    return {dx};
  }
};

Tensor max_axis(const Tensor& x, int64_t axis, bool keepdim) {
  detail::check_defined(x, "max", "x");
  const auto v = detail::axis_view(x.shape(), axis);
  SOFTLAB_CHECK(v.n > 0, "max: axis ", axis, " of shape ", x.shape(), " is empty");
  Tensor out = empty(reduced_shape(x.shape(), axis, keepdim));
  float* o = out.mutable_data();
  const float* px = x.data();
  std::vector<int64_t> arg(static_cast<size_t>(v.outer * v.inner));
  parallel_for(0, v.outer, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t oo = o0; oo < o1; ++oo)
      for (int64_t i = 0; i < v.inner; ++i) {
        int64_t best = 0;
        float m = px[oo * v.n * v.inner + i];
        for (int64_t j = 1; j < v.n; ++j) {
          const float val = px[(oo * v.n + j) * v.inner + i];
          if (val > m || (std::isnan(val) && !std::isnan(m))) {  // NaN propagates, like torch
            m = val;
            best = j;
          }
        }
        o[oo * v.inner + i] = m;
        arg[static_cast<size_t>(oo * v.inner + i)] = best;
      }
  });
  if (needs_grad({&x})) {
    auto node = std::make_shared<MaxAxisNode>();
    node->in_shape = x.shape();
    node->axis = x.shape().axis(axis);
    node->argmax = std::move(arg);
    attach(out, node, {&x});
  }
  return out;
}

// A tensor of any rank viewed as [numel], for the all-element reductions.
Tensor flat(const Tensor& x) { return reshape(x, Shape{x.numel()}); }
}  // namespace

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) { return sum_axis("sum", x, axis, keepdim, false); }
Tensor mean(const Tensor& x, int64_t axis, bool keepdim) { return sum_axis("mean", x, axis, keepdim, true); }
Tensor max(const Tensor& x, int64_t axis, bool keepdim) { return max_axis(x, axis, keepdim); }

Tensor sum(const Tensor& x) {
  detail::check_defined(x, "sum", "x");
  return sum_axis("sum", flat(x), 0, false, false);
}
Tensor mean(const Tensor& x) {
  detail::check_defined(x, "mean", "x");
  return sum_axis("mean", flat(x), 0, false, true);
}
Tensor max(const Tensor& x) {
  detail::check_defined(x, "max", "x");
  return max_axis(flat(x), 0, false);
}

}  // namespace softlab
