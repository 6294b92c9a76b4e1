// Heads against golden values computed independently in float64 with PyTorch
// (tools/golden/heads.py, from docs/heads.md; format in tests/golden/README.md).
//
// One parameterised test per file in tests/golden/heads/. Each builds the head from the
// file's config and context, loads the file's parameters and buffers (the EBV basis), and
// compares, element by element (|a - b| <= atol + rtol |b|, atol 1e-6, rtol 1e-4 unless the
// file says otherwise): the scores, the training loss and its gradients w.r.t. the features
// and every parameter, the decision rule's predictions (exactly), and the eval-mode loss
// (the data term only).
#include <gtest/gtest.h>

#include <set>

#include "golden_io.hpp"
#include "softlab/head.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;
using namespace softlab::test;

namespace {

const fs::path kGoldenDir = fs::path(SOFTLAB_SOURCE_DIR) / "tests" / "golden" / "heads";
constexpr double kDefaultAtol = 1e-6, kDefaultRtol = 1e-4;

class HeadGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(HeadGolden, Matches) {
  const fs::path path = kGoldenDir / GetParam();
  SCOPED_TRACE("golden file " + path.string());
  const json g = read_json(path);
  const json& cfg = g.at("config");
  const std::vector<int64_t> shape = dims_of(g.at("shape"));
  ASSERT_EQ(shape.size(), 3u) << "shape must be [B, D, C]";
  const int64_t B = shape[0], D = shape[1], C = shape[2];
  const json& cx = g.at("context");
  Generator init(0);
  HeadContext ctx;
  ctx.in_dim = cx.at("in_dim").get<int64_t>();
  ctx.num_classes = cx.at("num_classes").get<int64_t>();
  ctx.train_size = cx.at("train_size").get<int64_t>();
  ctx.init = &init;
  ASSERT_EQ(ctx.in_dim, D);
  ASSERT_EQ(ctx.num_classes, C);
  const auto [atol, rtol] = golden_tolerance(g, kDefaultAtol, kDefaultRtol);
  std::unique_ptr<Head> head;
  try {
    head = make_head(cfg, ctx);
  } catch (const std::exception& e) {
    FAIL() << "make_head rejected the golden config " << cfg.dump() << ": " << e.what();
  }
  const json& fparams = g.at("params");
  load_golden_tensors("parameter", fparams, named_parameters(*head));
  load_golden_tensors("buffer", g.value("buffers", json::object()), head->buffers());
  if (HasFailure()) return;

  const std::vector<int32_t> labels = g.at("labels").get<std::vector<int32_t>>();
  ASSERT_EQ(static_cast<int64_t>(labels.size()), B);
  Tensor h = from_vector({B, D}, floats(g.at("features"), "features"));
  h.set_requires_grad(true);
  head->train();
  HeadOutput out = head->forward(h, labels);
  ASSERT_TRUE(out.loss.defined());
  out.loss.backward();
  expect_close("scores", out.scores, floats(g.at("scores"), "scores"), {B, C}, atol, rtol);
  expect_close("loss", out.loss, {static_cast<float>(g.at("loss").get<double>())}, {}, atol, rtol);
  expect_close("dfeatures", h.grad(), floats(g.at("dfeatures"), "dfeatures"), {B, D}, atol, rtol);
  for (const auto& p : head->parameters())
    if (fparams.contains(p.name))
      expect_close("param '" + p.name + "' grad", p.tensor.grad(), floats(fparams[p.name].at("grad"), p.name + ".grad"),
                   dims_of(fparams[p.name].at("shape")), atol, rtol);
  EXPECT_EQ(head->predict(out.scores), g.at("predict").get<std::vector<int32_t>>()) << "decision rule";

  head->eval();
  NoGradGuard no_grad;
  HeadOutput ev = head->forward(h.detach(), labels);
  expect_close("loss_eval", ev.loss, {static_cast<float>(g.at("loss_eval").get<double>())}, {}, atol, rtol);
  expect_close("scores (eval)", ev.scores, floats(g.at("scores"), "scores"), {B, C}, atol, rtol);
  HeadOutput unlabelled = head->forward(h.detach(), {});
  EXPECT_FALSE(unlabelled.loss.defined());
  expect_close("scores (no labels)", unlabelled.scores, floats(g.at("scores"), "scores"), {B, C}, atol, rtol);
}

INSTANTIATE_TEST_SUITE_P(File, HeadGolden, ::testing::ValuesIn(golden_files(kGoldenDir)),
                         [](const ::testing::TestParamInfo<std::string>& info) { return case_name(info.param); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HeadGolden);

TEST(HeadGoldenFiles, EveryHeadHasOne) {
  std::set<std::string> covered;
  for (const auto& f : golden_files(kGoldenDir)) covered.insert(read_json(kGoldenDir / f).at("config").at("type"));
  for (const auto& name : head_registry().names())
    EXPECT_TRUE(covered.count(name)) << "no golden file for head '" << name << "' in " << kGoldenDir
                                     << " (add a case to tools/golden/heads.py and run it with /usr/bin/python3)";
}

}  // namespace
