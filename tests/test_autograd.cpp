// The tape: accumulation, shared inputs, diamonds, NoGradGuard, graph freeing, saved-
// tensor versions, retain_grad, detach, and no graph memory kept across steps.
#include <gtest/gtest.h>

#include <map>

#include "softlab/softlab.hpp"

using namespace softlab;

namespace {
Tensor leaf(std::vector<float> v) {
  Tensor t = from_vector({static_cast<int64_t>(v.size())}, v);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST(Autograd, SharedInputAccumulates) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = sum(mul(x, x));  // d/dx = 2x
  y.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 4, 6}));
  // A second, fresh graph accumulates into the existing gradient.
  sum(add(x, x)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{4, 6, 8}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, DiamondGraph) {
  // a -> b = 2a, c = a^2 -> d = b * c = 2a^3; dd/da = 6a^2
  Tensor a = leaf({1, -2, 0.5});
  Tensor b = scale(a, 2.0f);
  Tensor c = mul(a, a);
  sum(mul(b, c)).backward();
  const auto g = a.grad().to_vector();
  EXPECT_FLOAT_EQ(g[0], 6.0f);
  EXPECT_FLOAT_EQ(g[1], 24.0f);
  EXPECT_FLOAT_EQ(g[2], 1.5f);
}

TEST(Autograd, ExplicitUpstreamGradient) {
  Tensor x = leaf({1, 2});
  Tensor y = scale(x, 3.0f);
  y.backward(from_vector({2}, {1, 10}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{3, 30}));
  Tensor z = scale(x, 1.0f);
  EXPECT_THROW(z.backward(), Error);                   // not a scalar
  EXPECT_THROW(z.backward(zeros({3})), Error);         // wrong shape
}

TEST(Autograd, BackwardThroughLeafDirectly) {
  Tensor x = leaf({1, 2});
  x.backward(from_vector({2}, {5, 6}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{5, 6}));
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  const int64_t before = Node::live_count();
  Tensor x = leaf({1, 2, 3});
  Tensor y;
  {
    NoGradGuard g;
    EXPECT_FALSE(grad_enabled());
    y = sum(exp(mul(x, x)));
    EXPECT_EQ(Node::live_count(), before);
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_THROW(y.backward(), Error);
}

TEST(Autograd, GraphIsFreedAfterBackwardAndNodeCountReturns) {
  const int64_t before = Node::live_count();
  Tensor w = leaf({0.5, -0.25});
  for (int step = 0; step < 5; ++step) {
    Tensor loss = sum(tanh(mul(w, w)));
    EXPECT_GT(Node::live_count(), before);
    loss.backward();
    // The graph is released by backward even while `loss` is still alive.
    EXPECT_EQ(Node::live_count(), before);
    w.zero_grad();
  }
  EXPECT_EQ(Node::live_count(), before);
}

TEST(Autograd, UnusedGraphIsReleasedWithItsTensors) {
  const int64_t before = Node::live_count();
  Tensor w = leaf({1, 2});
  { Tensor t = exp(mul(w, w)); }
  EXPECT_EQ(Node::live_count(), before);
}

TEST(Autograd, SecondBackwardThroughFreedGraphThrows) {
  Tensor x = leaf({1, 2});
  Tensor y = sum(mul(x, x));
  y.backward();
  EXPECT_THROW(y.backward(), Error);
}

TEST(Autograd, InPlaceModificationOfSavedTensorIsDetected) {
  Tensor x = leaf({1, 2});
  Tensor y = exp(x);  // saves its output
  Tensor z = sum(y);
  y.mutable_data()[0] = 5.0f;  // modifies what exp's backward needs
  try {
    z.backward();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("modified in place"), std::string::npos) << e.what();
  }
}

