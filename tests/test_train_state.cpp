// The public training step (softlab/train_state.hpp): a loop written on it reproduces
// softlab train bit for bit (dropout, drop path, mixing, accumulation and EMA on), from the
// start and from a checkpoint taken mid-epoch; the plan and the position are typed; AdamW's
// first step has its closed form; clipping reports the scale it applied.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "expect_error.hpp"
#include "softlab/softlab.hpp"
#include "train_fixtures.hpp"

using namespace softlab;

namespace {

using TrainStateTest = test::RunTest;

// The recipe with every source of randomness a step has: data order, augmentation, mixing,
// dropout, drop path; accumulation and the EMA on top.
const std::vector<std::string> kRecipe = {"model.dropout=0.1", "model.drop_path=0.1", "data.augment.translate=2",
                                          "data.augment.mixup=0.5", "train.accumulate=3", "train.ema=0.9"};

// The loop an embedding program writes: from the state's position to the end of its plan.
void run_loop(TrainState& st, const TrainingData& td) {
  BatchLoader loader(td.data.train, train_loader_options(st.cfg, td.norm, td.data.train.num_classes));
  std::vector<Batch> micro;
  while (st.pos.epoch < st.plan.epochs && st.pos.step < st.plan.total_steps) {
    loader.start_epoch(st.pos.epoch, st.pos.batch);
    while (st.pos.batch < st.plan.batches_per_epoch && st.pos.step < st.plan.total_steps) {
      micro.assign(static_cast<size_t>(std::min(st.plan.accumulate, st.plan.batches_per_epoch - st.pos.batch)), {});
      for (Batch& b : micro) ASSERT_TRUE(loader.next(b));
      const StepResult r = st.step(micro);
      ASSERT_TRUE(r.applied && r.finite);
    }
    st.next_epoch();
  }
}

// Every tensor of two checkpoints (weights, optimiser state, EMA), byte for byte.
void expect_same_tensors(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    ASSERT_EQ(a.tensors[i].first, b.tensors[i].first);
    const Tensor &x = a.tensors[i].second, &y = b.tensors[i].second;
    ASSERT_EQ(x.shape(), y.shape()) << a.tensors[i].first;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), static_cast<size_t>(x.numel()) * 4), 0) << a.tensors[i].first;
  }
}

}  // namespace

TEST_F(TrainStateTest, OwnLoopReproducesSoftlabTrainBitForBit) {
  const Config cfg = config("cli", kRecipe);
  ASSERT_EQ(train(cfg, test::quiet()).status, TrainStatus::Finished);
  const Checkpoint by_cli = load_checkpoint(cfg.output.dir + "/last.ckpt");

  const TrainingData td = load_training_data(cfg);
  TrainState st(cfg, td.data, td.norm);
  run_loop(st, td);
  const Checkpoint own = st.checkpoint();
  ASSERT_TRUE(std::any_of(own.tensors.begin(), own.tensors.end(),
                          [](const auto& t) { return t.first.rfind("ema.", 0) == 0; }));
  expect_same_tensors(by_cli, own);
  const RunPosition cli_pos = RunPosition::from_json(by_cli.meta["position"]);
  EXPECT_EQ(st.pos.step, cli_pos.step);
  EXPECT_EQ(st.pos.epoch, cli_pos.epoch);
  EXPECT_EQ(st.pos.images, cli_pos.images);
  // The evaluation a loop gets is the one the run reported.
  std::ifstream sf(std::filesystem::path(cfg.output.dir) / "summary.json");
  const json summary = json::parse(sf);
  EXPECT_DOUBLE_EQ(st.evaluate(td.data.test).accuracy, summary["test_accuracy"].get<double>());
  EXPECT_DOUBLE_EQ(st.evaluate(td.data.test, true).accuracy, summary["ema_test_accuracy"].get<double>());
}

TEST_F(TrainStateTest, LoadedMidEpochCheckpointContinuesExactly) {
  const Config full = config("full", kRecipe);
  ASSERT_EQ(train(full, test::quiet()).status, TrainStatus::Finished);
  const Config part = config("part", kRecipe);
  TrainOptions stop = test::quiet();
  stop.stop_after_step = 9;  // 7 steps per epoch (20 batches, 3 per step): mid-way through epoch 2
  ASSERT_EQ(train(part, stop).status, TrainStatus::Interrupted);

  TrainState st = TrainState::load(part.output.dir + "/last.ckpt");
  EXPECT_EQ(st.pos.step, 9);
  EXPECT_EQ(st.pos.epoch, 1);
  EXPECT_EQ(st.pos.batch, 6);
  EXPECT_EQ(st.cfg.resolved, part.resolved);
  run_loop(st, load_training_data(st.cfg));
  expect_same_tensors(load_checkpoint(full.output.dir + "/last.ckpt"), st.checkpoint());

  // save() writes what load() reads, position included.
  const std::string again = root + "/again.ckpt";
  st.save(again);
  const TrainState back = TrainState::load(again);
  EXPECT_EQ(back.pos.step, st.pos.step);
  EXPECT_EQ(back.pos.images, st.pos.images);
  expect_same_tensors(st.checkpoint(), back.checkpoint());
}

