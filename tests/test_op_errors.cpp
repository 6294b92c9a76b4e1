// Every op rejects bad arguments with softlab::Error (kind BadInput) whose message names
// the op and the shapes involved, so the user can see which operand is wrong.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "softlab/softlab.hpp"

using namespace softlab;

namespace {

struct ErrCase {
  std::string name;
  std::function<void()> call;
  std::vector<std::string> must_contain;  // substrings of the message
};

Tensor t(const Shape& s) { return zeros(s); }

void expect_error(const ErrCase& c) {
  SCOPED_TRACE(c.name);
  try {
    c.call();
    ADD_FAILURE() << c.name << ": no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), Error::Kind::BadInput) << msg;
    for (const std::string& part : c.must_contain)
      EXPECT_NE(msg.find(part), std::string::npos) << c.name << ": message \"" << msg << "\" does not contain \""
                                                   << part << "\"";
  } catch (const std::exception& e) {
    ADD_FAILURE() << c.name << ": threw a " << typeid(e).name() << " instead of softlab::Error: " << e.what();
  }
}

const std::vector<int32_t> kIdx = {1, 4};
const std::vector<int32_t> kNeg = {0, -1};
const std::vector<int32_t> kLabels = {0, 5};
const std::vector<int32_t> kLabelsNeg = {-1, 0};
const std::vector<int32_t> kThree = {0, 1, 2};

std::vector<ErrCase> cases() {
  return {
      // ---- broadcasting binary ops
      {"add", [] { add(t({2, 3}), t({4})); }, {"add", "[2, 3]", "[4]"}},
      {"sub", [] { sub(t({3, 2}), t({2, 3})); }, {"sub", "[3, 2]", "[2, 3]"}},
      {"mul", [] { mul(t({2, 3, 4}), t({3, 3})); }, {"mul", "[2, 3, 4]", "[3, 3]"}},
      {"div", [] { div(t({5}), t({4})); }, {"div", "[5]", "[4]"}},
      {"operator+", [] { (void)(t({2, 1, 3}) + t({2, 4, 2})); }, {"[2, 1, 3]", "[2, 4, 2]"}},
      {"broadcast_shapes", [] { broadcast_shapes(Shape{7, 3}, Shape{2, 1, 4}); }, {"[7, 3]", "[2, 1, 4]"}},
      {"add undefined", [] { add(Tensor(), t({2})); }, {"add", "undefined"}},

      // ---- matmul / linear
      {"matmul inner", [] { matmul(t({3, 4}), t({5, 6})); }, {"matmul", "[3, 4]", "[5, 6]"}},
      {"matmul inner trans_a", [] { matmul(t({3, 4}), t({3, 6}), true, true); }, {"matmul", "[3, 4]", "[3, 6]"}},
      {"matmul batch", [] { matmul(t({2, 3, 4}), t({3, 4, 5})); }, {"matmul", "[2, 3, 4]", "[3, 4, 5]"}},
      {"matmul a 2-D b 3-D", [] { matmul(t({3, 4}), t({2, 4, 5})); }, {"matmul", "[3, 4]", "[2, 4, 5]"}},
      {"matmul rank 1", [] { matmul(t({4}), t({4, 5})); }, {"matmul", "[4]", "[4, 5]"}},
      {"linear in-features", [] { linear(t({3, 4}), t({5, 6})); }, {"linear", "[3, 4]", "[5, 6]"}},
      {"linear bias", [] { linear(t({3, 4}), t({5, 4}), t({3})); }, {"linear", "[3]", "[5, 4]"}},
      {"linear weight 1-D", [] { linear(t({3, 4}), t({4})); }, {"linear", "[4]"}},

      // ---- unary / reductions / softmax
      {"sum axis", [] { sum(t({3, 4}), 2); }, {"axis 2", "[3, 4]"}},
      {"mean axis", [] { mean(t({3, 4}), -3); }, {"axis -3", "[3, 4]"}},
      {"max empty axis", [] { max(t({3, 0}), 1); }, {"max", "[3, 0]"}},
      {"max all of empty", [] { max(t({0})); }, {"max", "[0]"}},
      {"softmax scalar", [] { softmax(t({})); }, {"softmax", "[]"}},
      {"log_softmax scalar", [] { log_softmax(t({})); }, {"log_softmax", "[]"}},
      {"exp undefined", [] { exp(Tensor()); }, {"exp", "undefined"}},

      // ---- layer_norm
      {"layer_norm gamma", [] { layer_norm(t({3, 5}), t({4}), Tensor()); }, {"layer_norm", "[4]", "[3, 5]"}},
      {"layer_norm beta", [] { layer_norm(t({3, 5}), t({5}), t({5, 1})); }, {"layer_norm", "[5, 1]", "[3, 5]"}},
      {"layer_norm scalar", [] { layer_norm(t({}), Tensor(), Tensor()); }, {"layer_norm", "[]"}},

      // ---- shape ops
      {"reshape numel", [] { reshape(t({2, 3}), Shape{4, 2}); }, {"reshape", "[2, 3]", "[4, 2]"}},
      {"transpose axis", [] { transpose(t({2, 3}), 0, 2); }, {"axis 2", "[2, 3]"}},
      {"permute length", [] { permute(t({2, 3, 4}), {0, 1}); }, {"permute", "[2, 3, 4]"}},
      {"permute repeated", [] { permute(t({2, 3, 4}), {0, 1, 1}); }, {"permute", "[2, 3, 4]"}},
      {"slice end", [] { slice(t({3, 4}), 1, 2, 5); }, {"slice", "[3, 4]", "[2, 5)"}},
      {"slice start > end", [] { slice(t({3, 4}), 0, 2, 1); }, {"slice", "[3, 4]", "[2, 1)"}},
      {"slice negative start", [] { slice(t({3, 4}), 0, -1, 2); }, {"slice", "[3, 4]"}},
      {"slice axis", [] { slice(t({3, 4}), 2, 0, 1); }, {"axis 2", "[3, 4]"}},
      {"concat mismatch", [] { concat({t({2, 3}), t({2, 4})}, 0); }, {"concat", "[2, 3]", "[2, 4]"}},
      {"concat rank", [] { concat({t({2, 3}), t({2, 3, 1})}, 1); }, {"concat", "[2, 3]", "[2, 3, 1]"}},
      {"concat third", [] { concat({t({2, 3}), t({1, 3}), t({1, 2})}, 0); }, {"concat", "tensor 2", "[2, 3]", "[1, 2]"}},
      {"concat empty list", [] { concat({}, 0); }, {"concat"}},
      {"index_select range", [] { index_select(t({4, 3}), kIdx, Shape{2}); }, {"index_select", "4", "[4, 3]"}},
      {"index_select negative", [] { index_select(t({4, 3}), kNeg, Shape{2}); }, {"index_select", "-1", "[4, 3]"}},
      {"index_select count", [] { index_select(t({4, 3}), kIdx, Shape{2, 2}); }, {"index_select", "[2, 2]"}},
      {"index_select scalar x", [] { index_select(t({}), kIdx, Shape{2}); }, {"index_select", "[]"}},
      {"embedding weight rank", [] { embedding(t({4, 3, 2}), kIdx, Shape{2}); }, {"embedding", "[4, 3, 2]"}},
      {"embedding token range", [] { embedding(t({4, 3}), kIdx, Shape{2}); }, {"4", "[4, 3]"}},

      // ---- cross_entropy
      {"cross_entropy label", [] { cross_entropy(t({2, 5}), kLabels); }, {"cross_entropy", "5", "[2, 5]"}},
      {"cross_entropy negative label", [] { cross_entropy(t({2, 5}), kLabelsNeg); }, {"cross_entropy", "-1", "[2, 5]"}},
      {"cross_entropy label count", [] { cross_entropy(t({2, 5}), kThree); }, {"cross_entropy", "3", "[2, 5]"}},
      {"cross_entropy rank", [] { cross_entropy(t({5}), kLabels); }, {"cross_entropy", "[5]"}},
      {"cross_entropy smoothing", [] { cross_entropy(t({2, 5}), std::vector<int32_t>{0, 1}, 1.0f); },
       {"cross_entropy", "label_smoothing"}},

      // ---- backward
      {"backward grad_output shape", [] {
         Tensor x = t({2, 3});
         x.set_requires_grad(true);
         scale(x, 2.0f).backward(t({3, 2}));
       }, {"[3, 2]", "[2, 3]"}},
      {"backward non-scalar", [] {
         Tensor x = t({2, 3});
         x.set_requires_grad(true);
         scale(x, 2.0f).backward();
       }, {"[2, 3]"}},
  };
}

TEST(OpErrors, MessagesNameTheShapes) {
  for (const ErrCase& c : cases()) expect_error(c);
}

// The tape itself: a node whose backward returns a gradient of the wrong shape is rejected
// when it is accumulated, with both shapes and the op's name in the message.
struct BadShapeNode final : Node {
  const char* name() const override { return "test_bad_shape"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {zeros(Shape{3})}; }
};

TEST(OpErrors, BackwardGradientShapeMismatch) {
  Tensor x = zeros(Shape{2, 3});
  x.set_requires_grad(true);
  Tensor y = zeros(Shape{2, 3});
  attach(y, std::make_shared<BadShapeNode>(), {&x});
  try {
    y.backward(ones(Shape{2, 3}));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("test_bad_shape"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2, 3]"), std::string::npos) << msg;
  }
}

// A tensor saved for backward and modified in place afterwards is refused, not silently used.
TEST(OpErrors, SavedTensorModifiedInPlace) {
  Tensor a = full(Shape{2, 2}, 2.0f), b = full(Shape{2, 2}, 3.0f);
  a.set_requires_grad(true);
  Tensor y = mul(a, b);
  b.mutable_data()[0] = 5.0f;
  try {
    sum(y).backward();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 2]"), std::string::npos) << e.what();
  }
}

// Errors leave no half-built graph behind.
TEST(OpErrors, NoLeakedNodesAfterErrors) {
  const int64_t before = Node::live_count();
  {
    Tensor a = zeros(Shape{2, 3});
    a.set_requires_grad(true);
    for (int i = 0; i < 3; ++i) {
      EXPECT_THROW(add(a, zeros(Shape{4})), Error);
      EXPECT_THROW(matmul(a, zeros(Shape{4, 2})), Error);
      EXPECT_THROW(layer_norm(a, zeros(Shape{2}), Tensor()), Error);
    }
  }
  EXPECT_EQ(Node::live_count(), before);
}

}  // namespace
