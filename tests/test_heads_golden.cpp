// Heads against golden values computed independently in float64 with PyTorch
// (tools/golden/heads.py, from docs/heads.md; format in tests/golden/README.md).
//
// One parameterised test per golden case that a registered head lists in its entry's
// `golden` (tests/golden/heads/<case>.json), named after the case; that every built-in head
// lists cases and every file belongs to one is checked in test_attention_registry.cpp.
// Each builds the head from the file's config and context, loads the file's parameters and
// buffers (the EBV basis), and compares, element by element (|a - b| <= atol + rtol |b|,
// atol 1e-6, rtol 1e-4 unless the file says otherwise): the scores, the training loss and
// its gradients w.r.t. the features and every parameter, the decision rule's predictions
// (exactly), and the eval-mode loss (the data term only).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "golden_io.hpp"
#include "softlab/head.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;
using namespace softlab::test;

namespace {

const fs::path kGoldenDir = fs::path(SOFTLAB_SOURCE_DIR) / "tests" / "golden" / "heads";
constexpr double kDefaultAtol = 1e-6, kDefaultRtol = 1e-4;

struct GoldenCase {
  std::string head, name;  // the entry that lists the case, and the case
  friend void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.head << ": " << c.name; }
};

// The cases the registered heads list, in registry order.
std::vector<GoldenCase> listed_cases() {
  std::vector<GoldenCase> out;
  for (const auto& e : head_registry().entries())
    for (const auto& name : e.golden) out.push_back({e.name, name});
  return out;
}

class HeadGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(HeadGolden, Matches) {
  const fs::path path = kGoldenDir / (GetParam().name + ".json");
  SCOPED_TRACE("golden file " + path.string());
  ASSERT_TRUE(fs::exists(path)) << "'" << GetParam().head << "' lists this case, but the file does not exist";
  const json g = read_json(path);
  const json& cfg = g.at("config");
  ASSERT_EQ(cfg.at("type").get<std::string>(), GetParam().head) << "the case configures another head";
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

INSTANTIATE_TEST_SUITE_P(File, HeadGolden, ::testing::ValuesIn(listed_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) { return case_name(info.param.name); });
// No cases at all is reported by RegistryGolden.HeadEntriesClaimTheirCases.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HeadGolden);

}  // namespace
