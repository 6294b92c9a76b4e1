// The fused ops of the transformer block against the same maths composed from primitives
// (values and gradients), by finite differences, and across thread counts:
//   - the row-map attention modules reading q, k, v in place from the packed qkv projection
//     (attention/row_kernel.hpp, PackedQkvAttention) against split -> attention -> merge;
//   - bias_gelu (ops/fused.hpp) against gelu(add(h, b));
//   - the Mlp and SelfAttention modules, which now use both, against the primitive chain.
// bias_gelu's finite-difference rows are in test_gradcheck.cpp's table.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "attention/row_kernel.hpp"
#include "gradcheck.hpp"
#include "ops/fused.hpp"
#include "softlab/attention.hpp"
#include "softlab/nn/block.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;

namespace {

struct ThreadCountGuard {
  ~ThreadCountGuard() { set_num_threads(0); }
};

// Bit-for-bit equality of two float buffers (the packed path does the per-head path's
// arithmetic in the same order).
void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  int bad = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    if (std::memcmp(got.data() + i, want.data() + i, sizeof(float)) != 0) {
      ADD_FAILURE() << what << ": element " << i << " is " << got.data()[i] << ", want " << want.data()[i];
      if (++bad > 5) return;
    }
  }
}

void expect_close(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  int bad = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.data()[i], w = want.data()[i];
    if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w))) {
      ADD_FAILURE() << what << ": element " << i << " is " << g << ", want " << w;
      if (++bad > 5) return;
    }
  }
}

// ---- packed qkv attention -----------------------------------------------------------------

struct PackedCase {
  std::string type;
  bool causal;
  int64_t B, N, H, Dh;
};

std::string case_name(const PackedCase& c) {
  return c.type + (c.causal ? "_causal" : "") + "_B" + std::to_string(c.B) + "_N" + std::to_string(c.N) + "_H" +
         std::to_string(c.H) + "_Dh" + std::to_string(c.Dh);
}

std::unique_ptr<Attention> make_module(const PackedCase& c, Generator& init) {
  AttentionContext ctx;
  ctx.dim = c.H * c.Dh;
  ctx.heads = c.H;
  ctx.head_dim = c.Dh;
  ctx.seq_len = c.N;
  ctx.init = &init;
  return make_attention(json{{"type", c.type}, {"causal", c.causal}}, ctx);
}

// What Block did before the packed path: split the projection into per-head q, k, v, run
// the module on them, merge the heads back.
Tensor split_attend_merge(Attention& a, const Tensor& qkv, int64_t H) {
  const int64_t B = qkv.shape()[0], N = qkv.shape()[1], Dh = qkv.shape()[2] / (3 * H);
  Tensor t = permute(reshape(qkv, {B, N, 3, H, Dh}), {2, 0, 3, 1, 4});
  Tensor q = reshape(slice(t, 0, 0, 1), {B, H, N, Dh});
  Tensor k = reshape(slice(t, 0, 1, 2), {B, H, N, Dh});
  Tensor v = reshape(slice(t, 0, 2, 3), {B, H, N, Dh});
  return reshape(permute(a.forward(q, k, v), {0, 2, 1, 3}), {B, N, H * Dh});
}

class PackedAttention : public ::testing::TestWithParam<PackedCase> {};

TEST_P(PackedAttention, MatchesSplitPathBitForBit) {
  const PackedCase c = GetParam();
  Generator init(3);
  auto module = make_module(c, init);
  auto* packed = dynamic_cast<attention_kernel::PackedQkvAttention*>(module.get());
  ASSERT_NE(packed, nullptr) << c.type << " should take the packed qkv projection";

  Generator g(11);
  // Logits of order 1 after the Dh^-1/2 scale, so every map sees a spread of values.
  Tensor x = uniform({c.B, c.N, 3 * c.H * c.Dh}, g, -2.0f, 2.0f);
  Tensor x_packed = x.clone(), x_split = x.clone();
  x_packed.set_requires_grad(true);
  x_split.set_requires_grad(true);

  Tensor o_packed = packed->forward_packed(x_packed, c.H);
  Tensor o_split = split_attend_merge(*module, x_split, c.H);
  expect_same_bits(o_packed, o_split, "output");

  Tensor w = uniform(o_split.shape(), g, -1.0f, 1.0f);
  o_packed.backward(w);
  o_split.backward(w);
  expect_same_bits(x_packed.grad(), x_split.grad(), "d qkv");
}

