// matmul (plain and batched, with transposed operands) and linear (x W^T + b), both
// through oneDNN's matmul (ops/gemm.cpp). Backward is two more matmuls.
#include "ops/gemm.hpp"
#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
// The geometry of op(A) op(B) for tensors a, b (see matmul in ops.hpp).
struct MatmulPlan {
  kernels::GemmArgs g;
  Shape out;
};

MatmulPlan plan_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  SOFTLAB_CHECK(a.rank() >= 2 && b.rank() >= 2, "matmul: both operands need at least 2 axes, got ", a.shape(),
                " and ", b.shape());
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  const int64_t M = ta ? sa[-1] : sa[-2], Ka = ta ? sa[-2] : sa[-1];
  const int64_t Kb = tb ? sb[-1] : sb[-2], N = tb ? sb[-2] : sb[-1];
  SOFTLAB_CHECK(Ka == Kb, "matmul: inner dimensions differ: a ", sa, (ta ? " (transposed)" : ""), " has K = ", Ka,
                ", b ", sb, (tb ? " (transposed)" : ""), " has K = ", Kb);
  MatmulPlan p;
  p.g.m = M;
  p.g.n = N;
  p.g.k = Ka;
  p.g.trans_a = ta;
  p.g.trans_b = tb;
  std::vector<int64_t> batch_a(sa.dims().begin(), sa.dims().end() - 2);
  std::vector<int64_t> batch_b(sb.dims().begin(), sb.dims().end() - 2);
  int64_t batch = 1;
  for (int64_t d : batch_a) batch *= d;
  if (batch_b.empty()) {
    p.g.b_shared = true;
    if (!ta) {  // fold the batch into M: one large GEMM instead of many small ones
      p.g.m = M * batch;
      batch = 1;
    }
  } else {
    SOFTLAB_CHECK(batch_a == batch_b, "matmul: batch dimensions differ: ", sa, " and ", sb,
                  " (they must be equal, or b must be 2-D)");
  }
  p.g.batch = batch;
  std::vector<int64_t> od = batch_a;
  od.push_back(M);
  od.push_back(N);
  p.out = Shape(std::move(od));
  return p;
}

Tensor matmul_forward(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  MatmulPlan p = plan_matmul(a, b, ta, tb);
  Tensor out = empty(p.out);
  p.g.a = a.data();
  p.g.b = b.data();
  p.g.c = out.mutable_data();
  kernels::gemm(p.g);
  return out;
}

// Sums [batch..., R, C] over its batch axes to [R, C]: the gradient of a shared 2-D b.
Tensor sum_batches(const Tensor& t) {
  if (t.rank() == 2) return t;
  return detail::sum_to(t, Shape{t.shape()[-2], t.shape()[-1]});
}

struct MatmulNode final : Node {
  Saved a, b;
  bool ta, tb;
  const char* name() const override { return "matmul"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& A = a.get();
    const Tensor& B = b.get();
    Tensor ga, gb;
    // C = op(A) op(B): d op(A) = dC op(B)^T, d op(B) = op(A)^T dC.
    if (inputs[0]) {
      if (!ta) ga = matmul_forward(g, B, false, !tb);
      else if (B.rank() == 2 && A.rank() > 2)  // dA^T = dC op(B)^T, with B shared by the batch
        ga = transpose(matmul_forward(g, B, false, !tb), -1, -2);
      else ga = matmul_forward(B, g, tb, true);  // dA = op(B) dC^T
    }
    if (inputs[1]) {
      if (B.rank() == 2 && A.rank() > 2 && !ta) {
        // b shared and the batch folded into M: a 2-D product over all rows.
        const Tensor A2 = detail::view_as(A, Shape{A.numel() / A.shape()[-1], A.shape()[-1]});
        const Tensor G2 = detail::view_as(g, Shape{g.numel() / g.shape()[-1], g.shape()[-1]});
        gb = tb ? matmul_forward(G2, A2, true, false) : matmul_forward(A2, G2, true, false);
      } else {
        gb = tb ? matmul_forward(g, A, true, ta) : matmul_forward(A, g, !ta, false);
        if (B.rank() == 2) gb = sum_batches(gb);
      }
    }
    return {ga, gb};
  }
};
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  detail::check_defined(a, "matmul", "a");
  detail::check_defined(b, "matmul", "b");
  Tensor out = matmul_forward(a, b, trans_a, trans_b);
  if (needs_grad({&a, &b})) {
    auto node = std::make_shared<MatmulNode>();
    node->a = Saved(a);
    node->b = Saved(b);
    node->ta = trans_a;
    node->tb = trans_b;
    attach(out, node, {&a, &b});
  }
  return out;
}