TEST(Autograd, RetainGradOnNonLeaf) {
  Tensor x = leaf({1, 2});
  Tensor h = scale(x, 2.0f);
  h.retain_grad();
  Tensor m = scale(x, 3.0f);  // not retained
  sum(mul(h, m)).backward();
  ASSERT_TRUE(h.grad().defined());
  EXPECT_EQ(h.grad().to_vector(), (std::vector<float>{3, 6}));
  EXPECT_FALSE(m.grad().defined());
}

TEST(Autograd, DetachStopsGradient) {
  Tensor x = leaf({1, 2});
  Tensor y = sum(mul(x.detach(), x));  // d/dx = x (the detached factor is a constant)
  y.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{1, 2}));
}

TEST(Autograd, InputsWithoutGradGetNone) {
  Tensor x = leaf({1, 2});
  Tensor c = from_vector({2}, {3, 4});
  sum(mul(x, c)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{3, 4}));
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, SetRequiresGradOnNonLeafIsRejected) {
  Tensor x = leaf({1});
  Tensor y = exp(x);
  EXPECT_FALSE(y.is_leaf());
  EXPECT_THROW(y.set_requires_grad(false), Error);
}

TEST(Autograd, GradientBuffersAreNotAliased) {
  // add's backward hands the same upstream gradient to both inputs; each input must get
  // its own buffer, or a later accumulation into one would change the other.
  Tensor a = leaf({1, 1});
  Tensor b = leaf({1, 1});
  sum(add(a, b)).backward();
  EXPECT_FALSE(a.grad().same_storage(b.grad()));
  sum(scale(a, 5.0f)).backward();
  EXPECT_EQ(a.grad().to_vector(), (std::vector<float>{6, 6}));
  EXPECT_EQ(b.grad().to_vector(), (std::vector<float>{1, 1}));
}

TEST(Autograd, ReshapeViewGradientFlows) {
  Tensor x = from_vector({2, 3}, {1, 2, 3, 4, 5, 6}).set_requires_grad(true);
  Tensor y = reshape(x, {3, 2});
  EXPECT_TRUE(y.same_storage(x));  // reshape is free
  sum(mul(y, y)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
}

// The hooks data parallelism starts its allreduces from: each leaf is reported once, when
// its gradient is final (a leaf used by several nodes only after the last of them), in the
// order backward finishes them; after_node runs after every node.
TEST(Autograd, BackwardHooksReportEachLeafOnceWithItsFinalGradient) {
  Tensor w = leaf({1, 2, 3});     // used by the first op and by the last: final only at the end
  Tensor b = leaf({0.5, -1, 2});  // used once, late in the forward: finished first
  Tensor unused = leaf({7, 7, 7});
  const int64_t live_before = Node::live_count();
  Tensor h = mul(w, w);
  Tensor y = sum(add(mul(add(h, b), w), scale(unused, 0.0f)));
  const int64_t graph_nodes = Node::live_count() - live_before;
  std::vector<std::pair<TensorImpl*, std::vector<float>>> seen;
  int nodes = 0;
  {
    BackwardHookGuard guard({.leaf_done = [&](TensorImpl& t) { seen.emplace_back(&t, Tensor(t.grad).to_vector()); },
                             .after_node = [&] { ++nodes; }});
    y.backward();
  }
  ASSERT_EQ(seen.size(), 3u);
  std::map<TensorImpl*, std::vector<float>> at_report(seen.begin(), seen.end());
  ASSERT_EQ(at_report.size(), 3u) << "each leaf once";
  for (const Tensor* t : {&w, &b, &unused})
    EXPECT_EQ(at_report[t->impl().get()], t->grad().to_vector()) << "the gradient was final when reported";
  EXPECT_EQ(seen.back().first, w.impl().get()) << "w feeds the first op: the last to be finished";
  EXPECT_EQ(nodes, graph_nodes) << "one call per node of the graph";
  EXPECT_GE(nodes, 6);
  // No guard, no calls.
  seen.clear();
  sum(mul(w, b)).backward();
  EXPECT_TRUE(seen.empty());
}