TEST_F(TrainStateTest, PlanMatchesWhatTheRunDid) {
  const Config cfg = config("run", {"train.accumulate=3", "train.epochs=2"});
  const StepPlan plan = plan_steps(cfg, 1000);
  EXPECT_EQ(plan.batches_per_epoch, 20);  // 1000 images, batches of 50
  EXPECT_EQ(plan.accumulate, 3);
  EXPECT_EQ(plan.steps_per_epoch, 7);  // the last step of an epoch takes 2 batches
  EXPECT_EQ(plan.total_steps, 14);
  ASSERT_EQ(train(cfg, test::quiet()).status, TrainStatus::Finished);
  const TrainState st = TrainState::load(cfg.output.dir + "/last.ckpt");
  EXPECT_EQ(st.pos.step, plan.total_steps);
  EXPECT_TRUE(st.pos.done);
  EXPECT_EQ(st.plan.total_steps, plan.total_steps);
  EXPECT_EQ(plan_steps(parse_config(resolve_config([&] {
                         json j = cfg.resolved;
                         j["train"]["max_steps"] = 5;
                         return j;
                       }())),
                       1000)
                .total_steps,
            5);
  // The schedule a loop reads is the one metrics.jsonl reports.
  const auto m = test::read_metrics(cfg.output.dir);
  EXPECT_DOUBLE_EQ(st.lr_at(m.back()["step"].get<int64_t>() - 1), m.back()["lr"].get<double>());
}

TEST(RunPositionJson, RoundTripsAndNamesBadInput) {
  RunPosition p;
  p.epoch = 2;
  p.step = 41;
  p.loss_sum = 1.25;
  p.done = true;
  const RunPosition q = RunPosition::from_json(p.to_json());
  EXPECT_EQ(q.epoch, 2);
  EXPECT_EQ(q.step, 41);
  EXPECT_EQ(q.loss_sum, 1.25);
  EXPECT_TRUE(q.done);
  EXPECT_EQ(RunPosition::from_json(json::object()).best_step, -1);  // older checkpoints: defaults
  test::expect_error([] { RunPosition::from_json(json{{"step", "seven"}}); }, {"position"});
}

// After one step from zero moments, AdamW's update is lr * g / (|g| + eps) plus the decay,
// with m = (1 - beta1) g and v = (1 - beta2) g^2, where 1 - beta is formed from the
// configured (double) value: 1e-3 for beta2 = 0.999, not float(1 - float(0.999)) = 9.99987e-4.
TEST(AdamW, FirstStepHasItsClosedForm) {
  OptimizerConfig oc;
  oc.type = "adamw";
  oc.lr = 0.01;
  oc.beta1 = 0.9;
  oc.beta2 = 0.999;
  oc.eps = 1e-8;
  oc.weight_decay = 0.1;
  const std::vector<float> w0 = {0.5f, -1.25f, 2.0f, 0.0f, 3.0f, -0.75f};
  const std::vector<float> c = {1.0f, -3.0f, 0.25f, 7.5f, -0.125f, 2.0f};
  Tensor w = from_vector({6}, w0).set_requires_grad(true);
  std::vector<nn::Parameter> params = {{"w", w, true}};
  auto opt = make_optimizer(oc, params);
  sum(mul(w, from_vector({6}, c))).backward();  // gradient c
  opt->step(oc.lr);
  std::map<std::string, Tensor> state;
  for (auto& [n, t] : opt->state()) state.emplace(n, t);
  for (size_t i = 0; i < w0.size(); ++i) {
    const double g = c[i];
    // The moments: one rounding of the float product away from the exact values.
    EXPECT_NEAR(state.at("m.w").data()[i], 0.1 * g, 2e-7 * std::abs(0.1 * g)) << i;
    EXPECT_NEAR(state.at("v.w").data()[i], 1e-3 * g * g, 3e-7 * (1e-3 * g * g)) << i;
    const double expect = w0[i] * (1.0 - oc.lr * oc.weight_decay) - oc.lr * g / (std::abs(g) + oc.eps);
    EXPECT_NEAR(w.data()[i], expect, 4e-7 * std::max(1.0, std::abs(expect))) << i;
  }
}

TEST(ClipGradients, ReportsTheScaleItApplied) {
  Tensor w = from_vector({2}, {3.0f, 4.0f}).set_requires_grad(true);
  std::vector<nn::Parameter> params = {{"w", w, true}};
  sum(mul(w, w)).backward();  // gradient (6, 8): norm 10
  const ClipResult none = clip_gradients(params, 20.0);
  EXPECT_DOUBLE_EQ(none.norm, 10.0);
  EXPECT_EQ(none.scale, 1.0);
  EXPECT_EQ(w.grad().data()[0], 6.0f);
  const ClipResult r = clip_gradients(params, 5.0);
  EXPECT_DOUBLE_EQ(r.norm, 10.0);
  EXPECT_EQ(r.scale, static_cast<double>(static_cast<float>(5.0 / (10.0 + 1e-6))));
  EXPECT_EQ(w.grad().data()[0], 6.0f * static_cast<float>(r.scale));
  EXPECT_EQ(w.grad().data()[1], 8.0f * static_cast<float>(r.scale));
}
