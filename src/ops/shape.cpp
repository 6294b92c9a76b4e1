// Shape ops: reshape (a free view), transpose/permute, slice, concat (copies), and
// row lookup (index_select, embedding).
#include <cstring>
#include <numeric>

#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace detail {
Tensor view_as(const Tensor& x, const Shape& shape) {
  SOFTLAB_ASSERT(shape.numel() == x.numel(), "view_as: ", x.shape(), " -> ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = x.impl()->storage;
  impl->offset = x.impl()->offset;
  impl->shape = shape;
  return Tensor(impl);
}
}  // namespace detail

// ---- reshape -----------------------------------------------------------------------------

namespace {
struct ReshapeNode final : Node {
  Shape in_shape;
  const char* name() const override { return "reshape"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {detail::view_as(g, in_shape)}; }
};
}  // namespace

Tensor reshape(const Tensor& x, std::vector<int64_t> d) {
  detail::check_defined(x, "reshape", "x");
  auto shown = [&] {
    std::string s = "[";
    for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
  };
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < d.size(); ++i) {
    if (d[i] == -1) {
      SOFTLAB_CHECK(infer < 0, "reshape: more than one -1 in ", shown());
      infer = static_cast<int64_t>(i);
    } else {
      SOFTLAB_CHECK(d[i] >= 0, "reshape: negative dimension in ", shown(), " (only -1 is allowed, once)");
      known *= d[i];
    }
  }
  if (infer >= 0) {
    SOFTLAB_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot reshape ", x.shape(), " to ", shown());
    d[static_cast<size_t>(infer)] = x.numel() / known;
  }
  Shape target(std::move(d));
  SOFTLAB_CHECK(target.numel() == x.numel(), "reshape: cannot reshape ", x.shape(), " (", x.numel(),
                " elements) to ", target, " (", target.numel(), " elements)");
  Tensor out = detail::view_as(x, target);
  if (needs_grad({&x})) {
    auto node = std::make_shared<ReshapeNode>();
    node->in_shape = x.shape();
    attach(out, node, {&x});
  }
  return out;
}

// ---- permute / transpose -----------------------------------------------------------------

namespace {
Tensor permute_copy(const Tensor& x, const std::vector<int64_t>& order) {
  const Shape& s = x.shape();
  const int64_t r = s.rank();
  std::vector<int64_t> od(static_cast<size_t>(r));
  const auto in_st = detail::row_major_strides(s);
  std::vector<int64_t> st(static_cast<size_t>(r));  // input stride of each output axis
  for (int64_t i = 0; i < r; ++i) {
    od[static_cast<size_t>(i)] = s.dims()[static_cast<size_t>(order[static_cast<size_t>(i)])];
    st[static_cast<size_t>(i)] = in_st[static_cast<size_t>(order[static_cast<size_t>(i)])];
  }
  Shape os(od);
  Tensor out = empty(os);
  if (out.numel() == 0) return out;
  float* po = out.mutable_data();
  const float* px = x.data();
  if (r == 0) {
    po[0] = px[0];
    return out;
  }
  const int64_t inner = od.back(), is = st.back();
  const int64_t rows = out.numel() / inner;
  parallel_for(0, rows, std::max<int64_t>(1, 4096 / inner), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      int64_t rem = row, off = 0;
      for (int64_t d = r - 2; d >= 0; --d) {
        const int64_t n = od[static_cast<size_t>(d)];
        off += (rem % n) * st[static_cast<size_t>(d)];
        rem /= n;
      }
      float* dst = po + row * inner;
      for (int64_t i = 0; i < inner; ++i) dst[i] = px[off + i * is];
    }
  });
  return out;
}

