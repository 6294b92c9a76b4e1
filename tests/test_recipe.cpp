// The trainer's side of a training recipe: stochastic depth (drop path), gradient
// accumulation (the same step as the larger batch), the weight EMA (its formula, its
// evaluation, checkpoints and bit-exact resume), and the recipe `softlab validate` prints.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli_run.hpp"
#include "gradcheck.hpp"
#include "nn/trunk.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"
#include "softlab/ema.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

using RecipeTest = test::RunTest;
using test::quiet;
using test::read_metrics;

// Normwise relative difference. In a qkv bias the key third is left out: a bias added to
// every key shifts a softmax row by a constant, so its gradient is zero up to rounding
// noise (~1e-11 here) and AdamW, which divides by the gradient's own scale, moves it by
// the learning rate in a direction that noise decides. It changes no output.
double rel_diff(const std::string& name, const Tensor& a, const Tensor& b) {
  const bool qkv_bias = name.size() >= 8 && name.compare(name.size() - 8, 8, "qkv.bias") == 0;
  const int64_t third = a.numel() / 3;
  double d = 0.0, n = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (qkv_bias && i >= third && i < 2 * third) continue;
    const double x = a.data()[i], y = b.data()[i];
    d += (x - y) * (x - y);
    n += y * y;
  }
  return std::sqrt(d / std::max(n, 1e-300));
}

}  // namespace

// ---- drop path -----------------------------------------------------------------------------

// Each example's row is either all zero or x / (1 - p), the kept fraction is near 1 - p,
// and p = 0 is the identity.
TEST(DropPath, DropsWholeExamplesAndScalesTheRest) {
  Generator g(3), mg(4);
  const Tensor x = uniform({4000, 3, 5}, g, 0.5f, 1.5f);
  const float p = 0.3f;
  const Tensor y = drop_path(x, p, mg);
  int64_t kept = 0;
  for (int64_t b = 0; b < 4000; ++b) {
    const float* xr = x.data() + b * 15;
    const float* yr = y.data() + b * 15;
    const bool keep = yr[0] != 0.0f;
    kept += keep;
    for (int i = 0; i < 15; ++i) ASSERT_EQ(yr[i], keep ? xr[i] * (1.0f / (1.0f - p)) : 0.0f) << "example " << b;
  }
  // Binomial(4000, 0.7): standard deviation 29; 5 of them.
  EXPECT_NEAR(static_cast<double>(kept), 2800.0, 145.0);
  EXPECT_EQ(drop_path(x, 0.0f, mg).data(), x.data());
}

// The gradient is masked and scaled like the values: finite differences with the mask
// redrawn from the same seed at every evaluation.
TEST(DropPath, Gradcheck) {
  const Tensor x = test::param({6, 4}, 5);
  auto f = [](const std::vector<Tensor>& in) {
    Generator mg(11);
    return drop_path(in[0], 0.5f, mg);
  };
  const auto r = test::gradcheck(f, {x});
  EXPECT_TRUE(r.ok) << r.report;
}