TEST_P(PackedAttention, SameBitsForOneAndTwoThreads) {
  const PackedCase c = GetParam();
  ThreadCountGuard guard;
  std::vector<Tensor> outs, grads;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Generator init(3);
    auto module = make_module(c, init);
    auto* packed = dynamic_cast<attention_kernel::PackedQkvAttention*>(module.get());
    ASSERT_NE(packed, nullptr);
    Generator g(5);
    Tensor x = uniform({c.B, c.N, 3 * c.H * c.Dh}, g, -2.0f, 2.0f);
    x.set_requires_grad(true);
    Tensor o = packed->forward_packed(x, c.H);
    o.backward(uniform(o.shape(), g, -1.0f, 1.0f));
    outs.push_back(o.detach());
    grads.push_back(x.grad());
  }
  expect_same_bits(outs[1], outs[0], "output, 2 threads vs 1");
  expect_same_bits(grads[1], grads[0], "d qkv, 2 threads vs 1");
}

const PackedCase kPackedCases[] = {
    {"softmax", false, 2, 5, 2, 4},      // tiny: one partial row block
    {"softmax", false, 3, 17, 4, 16},    // the Fashion-MNIST ViT's heads
    {"softmax", true, 2, 37, 3, 17},     // Dh not a multiple of the 16-wide tile; causal
    {"softmax", false, 1, 65, 3, 64},    // the CIFAR ViT's heads (N > 32: several items per head)
    {"sigmoid", false, 2, 17, 4, 16},
    {"sigmoid", true, 2, 9, 2, 8},
    {"softplus", false, 2, 17, 2, 8},
    {"relu", false, 2, 17, 2, 8},
    {"power", true, 2, 17, 2, 8},
};
INSTANTIATE_TEST_SUITE_P(RowMaps, PackedAttention, ::testing::ValuesIn(kPackedCases),
                         [](const ::testing::TestParamInfo<PackedCase>& i) { return case_name(i.param); });

// Finite differences straight on the packed op (the default tolerances of gradcheck.hpp).
TEST(PackedAttentionGradcheck, SoftmaxSigmoidCausal) {
  for (const PackedCase& c : {PackedCase{"softmax", false, 2, 5, 2, 4}, PackedCase{"softmax", true, 1, 9, 2, 3},
                              PackedCase{"sigmoid", false, 2, 4, 3, 2}, PackedCase{"power", true, 1, 6, 2, 4}}) {
    SCOPED_TRACE(case_name(c));
    Generator init(3);
    auto module = make_module(c, init);
    auto* packed = dynamic_cast<attention_kernel::PackedQkvAttention*>(module.get());
    ASSERT_NE(packed, nullptr);
    const int64_t H = c.H;
    auto res = test::gradcheck([&](const std::vector<Tensor>& x) { return packed->forward_packed(x[0], H); },
                               {test::param({c.B, c.N, 3 * c.H * c.Dh}, 21)});
    EXPECT_TRUE(res.ok) << res.report;
  }
}

TEST(PackedAttention, RejectsBadShapes) {
  Generator init(3);
  auto module = make_module({"softmax", false, 2, 5, 2, 4}, init);
  auto* packed = dynamic_cast<attention_kernel::PackedQkvAttention*>(module.get());
  ASSERT_NE(packed, nullptr);
  EXPECT_THROW(packed->forward_packed(zeros({2, 5, 23}), 2), Error);  // 23 is not 3 x 2 x Dh
  EXPECT_THROW(packed->forward_packed(zeros({10, 24}), 2), Error);    // not [B, N, C]
  EXPECT_THROW(packed->forward_packed(zeros({2, 5, 24}), 0), Error);
}