struct PermuteNode final : Node {
  std::vector<int64_t> inverse;
  const char* name() const override { return "permute"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {permute_copy(g, inverse)}; }
};
}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& order) {
  detail::check_defined(x, "permute", "x");
  const int64_t r = x.rank();
  SOFTLAB_CHECK(static_cast<int64_t>(order.size()) == r, "permute: order has ", order.size(),
                " axes for a tensor of shape ", x.shape());
  std::vector<int64_t> ord(order.size()), inv(order.size(), -1);
  for (int64_t i = 0; i < r; ++i) {
    const int64_t a = x.shape().axis(order[static_cast<size_t>(i)]);
    SOFTLAB_CHECK(inv[static_cast<size_t>(a)] < 0, "permute: axis ", a, " appears twice in the order for shape ",
                  x.shape());
    ord[static_cast<size_t>(i)] = a;
    inv[static_cast<size_t>(a)] = i;
  }
  Tensor out = permute_copy(x, ord);
  if (needs_grad({&x})) {
    auto node = std::make_shared<PermuteNode>();
    node->inverse = std::move(inv);
    attach(out, node, {&x});
  }
  return out;
}

Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1) {
  detail::check_defined(x, "transpose", "x");
  std::vector<int64_t> order(static_cast<size_t>(x.rank()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[static_cast<size_t>(x.shape().axis(axis0))], order[static_cast<size_t>(x.shape().axis(axis1))]);
  return permute(x, order);
}

// ---- slice and concat --------------------------------------------------------------------

namespace {
// Copies a block [outer, n_src, inner] into [outer, n_dst, inner] at position `at` (or the
// reverse when `gather`): the shared loop of slice, concat and their backwards.
void copy_block(const float* src, float* dst, int64_t outer, int64_t inner, int64_t n_src, int64_t n_dst,
                int64_t at, int64_t count, bool gather) {
  parallel_for(0, outer, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, count * inner)), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const size_t bytes = static_cast<size_t>(count * inner) * sizeof(float);
      if (bytes == 0) continue;
      if (gather)  // dst[o, 0:count] = src[o, at:at+count]
        std::memcpy(dst + o * n_dst * inner, src + (o * n_src + at) * inner, bytes);
      else  // dst[o, at:at+count] = src[o, 0:count]
        std::memcpy(dst + (o * n_dst + at) * inner, src + o * n_src * inner, bytes);
    }
  });
}

struct SliceNode final : Node {
  Shape in_shape;
  int64_t axis, start;
  const char* name() const override { return "slice"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx = zeros(in_shape);
    const auto v = detail::axis_view(in_shape, axis);
    const int64_t count = g.shape()[axis];
    copy_block(g.data(), dx.mutable_data(), v.outer, v.inner, count, v.n, start, count, false);
    return {dx};
  }
};

struct ConcatNode final : Node {
  int64_t axis;
  std::vector<Shape> shapes;
  const char* name() const override { return "concat"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    std::vector<Tensor> out(shapes.size());
    const auto v = detail::axis_view(g.shape(), axis);
    int64_t at = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const int64_t count = shapes[i][axis];
      if (inputs[i]) {
        out[i] = empty(shapes[i]);
        copy_block(g.data(), out[i].mutable_data(), v.outer, v.inner, v.n, count, at, count, true);
      }
      at += count;
    }
    return out;
  }
};
}  // namespace

Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end) {
  detail::check_defined(x, "slice", "x");
  const int64_t a = x.shape().axis(axis);
  const int64_t n = x.shape()[a];
  SOFTLAB_CHECK(0 <= start && start <= end && end <= n, "slice: range [", start, ", ", end, ") is not inside axis ",
                a, " of shape ", x.shape());
  std::vector<int64_t> d = x.shape().dims();
  d[static_cast<size_t>(a)] = end - start;
  const auto v = detail::axis_view(x.shape(), a);
  Tensor out;
  if (v.outer == 1) {
    // A contiguous block (e.g. q, k, v out of [3, B, H, N, Dh]): a free view, like reshape.
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = x.impl()->storage;
    impl->offset = x.impl()->offset + start * v.inner;
    impl->shape = Shape(d);
    out = Tensor(impl);
  } else {
    out = empty(Shape(d));
    copy_block(x.data(), out.mutable_data(), v.outer, v.inner, n, end - start, start, end - start, true);
  }
  if (needs_grad({&x})) {
    auto node = std::make_shared<SliceNode>();
    node->in_shape = x.shape();
    node->axis = a;
    node->start = start;
    attach(out, node, {&x});
  }
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  SOFTLAB_CHECK(!xs.empty(), "concat: no tensors given");
  for (size_t i = 0; i < xs.size(); ++i)
    SOFTLAB_CHECK(xs[i].defined(), "concat: tensor ", i, " is undefined");
  const Shape& s0 = xs[0].shape();
  const int64_t a = s0.axis(axis);
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Shape& si = xs[i].shape();
    bool ok = si.rank() == s0.rank();
    for (int64_t d = 0; ok && d < s0.rank(); ++d) ok = d == a || si.dims()[static_cast<size_t>(d)] == s0.dims()[static_cast<size_t>(d)];
    SOFTLAB_CHECK(ok, "concat along axis ", a, ": tensor ", i, " has shape ", si, ", which does not match tensor 0's ",
                  s0, " outside that axis");
    total += si.dims()[static_cast<size_t>(a)];
  }
  std::vector<int64_t> d = s0.dims();
  d[static_cast<size_t>(a)] = total;
  Tensor out = empty(Shape(d));
  const auto v = detail::axis_view(out.shape(), a);
  int64_t at = 0;
  for (const Tensor& x : xs) {
    const int64_t count = x.shape()[a];
    copy_block(x.data(), out.mutable_data(), v.outer, v.inner, count, total, at, count, false);
    at += count;
  }
  if (needs_grad(xs)) {
    auto node = std::make_shared<ConcatNode>();
    node->axis = a;
    for (const Tensor& x : xs) node->shapes.push_back(x.shape());
    attach(out, node, xs);
  }
  return out;
}

