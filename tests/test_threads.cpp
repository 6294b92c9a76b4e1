// Determinism across thread counts: every op gives the same values (within rounding) with 1
// and 2 threads, and bit-identical values when run twice with the same thread count.
// Shapes are chosen large enough that parallel_for really splits the work in two.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "ops/gemm.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;

namespace {

// Restores the default thread count however the test ends.
struct ThreadsGuard {
  ~ThreadsGuard() { set_num_threads(0); }
};

using Outputs = std::vector<std::vector<float>>;  // forward output, then the gradients

Tensor input(const Shape& s, uint64_t seed, bool grad = true, float lo = -1.0f, float hi = 1.0f) {
  Generator g(seed);
  Tensor t = uniform(s, g, lo, hi);
  t.set_requires_grad(grad);
  return t;
}

// Runs y = f(inputs), then y.backward(w) with a fixed upstream gradient, and collects
// y and the gradients of the inputs that require grad.
Outputs forward_backward(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs) {
  Tensor y = f(inputs);
  Generator g(4321);
  const Tensor w = uniform(y.shape(), g, -1.0f, 1.0f);
  y.backward(w);
  Outputs out{y.to_vector()};
  for (const Tensor& x : inputs)
    if (x.requires_grad()) out.push_back(x.grad().to_vector());
  return out;
}

using Run = std::function<Outputs()>;

Outputs run_with(int threads, const Run& run) {
  set_num_threads(threads);
  EXPECT_EQ(num_threads(), threads);
  return run();
}

void expect_near_outputs(const Outputs& a, const Outputs& b, double rtol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    ASSERT_EQ(a[k].size(), b[k].size()) << "output " << k;
    double scale = 0.0;  // per-output scale, so values near zero are judged against the rest
    for (float v : a[k]) scale = std::max(scale, static_cast<double>(std::fabs(v)));
    int bad = 0;
    for (size_t i = 0; i < a[k].size() && bad < 5; ++i) {
      const double tol = rtol * std::max(1e-3, std::max(static_cast<double>(std::fabs(a[k][i])), 1e-2 * scale));
      if (!(std::fabs(static_cast<double>(a[k][i]) - b[k][i]) <= tol)) {
        ADD_FAILURE() << "output " << k << " element " << i << ": 1 thread " << a[k][i] << ", 2 threads " << b[k][i];
        ++bad;
      }
    }
  }
}

void expect_bit_identical(const Outputs& a, const Outputs& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    ASSERT_EQ(a[k].size(), b[k].size()) << "output " << k;
    EXPECT_EQ(std::memcmp(a[k].data(), b[k].data(), a[k].size() * sizeof(float)), 0)
        << "output " << k << " differs between two runs with the same thread count";
  }
}

// The whole check for one op: 1 vs 2 threads near, and 2x2 threads and 2x1 thread identical.
void check_deterministic(const Run& run) {
  ThreadsGuard guard;
  const Outputs one = run_with(1, run);
  const Outputs one_again = run_with(1, run);
  const Outputs two = run_with(2, run);
  const Outputs two_again = run_with(2, run);
  expect_near_outputs(one, two, 1e-5);
  expect_bit_identical(one, one_again);
  expect_bit_identical(two, two_again);
}

TEST(Threads, Matmul) {
  check_deterministic([] {
    return forward_backward([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
                            {input({4, 67, 48}, 1), input({4, 48, 41}, 2)});
  });
  // shared b, transposed operands
  check_deterministic([] {
    return forward_backward([](const std::vector<Tensor>& x) { return matmul(x[0], x[1], true, true); },
                            {input({3, 48, 65}, 3), input({33, 48}, 4)});
  });
}

TEST(Threads, Linear) {
  check_deterministic([] {
    return forward_backward([](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); },
                            {input({8, 33, 48}, 5), input({70, 48}, 6), input({70}, 7)});
  });
}