TEST(PackedAttention, EmptyBatch) {
  Generator init(3);
  auto module = make_module({"softmax", false, 2, 5, 2, 4}, init);
  auto* packed = dynamic_cast<attention_kernel::PackedQkvAttention*>(module.get());
  ASSERT_NE(packed, nullptr);
  Tensor x = zeros({0, 5, 24});
  x.set_requires_grad(true);
  Tensor o = packed->forward_packed(x, 2);
  EXPECT_EQ(o.shape(), (Shape{0, 5, 8}));
}

// SelfAttention takes the packed path for a row-map module: the same values and parameter
// gradients as the primitive chain built from its own weights.
TEST(SelfAttentionPacked, MatchesPrimitiveChain) {
  const int64_t B = 3, N = 17, D = 64, H = 4;
  Generator init(9);
  AttentionContext ctx;
  ctx.dim = D;
  ctx.heads = H;
  ctx.head_dim = D / H;
  ctx.seq_len = N;
  ctx.init = &init;
  nn::BlockOptions opt;
  opt.dim = D;
  opt.heads = H;
  nn::SelfAttention sa(opt, make_attention(json{{"type", "softmax"}}, ctx), init);
  Generator g(4);
  Tensor x = uniform({B, N, D}, g, -1.0f, 1.0f);
  Tensor w = uniform({B, N, D}, g, -1.0f, 1.0f);

  Tensor y = sa.forward(x);
  y.backward(w);
  std::vector<Tensor> fused_grads;
  for (const auto& p : sa.parameters()) fused_grads.push_back(p.tensor.grad().clone());
  for (auto p : sa.parameters()) p.tensor.zero_grad();

  Tensor y_ref = linear(split_attend_merge(*sa.attn, linear(x, sa.qkv->weight, sa.qkv->bias), H), sa.proj->weight,
                        sa.proj->bias);
  y_ref.backward(w);
  expect_same_bits(y, y_ref, "SelfAttention output");
  const auto params = sa.parameters();
  for (size_t i = 0; i < params.size(); ++i) expect_same_bits(fused_grads[i], params[i].tensor.grad(), params[i].name);
}

// ---- bias + GELU --------------------------------------------------------------------------

TEST(BiasGelu, MatchesGeluOfAdd) {
  for (const Shape& s : {Shape{2176, 128}, Shape{3, 5, 7}, Shape{1, 33}, Shape{17}}) {
    SCOPED_TRACE(s.str());
    const int64_t C = s[-1];
    Generator g(6);
    Tensor h = uniform(s, g, -4.0f, 4.0f), b = uniform({C}, g, -1.0f, 1.0f);
    Tensor h1 = h.clone(), b1 = b.clone(), h2 = h.clone(), b2 = b.clone();
    for (Tensor* t : {&h1, &b1, &h2, &b2}) t->set_requires_grad(true);
    Tensor y_fused = bias_gelu(h1, b1);
    Tensor y_ref = gelu(add(h2, b2), GeluKind::Tanh);
    // Same float operations element by element: h + b, then the shared tanh-GELU.
    expect_close(y_fused, y_ref, 0.0, 1e-6, "y");
    Tensor w = uniform(s, g, -1.0f, 1.0f);
    y_fused.backward(w);
    y_ref.backward(w);
    expect_close(h1.grad(), h2.grad(), 0.0, 1e-6, "dh");
    // db: the fused op sums blocks of 32 rows and then the blocks, the reference sums the
    // rows in order; over up to 2176 rows of |d| < ~1.1 the two orders differ by ~1e-5.
    expect_close(b1.grad(), b2.grad(), 2e-4, 1e-5, "db");
  }
}

TEST(BiasGelu, OnlyOneInputNeedsGrad) {
  Generator g(8);
  Tensor h = uniform({4, 6}, g), b = uniform({6}, g);
  b.set_requires_grad(true);
  Tensor y = bias_gelu(h, b);
  y.backward(ones({4, 6}));
  EXPECT_FALSE(h.grad().defined());
  ASSERT_TRUE(b.grad().defined());
  Tensor h2 = uniform({4, 6}, g);
  h2.set_requires_grad(true);
  Tensor b2 = uniform({6}, g);
  bias_gelu(h2, b2).backward(ones({4, 6}));
  EXPECT_TRUE(h2.grad().defined());
  EXPECT_FALSE(b2.grad().defined());
}

