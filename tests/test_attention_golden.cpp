// Attention modules against golden values computed independently in float64 with PyTorch
// (tools/golden/attention.py, from docs/attention.md; format in tests/golden/README.md).
//
// One parameterised test per golden case that a registered module lists in its entry's
// `golden` (tests/golden/attention/<case>.json), named after the case; that every built-in
// module lists cases and every file belongs to one is checked in
// test_attention_registry.cpp. Each builds the module from the file's config and context,
// loads the file's parameter values, runs forward and backward with the file's q, k, v and
// dout, and compares the output and the gradients of q, k, v and every parameter element by
// element: |a - b| <= atol + rtol |b|, with atol 1e-5, rtol 1e-4 unless the file carries
// its own "tolerance" (the generator says why next to CASE_TOLERANCE).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "softlab/attention.hpp"
#include "golden_io.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {
using namespace softlab::test;

const fs::path kGoldenDir = fs::path(SOFTLAB_SOURCE_DIR) / "tests" / "golden" / "attention";
constexpr double kDefaultAtol = 1e-5, kDefaultRtol = 1e-4;

struct GoldenCase {
  std::string module, name;  // the entry that lists the case, and the case
  friend void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.module << ": " << c.name; }
};

// The cases the registered modules list, in registry order.
std::vector<GoldenCase> listed_cases() {
  std::vector<GoldenCase> out;
  for (const auto& e : attention_registry().entries())
    for (const auto& name : e.golden) out.push_back({e.name, name});
  return out;
}

class AttentionGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(AttentionGolden, Matches) {
  const fs::path path = kGoldenDir / (GetParam().name + ".json");
  SCOPED_TRACE("golden file " + path.string());
  ASSERT_TRUE(fs::exists(path)) << "'" << GetParam().module << "' lists this case, but the file does not exist";
  const json g = read_json(path);
  const json& cfg = g.at("config");
  ASSERT_EQ(cfg.at("type").get<std::string>(), GetParam().module) << "the case configures another module";

  const std::vector<int64_t> shape = dims_of(g.at("shape"));
  ASSERT_EQ(shape.size(), 4u) << "shape must be [B, H, N, Dh]";
  const int64_t heads = shape[1], head_dim = shape[3];
  const json& cx = g.at("context");
  Generator init(0);
  AttentionContext ctx;
  ctx.dim = heads * head_dim;
  ctx.heads = heads;
  ctx.head_dim = head_dim;
  ctx.seq_len = cx.at("seq_len").get<int64_t>();
  ctx.grid_h = cx.at("grid_h").get<int64_t>();
  ctx.grid_w = cx.at("grid_w").get<int64_t>();
  ctx.prefix_tokens = cx.at("prefix_tokens").get<int64_t>();
  ctx.init = &init;

  const auto [atol, rtol] = golden_tolerance(g, kDefaultAtol, kDefaultRtol);

  std::unique_ptr<Attention> module;
  try {
    module = make_attention(cfg, ctx);
  } catch (const std::exception& e) {
    FAIL() << "make_attention rejected the golden config " << cfg.dump() << ": " << e.what();
  }

  // Parameters: the file's and the module's must be the same set of names and shapes.
  const json& fparams = g.at("params");
  std::vector<nn::Parameter> mparams = module->parameters();
  load_golden_tensors("parameter", fparams, named_parameters(*module));
  if (HasFailure()) return;

  const Shape s(shape);
  Tensor q = from_vector(s, floats(g.at("q"), "q"));
  Tensor k = from_vector(s, floats(g.at("k"), "k"));
  Tensor v = from_vector(s, floats(g.at("v"), "v"));
  q.set_requires_grad(true);
  k.set_requires_grad(true);
  v.set_requires_grad(true);
  Tensor out = module->forward(q, k, v);
  ASSERT_EQ(out.shape(), s) << "output shape";
  out.backward(from_vector(s, floats(g.at("dout"), "dout")));

  expect_close("out", out, floats(g.at("out"), "out"), shape, atol, rtol);
  expect_close("dq", q.grad(), floats(g.at("dq"), "dq"), shape, atol, rtol);
  expect_close("dk", k.grad(), floats(g.at("dk"), "dk"), shape, atol, rtol);
  expect_close("dv", v.grad(), floats(g.at("dv"), "dv"), shape, atol, rtol);
  for (const auto& p : mparams)
    if (fparams.contains(p.name))
      expect_close("param '" + p.name + "' grad", p.tensor.grad(), floats(fparams[p.name].at("grad"), p.name + ".grad"),
                   dims_of(fparams[p.name].at("shape")), atol, rtol);
}

INSTANTIATE_TEST_SUITE_P(File, AttentionGolden, ::testing::ValuesIn(listed_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) { return case_name(info.param.name); });
// No cases at all is reported by RegistryGolden.AttentionEntriesClaimTheirCases.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(AttentionGolden);

// Case names become test names with '.' and '-' replaced, so two cases must not collide.
TEST(AttentionGoldenCases, DistinctTestNames) {
  std::vector<std::string> names;
  for (const auto& c : listed_cases()) names.push_back(case_name(c.name));
  std::sort(names.begin(), names.end());
  EXPECT_TRUE(std::adjacent_find(names.begin(), names.end()) == names.end())
      << "two golden cases map to the same test name";
}

}  // namespace