// ---- row lookup --------------------------------------------------------------------------

namespace {
struct IndexSelectNode final : Node {
  Shape in_shape;
  std::vector<int32_t> index;
  const char* name() const override { return "index_select"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx = zeros(in_shape);
    const int64_t row = in_shape.rank() ? in_shape.numel() / std::max<int64_t>(in_shape[0], 1) : 1;
    float* d = dx.mutable_data();
    const float* pg = g.data();
    // Parallel over columns, each summing the picked rows in index order: repeated
    // indices accumulate deterministically.
    parallel_for(0, row, 256, [&](int64_t c0, int64_t c1) {
      for (size_t i = 0; i < index.size(); ++i) {
        float* dst = d + static_cast<int64_t>(index[i]) * row;
        const float* src = pg + static_cast<int64_t>(i) * row;
        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
      }
    });
    return {dx};
  }
};
}  // namespace

Tensor index_select(const Tensor& x, std::span<const int32_t> index, const Shape& index_shape) {
  detail::check_defined(x, "index_select", "x");
  SOFTLAB_CHECK(x.rank() >= 1, "index_select: x needs at least one axis, got shape ", x.shape());
  SOFTLAB_CHECK(static_cast<int64_t>(index.size()) == index_shape.numel(), "index_select: ", index.size(),
                " indices for index shape ", index_shape);
  const int64_t rows = x.shape()[0];
  const int64_t row = rows ? x.numel() / rows : 0;
  for (size_t i = 0; i < index.size(); ++i)
    SOFTLAB_CHECK(index[i] >= 0 && index[i] < rows, "index_select: index ", index[i], " at position ", i,
                  " is out of range for axis 0 of shape ", x.shape());
  std::vector<int64_t> d = index_shape.dims();
  d.insert(d.end(), x.shape().dims().begin() + 1, x.shape().dims().end());
  Tensor out = empty(Shape(d));
  float* po = out.mutable_data();
  const float* px = x.data();
  parallel_for(0, static_cast<int64_t>(index.size()), std::max<int64_t>(1, 4096 / std::max<int64_t>(row, 1)),
               [&](int64_t i0, int64_t i1) {
                 for (int64_t i = i0; i < i1; ++i)
                   if (row)
                     std::memcpy(po + i * row, px + static_cast<int64_t>(index[static_cast<size_t>(i)]) * row,
                                 static_cast<size_t>(row) * sizeof(float));
               });
  if (needs_grad({&x})) {
    auto node = std::make_shared<IndexSelectNode>();
    node->in_shape = x.shape();
    node->index.assign(index.begin(), index.end());
    attach(out, node, {&x});
  }
  return out;
}

Tensor embedding(const Tensor& weight, std::span<const int32_t> tokens, const Shape& tokens_shape) {
  detail::check_defined(weight, "embedding", "weight");
  SOFTLAB_CHECK(weight.rank() == 2, "embedding: weight must be [vocab, dim], got shape ", weight.shape());
  return index_select(weight, tokens, tokens_shape);
}

}  // namespace softlab