TEST(BiasGelu, RejectsMismatchedBias) {
  EXPECT_THROW(bias_gelu(zeros({3, 4}), zeros({3})), Error);
  EXPECT_THROW(bias_gelu(zeros({3, 4}), zeros({1, 4})), Error);
  EXPECT_THROW(bias_gelu(zeros({3, 4}), Tensor()), Error);
}

TEST(BiasGelu, SameBitsForOneAndTwoThreads) {
  ThreadCountGuard guard;
  std::vector<Tensor> ys, dhs, dbs;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Generator g(12);
    Tensor h = uniform({2176, 128}, g, -3.0f, 3.0f), b = uniform({128}, g);
    h.set_requires_grad(true);
    b.set_requires_grad(true);
    Tensor y = bias_gelu(h, b);
    y.backward(uniform(y.shape(), g, -1.0f, 1.0f));
    ys.push_back(y.detach());
    dhs.push_back(h.grad());
    dbs.push_back(b.grad());
  }
  expect_same_bits(ys[1], ys[0], "y");
  expect_same_bits(dhs[1], dhs[0], "dh");
  expect_same_bits(dbs[1], dbs[0], "db");
}

// The Mlp with the fused bias + GELU against fc2(gelu(fc1(x))) from primitives.
TEST(MlpFused, MatchesPrimitiveChain) {
  Generator init(2);
  nn::Mlp mlp(64, 128, init);
  Generator g(3);
  Tensor x = uniform({4, 17, 64}, g, -1.0f, 1.0f);
  x.set_requires_grad(true);
  Tensor w = uniform({4, 17, 64}, g, -1.0f, 1.0f);
  Tensor y = mlp.forward(x);
  y.backward(w);
  const Tensor dx = x.grad().clone();
  std::vector<Tensor> grads;
  for (const auto& p : mlp.parameters()) grads.push_back(p.tensor.grad().clone());
  for (auto p : mlp.parameters()) p.tensor.zero_grad();
  x.zero_grad();
  Tensor y_ref = linear(gelu(linear(x, mlp.fc1->weight, mlp.fc1->bias), GeluKind::Tanh), mlp.fc2->weight,
                        mlp.fc2->bias);
  y_ref.backward(w);
  // The reference adds fc1's bias inside the GEMM, the fused op after it: last-bit
  // differences in the pre-activation, nothing more.
  expect_close(y, y_ref, 1e-6, 1e-5, "y");
  expect_close(dx, x.grad(), 1e-6, 1e-5, "dx");
  const auto params = mlp.parameters();
  for (size_t i = 0; i < params.size(); ++i) expect_close(grads[i], params[i].tensor.grad(), 1e-6, 1e-5, params[i].name);
}

// ---- layer norm: vectorised row sums, one-pass parameter gradients --------------------------

TEST(LayerNormBackward, SameBitsForOneAndTwoThreads) {
  ThreadCountGuard guard;
  std::vector<Tensor> dxs, dws, dbs;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Generator g(13);
    Tensor x = uniform({2176, 64}, g, -2.0f, 2.0f), gamma = uniform({64}, g, 0.5f, 1.5f), beta = uniform({64}, g);
    for (Tensor* t : {&x, &gamma, &beta}) t->set_requires_grad(true);
    Tensor y = layer_norm(x, gamma, beta, 1e-6f);
    y.backward(uniform(y.shape(), g, -1.0f, 1.0f));
    dxs.push_back(x.grad());
    dws.push_back(gamma.grad());
    dbs.push_back(beta.grad());
  }
  expect_same_bits(dxs[1], dxs[0], "dx");
  expect_same_bits(dws[1], dws[0], "dgamma");
  expect_same_bits(dbs[1], dbs[0], "dbeta");
}

}  // namespace
