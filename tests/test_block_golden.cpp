// The attention branch of a block with its extras (the value conv over the image grid, the
// output gate, the hybrid norm) against golden values computed independently in float64
// with PyTorch (tools/golden/block.py; format in tests/golden/README.md, "block/").
//
// One test per file in tests/golden/block/: build nn::SelfAttention from the file's config
// and context, load every parameter (the file and the module must name the same set), run
// forward and backward with the file's x and dout, and compare the output and the
// gradients of x and of every parameter: |a - b| <= atol + rtol |b| (atol 1e-5, rtol 1e-4
// unless the file carries its own tolerance).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "golden_io.hpp"
#include "softlab/attention.hpp"
#include "softlab/nn/block.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {
using namespace softlab::test;

const fs::path kGoldenDir = fs::path(SOFTLAB_SOURCE_DIR) / "tests" / "golden" / "block";
constexpr double kDefaultAtol = 1e-5, kDefaultRtol = 1e-4;

class BlockGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(BlockGolden, Matches) {
  const fs::path path = kGoldenDir / GetParam();
  SCOPED_TRACE("golden file " + path.string());
  const json g = read_json(path);
  const json& cfg = g.at("config");
  const json& cx = g.at("context");
  const std::vector<int64_t> shape = dims_of(g.at("shape"));
  ASSERT_EQ(shape.size(), 3u) << "shape must be [B, N, D]";

  nn::BlockOptions opt;
  opt.dim = shape[2];
  opt.heads = cfg.at("heads").get<int64_t>();
  opt.attn_gate = cfg.at("attn_gate").get<bool>();
  opt.value_conv = cfg.at("value_conv").is_null() ? 0 : cfg.at("value_conv").get<int64_t>();
  opt.value_conv_per_head = cfg.at("value_conv_groups").get<std::string>() == "head";
  opt.attn_out_norm = cfg.at("attn_out_norm").get<bool>();
  opt.grid_h = cx.at("grid_h").get<int64_t>();
  opt.grid_w = cx.at("grid_w").get<int64_t>();
  opt.prefix_tokens = cx.at("prefix_tokens").get<int64_t>();

  Generator init(0);
  AttentionContext ctx;
  ctx.dim = opt.dim;
  ctx.heads = opt.heads;
  ctx.head_dim = opt.dim / opt.heads;
  ctx.seq_len = cx.at("seq_len").get<int64_t>();
  ctx.grid_h = opt.grid_h;
  ctx.grid_w = opt.grid_w;
  ctx.prefix_tokens = opt.prefix_tokens;
  ctx.init = &init;
  std::unique_ptr<nn::SelfAttention> sa;
  try {
    sa = std::make_unique<nn::SelfAttention>(opt, make_attention(cfg.at("attention"), ctx), init);
  } catch (const std::exception& e) {
    FAIL() << "the golden config was rejected: " << e.what();
  }

  const json& fparams = g.at("params");
  load_golden_tensors("parameter", fparams, named_parameters(*sa));
  if (HasFailure()) return;

  const auto [atol, rtol] = golden_tolerance(g, kDefaultAtol, kDefaultRtol);
  Tensor x = from_vector(Shape(shape), floats(g.at("x"), "x"));
  x.set_requires_grad(true);
  Tensor out = sa->forward(x);
  ASSERT_EQ(out.shape(), Shape(shape)) << "output shape";
  out.backward(from_vector(Shape(shape), floats(g.at("dout"), "dout")));
  expect_close("out", out, floats(g.at("out"), "out"), shape, atol, rtol);
  expect_close("dx", x.grad(), floats(g.at("dx"), "dx"), shape, atol, rtol);
  for (const auto& p : sa->parameters())
    expect_close("param '" + p.name + "' grad", p.tensor.grad(), floats(fparams.at(p.name).at("grad"), p.name),
                 dims_of(fparams.at(p.name).at("shape")), atol, rtol);
}

INSTANTIATE_TEST_SUITE_P(File, BlockGolden, ::testing::ValuesIn(golden_files(kGoldenDir)),
                         [](const ::testing::TestParamInfo<std::string>& info) { return case_name(info.param); });

// Each extra has a case: losing one (a deleted file) is a failure, not a skipped test.
TEST(BlockGoldenCases, EveryExtraIsCovered) {
  bool gate = false, channel = false, head = false, out_norm = false;
  for (const auto& f : golden_files(kGoldenDir)) {
    const json cfg = read_json(kGoldenDir / f).at("config");
    gate |= cfg.at("attn_gate").get<bool>();
    out_norm |= cfg.at("attn_out_norm").get<bool>();
    if (!cfg.at("value_conv").is_null()) (cfg.at("value_conv_groups") == "head" ? head : channel) = true;
  }
  EXPECT_TRUE(gate) << "no golden case with attn_gate";
  EXPECT_TRUE(channel) << "no golden case with a per-channel value conv (LePE)";
  EXPECT_TRUE(head) << "no golden case with a per-head value conv (SOFT)";
  EXPECT_TRUE(out_norm) << "no golden case with attn_out_norm";
}

}  // namespace
