// Attention modules against golden values computed independently in float64 with PyTorch
// (tools/golden/attention.py, from docs/attention.md; format in tests/golden/README.md).
//
// One parameterised test per file in tests/golden/attention/, named after the file. Each
// builds the module from the file's config and context, loads the file's parameter values,
// runs forward and backward with the file's q, k, v and dout, and compares the output and
// the gradients of q, k, v and every parameter element by element:
// |a - b| <= atol + rtol |b|, with atol 1e-5, rtol 1e-4 unless the file carries its own
// "tolerance" (the generator says why next to CASE_TOLERANCE). A module that is not
// registered yet is skipped, not failed.
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

class AttentionGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionGolden, Matches) {
  const fs::path path = kGoldenDir / GetParam();
  SCOPED_TRACE("golden file " + path.string());
  const json g = read_json(path);
  const json& cfg = g.at("config");
  const std::string type = cfg.at("type").get<std::string>();
  if (!attention_registry().find(type))
    GTEST_SKIP() << "attention module '" << type << "' is not registered (yet)";

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

INSTANTIATE_TEST_SUITE_P(File, AttentionGolden, ::testing::ValuesIn(golden_files(kGoldenDir)),
                         [](const ::testing::TestParamInfo<std::string>& info) { return case_name(info.param); });
// An empty directory is reported by AttentionGoldenFiles.Present below, with the path.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(AttentionGolden);

TEST(AttentionGoldenFiles, Present) {
  const std::vector<std::string> files = golden_files(kGoldenDir);
  EXPECT_FALSE(files.empty()) << "no golden files in " << kGoldenDir
                              << " (regenerate: /usr/bin/python3 tools/golden/attention.py)";
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(case_name(f));
  std::sort(names.begin(), names.end());
  EXPECT_TRUE(std::adjacent_find(names.begin(), names.end()) == names.end())
      << "two golden files map to the same test name";
}

}  // namespace
