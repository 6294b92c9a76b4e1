// Shape, Storage, Tensor, factories and the random generator.
#include <gtest/gtest.h>

#include <cstring>

#include "softlab/softlab.hpp"

using namespace softlab;

TEST(Shape, BasicsAndNegativeAxes) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s[-1], 4);
  EXPECT_EQ(s[0], 2);
  EXPECT_EQ(s.axis(-3), 0);
  EXPECT_EQ(s.str(), "[2, 3, 4]");
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_THROW(s[3], Error);
  EXPECT_THROW(s.axis(-4), Error);
  EXPECT_THROW(Shape({2, -1}), Error);
}

TEST(Tensor, FactoriesAndAccess) {
  Tensor z = zeros({2, 3});
  for (float v : z.values()) EXPECT_EQ(v, 0.0f);
  Tensor o = ones({4});
  for (float v : o.values()) EXPECT_EQ(v, 1.0f);
  Tensor f = full({2, 2}, 2.5f);
  EXPECT_EQ(f.at({1, 1}), 2.5f);
  Tensor d = from_vector({2, 3}, {0, 1, 2, 3, 4, 5});
  EXPECT_EQ(d.at({1, 2}), 5.0f);
  EXPECT_EQ(d.at({0, 1}), 1.0f);
  d.set({0, 1}, 7.0f);
  EXPECT_EQ(d.data()[1], 7.0f);
  EXPECT_EQ(scalar(3.0f).item(), 3.0f);
  EXPECT_EQ(scalar(3.0f).rank(), 0);
  EXPECT_EQ(arange(5).at({4}), 4.0f);
  EXPECT_THROW(d.item(), Error);
  EXPECT_THROW(d.at({2, 0}), Error);
  EXPECT_THROW(d.at({0}), Error);
  EXPECT_THROW(from_vector({2, 2}, {1, 2, 3}), Error);
  // Storage is 64-byte aligned for vector loads.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(zeros({5}).data()) % 64, 0u);
}

TEST(Tensor, UndefinedTensorGivesError) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_THROW(t.shape(), Error);
  EXPECT_THROW(exp(t), Error);
}

TEST(Tensor, ToStringShowsShapeAndValues) {
  Tensor d = from_vector({2, 2}, {1, 2, 3, 4});
  const std::string s = d.to_string();
  EXPECT_NE(s.find("[2, 2]"), std::string::npos);
  EXPECT_NE(s.find("[[1, 2], [3, 4]]"), std::string::npos);
  Tensor big = zeros({100});
  EXPECT_NE(big.to_string().find("..."), std::string::npos);
}

TEST(Tensor, CloneAndDetachDiffer) {
  Tensor a = from_vector({3}, {1, 2, 3}).set_requires_grad(true);
  Tensor d = a.detach();
  Tensor c = a.clone();
  EXPECT_TRUE(d.same_storage(a));
  EXPECT_FALSE(c.same_storage(a));
  EXPECT_FALSE(d.requires_grad());
  EXPECT_FALSE(c.requires_grad());
  d.set({0}, 10.0f);
  EXPECT_EQ(a.at({0}), 10.0f);
  EXPECT_EQ(c.at({0}), 1.0f);
}

TEST(Tensor, VersionCounterBumpsOnMutation) {
  Tensor a = zeros({3});
  const uint64_t v0 = a.impl()->storage->version();
  a.mutable_data();
  EXPECT_GT(a.impl()->storage->version(), v0);
  const uint64_t v1 = a.impl()->storage->version();
  (void)a.data();  // reading does not
  EXPECT_EQ(a.impl()->storage->version(), v1);
}

TEST(Random, SameSeedGivesBitIdenticalTensors) {
  Generator g1(42), g2(42), g3(43);
  Tensor a = randn({1000}, g1), b = randn({1000}, g2), c = randn({1000}, g3);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), 1000 * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(a.data(), c.data(), 1000 * sizeof(float)), 0);
  Tensor u1 = uniform({500}, g1, -2, 3), u2 = uniform({500}, g2, -2, 3);
  EXPECT_EQ(std::memcmp(u1.data(), u2.data(), 500 * sizeof(float)), 0);
  for (float v : u1.values()) {
    EXPECT_GE(v, -2.0f);
    EXPECT_LT(v, 3.0f);
  }
}

TEST(Random, NormalMomentsAndKnownStream) {
  Generator g(7);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double v = g.normal();
    s += v;
    s2 += v * v;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.01);
  // The stream is fixed across platforms: pin the first value of seed 0
  // (xoshiro256** seeded through splitmix64).
  Generator z(0);
  EXPECT_EQ(z.next_u64(), 0x99ec5f36cb75f2b4ULL);
}

TEST(Random, StateRoundTrip) {
  Generator g(5);
  g.normal();  // leaves a spare normal behind
  const auto st = g.state();
  const float a = g.normal(), b = g.uniform();
  g.set_state(st);
  EXPECT_EQ(g.normal(), a);
  EXPECT_EQ(g.uniform(), b);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(g.below(7), 7u);
}
