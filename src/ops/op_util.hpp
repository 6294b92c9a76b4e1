#pragma once
// Helpers shared by the op files (not part of the public API).
#include <cstdint>
#include <vector>

#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/tensor.hpp"

namespace softlab::detail {

// A tensor viewed as [outer, n, inner] around one axis.
struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
};
inline AxisView axis_view(const Shape& s, int64_t axis) {
  const int64_t a = s.axis(axis);
  AxisView v;
  for (int64_t i = 0; i < a; ++i) v.outer *= s.dims()[static_cast<size_t>(i)];
  v.n = s.dims()[static_cast<size_t>(a)];
  for (int64_t i = a + 1; i < s.rank(); ++i) v.inner *= s.dims()[static_cast<size_t>(i)];
  return v;
}

inline std::vector<int64_t> row_major_strides(const Shape& s) {
  std::vector<int64_t> st(static_cast<size_t>(s.rank()), 1);
  for (int64_t i = s.rank() - 2; i >= 0; --i)
    st[static_cast<size_t>(i)] = st[static_cast<size_t>(i + 1)] * s.dims()[static_cast<size_t>(i + 1)];
  return st;
}

inline void check_defined(const Tensor& t, const char* op, const char* arg) {
  SOFTLAB_CHECK(t.defined(), op, ": argument '", arg, "' is an undefined tensor");
}

// Sums g (of a broadcast shape) down to `target`, the shape of the input that was
// broadcast. Plain copy when the shapes are equal.
Tensor sum_to(const Tensor& g, const Shape& target);

// A view of x with another shape (same storage, same offset); numel must match.
Tensor view_as(const Tensor& x, const Shape& shape);

}  // namespace softlab::detail