// Rates grow linearly over the blocks, 0 in the first and model.drop_path in the last,
// and a ViT in eval mode ignores them.
TEST(DropPath, LinearPerBlockRateAndEvalIsDeterministic) {
  json j = test::tiny_config("unused", "unused");
  apply_override(j, "model.depth=5");
  apply_override(j, "model.drop_path=0.2");
  const Config cfg = parse_config(resolve_config(j));
  for (int64_t i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(nn::detail::drop_path_rate(cfg.model, i), 0.05f * static_cast<float>(i));
  auto model = build_model(cfg, 10, 100);
  Generator g(2);
  const Tensor img = uniform({4, 1, 28, 28}, g, -1, 1);
  model->eval();
  const auto a = model->forward(img).scores.to_vector(), b = model->forward(img).scores.to_vector();
  EXPECT_EQ(a, b);
  model->train();
  model->dropout_generator().seed(1);
  const auto c = model->forward(img).scores.to_vector();
  EXPECT_NE(a, c) << "training mode with drop path (and dropout) changed nothing";
}

// ---- gradient accumulation -----------------------------------------------------------------

// batch 50 x accumulate 2 takes the same optimiser steps as batch 100: the same examples
// (the shuffle does not depend on the batch size), the same schedule (steps per epoch and
// total), and the gradient of the mean over all 100. Only float summation order differs (a
// mean of two means against one mean), so after 20 AdamW steps the weights agree to a
// normwise 1e-5 (measured 1.1e-6), not bit for bit; batch 50
// without accumulation is off by far more (the third run).
TEST_F(RecipeTest, AccumulationEqualsTheLargerBatch) {
  const std::vector<std::string> common = {"model.dropout=0", "train.epochs=2", "train.grad_clip=0"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> s = common;
    s.insert(s.end(), extra.begin(), extra.end());
    return s;
  };
  TrainResult big = train(config("big", with({"train.batch_size=100"})), quiet());
  TrainResult acc = train(config("acc", with({"train.batch_size=50", "train.accumulate=2"})), quiet());
  TrainResult small = train(config("small", with({"train.batch_size=50"})), quiet());
  const Checkpoint cb = load_checkpoint(big.run_dir + "/last.ckpt"), ca = load_checkpoint(acc.run_dir + "/last.ckpt"),
                   cs = load_checkpoint(small.run_dir + "/last.ckpt");
  double worst = 0.0, worst_small = 0.0;
  for (size_t i = 0; i < cb.tensors.size(); ++i) {
    if (cb.tensors[i].first.rfind("model.", 0) != 0) continue;
    const std::string& name = cb.tensors[i].first;
    worst = std::max(worst, rel_diff(name, ca.tensors[i].second, cb.tensors[i].second));
    worst_small = std::max(worst_small, rel_diff(name, cs.tensors[i].second, cb.tensors[i].second));
  }
  std::cout << "  accumulation: worst normwise weight difference " << worst << " (no accumulation: " << worst_small
            << ")\n";
  EXPECT_LE(worst, 1e-5);
  EXPECT_GT(worst_small, 100 * worst) << "batch 50 without accumulation should differ clearly";
  const auto mb = read_metrics(big.run_dir), ma = read_metrics(acc.run_dir);
  ASSERT_EQ(mb.size(), ma.size());
  EXPECT_EQ(mb.back()["step"], ma.back()["step"]);
  EXPECT_NEAR(mb.back()["train_loss"].get<double>(), ma.back()["train_loss"].get<double>(), 1e-4);
}

// ---- weight EMA ----------------------------------------------------------------------------

TEST(WeightEma, WarmupFormulaAndUpdate) {
  EXPECT_DOUBLE_EQ(WeightEma::decay_at(0.999, 1), 2.0 / 11.0);
  EXPECT_DOUBLE_EQ(WeightEma::decay_at(0.999, 100), 101.0 / 110.0);
  EXPECT_DOUBLE_EQ(WeightEma::decay_at(0.9, 1000), 0.9);
  json j = test::tiny_config("unused", "unused");
  const Config cfg = parse_config(resolve_config(j));
  auto model = build_model(cfg, 10, 100);
  WeightEma ema(*model, 0.9);
  auto params = model->parameters();
  const std::vector<float> start = params[0].tensor.to_vector();
  float* w = params[0].tensor.mutable_data();
  for (int64_t i = 0; i < params[0].tensor.numel(); ++i) w[i] += 1.0f;
  ema.update(1000);  // d = 0.9
  const float* e = ema.state()[0].second.data();
  for (int64_t i = 0; i < params[0].tensor.numel(); ++i)
    ASSERT_NEAR(e[i], 0.9 * start[static_cast<size_t>(i)] + 0.1 * (start[static_cast<size_t>(i)] + 1.0), 1e-6);
  // Swapping puts the average in and the raw weights back.
  {
    WeightEma::Swap s(ema);
    EXPECT_EQ(model->parameters()[0].tensor.data()[0], e[0]);
  }
  EXPECT_EQ(model->parameters()[0].tensor.data()[0], start[0] + 1.0f);
}

// A run with the whole recipe (a class-balanced subset, TrivialAugment, erasing, mixup and
// CutMix into soft targets, drop path, the EMA) learns; its metrics carry the EMA's
// evaluation, its checkpoints the averaged tensors, and a run interrupted and resumed ends
// bit for bit where an uninterrupted one does, EMA included.
TEST_F(RecipeTest, FullRecipeLearnsSavesTheEmaAndResumesBitExact) {
  const std::vector<std::string> sets = {"train.ema=0.99",
                                         "model.drop_path=0.1",
                                         "data.subset=900",
                                         "data.augment.trivial_augment=true",
                                         "data.augment.random_erasing=0.25",
                                         "data.augment.mixup=0.8",
                                         "data.augment.cutmix=1.0",
                                         "train.epochs=4"};
  TrainResult ra = train(config("a", sets), quiet());
  const auto m = read_metrics(ra.run_dir);
  ASSERT_FALSE(m.empty());
  ASSERT_TRUE(m.back().contains("ema_test_accuracy"));
  EXPECT_GT(m.back()["test_accuracy"].get<double>(), 0.3);  // chance is 0.1
  EXPECT_GT(m.back()["ema_test_accuracy"].get<double>(), 0.3);
  TrainOptions stop = quiet();
  stop.stop_after_step = 27;  // 18 steps per epoch (900 images, batch 50): in epoch 2
  ASSERT_EQ(train(config("b", sets), stop).status, TrainStatus::Interrupted);
  TrainOptions res = quiet();
  res.resume = true;
  TrainResult rb = train(config("b", sets), res);
  const Checkpoint ca = load_checkpoint(ra.run_dir + "/last.ckpt"), cb = load_checkpoint(rb.run_dir + "/last.ckpt");
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  int ema_tensors = 0;
  for (size_t i = 0; i < ca.tensors.size(); ++i) {
    ASSERT_EQ(ca.tensors[i].first, cb.tensors[i].first);
    ema_tensors += ca.tensors[i].first.rfind("ema.", 0) == 0;
    const Tensor &x = ca.tensors[i].second, &y = cb.tensors[i].second;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), static_cast<size_t>(x.numel()) * 4), 0) << ca.tensors[i].first;
  }
  EXPECT_GT(ema_tensors, 0);
  EXPECT_EQ(m.back()["ema_test_accuracy"], read_metrics(rb.run_dir).back()["ema_test_accuracy"]);
  // softlab eval --ema evaluates the averaged weights: the run's own EMA figure.
  const auto ev = test::softlab_cli({"eval", ra.run_dir, "--ema", "--threads", "1"}, root);
  ASSERT_EQ(ev.code, 0) << ev.err;
  const json e = json::parse(ev.out);
  EXPECT_EQ(e["weights"], "ema");
  EXPECT_DOUBLE_EQ(e["test_accuracy"].get<double>(), m.back()["ema_test_accuracy"].get<double>());
  // A run without an EMA: --ema is an error naming the checkpoint (exit 2).
  TrainResult plain = train(config("plain", {"train.epochs=1", "train.max_batches_per_epoch=2"}), quiet());
  const auto bad = test::softlab_cli({"eval", plain.run_dir, "--ema"}, root);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("holds no weight EMA"), std::string::npos) << bad.err;
}

// ---- validate ------------------------------------------------------------------------------

TEST_F(RecipeTest, ValidatePrintsTheRecipe) {
  const std::string cfg_path = root + "/c.json";
  {
    std::ofstream f(cfg_path);
    f << test::tiny_config(data, root + "/out").dump();
  }
  const auto r = test::softlab_cli({"validate", cfg_path, "--set", "train.accumulate=3", "--set",
                                    "model.drop_path=0.1", "--set", "train.ema=0.999"},
                                   root);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"recipe:", "data.augment:", "train.accumulate=3 (150 examples per optimiser step)",
                        "model.drop_path=0.1 (per block: 0 0.1)", "train.ema=0.999"})
    EXPECT_NE(r.err.find(s), std::string::npos) << s << " in\n" << r.err;
}

TEST_F(RecipeTest, InfoListsTheRecipeKeysWithDefaults) {
  const auto r = test::softlab_cli({"info"}, root);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"training recipe keys", "data.augment.mixup (float, default 0.0", "data.subset (int, default 0",
                        "model.drop_path (float, default 0.0", "train.accumulate (int, default 1",
                        "train.ema (float, default 0.0", "data.augment.trivial_augment (bool, default false"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
}