// ---- linear ------------------------------------------------------------------------------

namespace {
struct LinearNode final : Node {
  Saved x, w;
  const char* name() const override { return "linear"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& X = x.get();
    const Tensor& W = w.get();
    const int64_t in = W.shape()[1], out = W.shape()[0];
    const int64_t rows = X.numel() / in;
    Tensor gx, gw, gb;
    if (inputs[0]) {  // dx = g W: [rows, out] x [out, in]
      gx = empty(X.shape());
      kernels::GemmArgs a;
      a.m = rows, a.n = in, a.k = out, a.a = g.data(), a.b = W.data(), a.c = gx.mutable_data();
      kernels::gemm(a);
    }
    if (inputs[1]) {  // dW = g^T x: [out, rows] x [rows, in]
      gw = empty(W.shape());
      kernels::GemmArgs a;
      a.m = out, a.n = in, a.k = rows, a.trans_a = true, a.a = g.data(), a.b = X.data(), a.c = gw.mutable_data();
      kernels::gemm(a);
    }
    if (inputs.size() > 2 && inputs[2]) {  // db = column sums of g, in row order per column
      gb = zeros(Shape{out});
      float* d = gb.mutable_data();
      const float* pg = g.data();
      for (int64_t r = 0; r < rows; ++r)  // row order, vectorised over columns: thread-count independent
        for (int64_t c = 0; c < out; ++c) d[c] += pg[r * out + c];
    }
    return {gx, gw, gb};
  }
};
}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  detail::check_defined(x, "linear", "x");
  detail::check_defined(weight, "linear", "weight");
  SOFTLAB_CHECK(weight.rank() == 2, "linear: weight must be [out, in], got shape ", weight.shape());
  const int64_t out_f = weight.shape()[0], in_f = weight.shape()[1];
  SOFTLAB_CHECK(x.rank() >= 1 && x.shape()[-1] == in_f, "linear: x of shape ", x.shape(),
                " does not end in the weight's in-features ", in_f, " (weight ", weight.shape(), ")");
  SOFTLAB_CHECK(!bias.defined() || bias.shape() == Shape{out_f}, "linear: bias of shape ", bias.shape(),
                " does not match the weight's out-features ", out_f, " (weight ", weight.shape(), ")");
  std::vector<int64_t> od = x.shape().dims();
  od.back() = out_f;
  Tensor y = empty(Shape(od));
  kernels::GemmArgs a;
  a.m = x.numel() / std::max<int64_t>(in_f, 1);
  if (in_f == 0) a.m = y.numel() / std::max<int64_t>(out_f, 1);
  a.n = out_f, a.k = in_f, a.trans_b = true, a.b_shared = true;
  a.a = x.data(), a.b = weight.data(), a.c = y.mutable_data();
  a.bias = bias.defined() ? bias.data() : nullptr;
  kernels::gemm(a);
  if (needs_grad({&x, &weight, &bias})) {
    auto node = std::make_shared<LinearNode>();
    node->x = Saved(x);
    node->w = Saved(weight);
    attach(y, node, {&x, &weight, &bias});
  }
  return y;
}

}  // namespace softlab