TEST(Threads, Softmax) {
  check_deterministic([] {
    return forward_backward([](const std::vector<Tensor>& x) { return softmax(x[0]); },
                            {input({300, 37}, 8, true, -5.0f, 5.0f)});
  });
  check_deterministic([] {
    return forward_backward([](const std::vector<Tensor>& x) { return log_softmax(x[0]); },
                            {input({3, 100, 37}, 9, true, -5.0f, 5.0f)});
  });
}

TEST(Threads, LayerNorm) {
  check_deterministic([] {
    return forward_backward([](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2]); },
                            {input({2, 150, 67}, 10, true, -3.0f, 3.0f), input({67}, 11, true, 0.5f, 1.5f),
                             input({67}, 12)});
  });
}

TEST(Threads, SumOverAxis) {
  for (int64_t axis : {0, 1, 2}) {
    SCOPED_TRACE(axis);
    check_deterministic([axis] {
      return forward_backward([axis](const std::vector<Tensor>& x) { return sum(x[0], axis); },
                              {input({64, 50, 7}, 13)});
    });
  }
  check_deterministic([] {
    return forward_backward([](const std::vector<Tensor>& x) { return mean(x[0], -1, true); },
                            {input({64, 50, 7}, 14)});
  });
  check_deterministic([] {
    return forward_backward([](const std::vector<Tensor>& x) { return max(x[0], 1); }, {input({64, 50, 7}, 15)});
  });
}

TEST(Threads, CrossEntropy) {
  std::vector<int32_t> labels(300);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>((i * 7) % 11);
  for (float eps : {0.0f, 0.1f}) {
    SCOPED_TRACE(eps);
    check_deterministic([&labels, eps] {
      return forward_backward([&labels, eps](const std::vector<Tensor>& x) { return cross_entropy(x[0], labels, eps); },
                              {input({300, 11}, 16, true, -4.0f, 4.0f)});
    });
  }
}

TEST(Threads, ElementwiseAndBroadcast) {
  // More than one 16k-element chunk, so the element-wise maps split too.
  check_deterministic([] {
    return forward_backward(
        [](const std::vector<Tensor>& x) { return gelu(mul(add(x[0], x[1]), x[2])); },
        {input({300, 130}, 17), input({130}, 18), input({300, 1}, 19)});
  });
}

TEST(Threads, EmbeddingWithRepeatedIndices) {
  std::vector<int32_t> tokens(2000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 13) % 50);
  check_deterministic([&tokens] {
    return forward_backward(
        [&tokens](const std::vector<Tensor>& x) { return embedding(x[0], tokens, Shape{40, 50}); },
        {input({50, 600}, 20)});
  });
}

// oneDNN fixes a primitive's thread count when the primitive is created, so the gemm cache
// keeps one primitive per thread count: otherwise a primitive first made under
// set_num_threads(1) would run single-threaded for the rest of the process.
TEST(Threads, GemmPrimitivePerThreadCount) {
  ThreadsGuard guard;
  Generator gen(1);
  const Tensor a = uniform(Shape{23, 29}, gen), b = uniform(Shape{29, 5}, gen);  // a shape no other test uses
  set_num_threads(1);
  (void)matmul(a, b);
  const int64_t s1 = kernels::gemm_cache_size();
  (void)matmul(a, b);
  EXPECT_EQ(kernels::gemm_cache_size(), s1);
  set_num_threads(2);
  (void)matmul(a, b);
  EXPECT_EQ(kernels::gemm_cache_size(), s1 + 1) << "a primitive made for 1 thread was reused for 2";
  set_num_threads(1);
  (void)matmul(a, b);
  EXPECT_EQ(kernels::gemm_cache_size(), s1 + 1);
}

TEST(Threads, SetNumThreadsZeroRestoresDefault) {
  ThreadsGuard guard;
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  set_num_threads(0);
  EXPECT_EQ(num_threads(), default_num_threads());
}

}  // namespace
