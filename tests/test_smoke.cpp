#include <gtest/gtest.h>

#include "gradcheck.hpp"

using namespace softlab;

TEST(Smoke, MatmulGradcheck) {
  auto a = test::param({3, 4}, 1), b = test::param({4, 5}, 2);
  auto r = test::gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); }, {a, b});
  EXPECT_TRUE(r.ok) << r.report;
}
