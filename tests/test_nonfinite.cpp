// Non-finite values stop a run cleanly (docs/reliability.md): status Diverged (exit 3 from
// the command) with the step and the last finite checkpoint named, no checkpoint ever holds
// NaN or infinity, and NaN scores never count as a correct prediction.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "cli_run.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/head.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

using NonFinite = test::RunTest;

bool all_finite(const Checkpoint& ck) {
  for (const auto& [name, t] : ck.tensors)
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(t.data()[i])) return false;
  return true;
}

}  // namespace

// lr 1e300 turns the weights to infinity at the first update; the next loss is NaN. The
// run stops there: nothing written holds a non-finite value, and the message says where.
TEST_F(NonFinite, HugeLearningRateStopsBeforeAnythingNonFiniteIsSaved) {
  Config cfg = config("lr", {"train.optimizer.lr=1e300", "train.schedule.warmup_epochs=0", "train.grad_clip=0"});
  const TrainResult r = train(cfg, test::quiet());
  ASSERT_EQ(r.status, TrainStatus::Diverged);
  const std::string msg = r.summary.at("message").get<std::string>();
  EXPECT_NE(msg.find("diverged"), std::string::npos) << msg;
  EXPECT_NE(msg.find("step 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no checkpoint was written yet"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(fs::path(r.run_dir) / "last.ckpt"));
  EXPECT_FALSE(fs::exists(fs::path(r.run_dir) / "best.ckpt"));
  EXPECT_FALSE(fs::exists(fs::path(r.run_dir) / "metrics.jsonl"));
}

// A NaN loss in the second epoch: the run stops, and last.ckpt is the epoch-1 state it
// names, which is finite.
TEST_F(NonFinite, LaterDivergenceNamesTheLastFiniteCheckpoint) {
  TrainOptions o = test::quiet();
  o.nonfinite_at_step = 25;  // 20 steps an epoch
  const TrainResult r = train(config("late"), o);
  ASSERT_EQ(r.status, TrainStatus::Diverged);
  const std::string msg = r.summary.at("message").get<std::string>();
  EXPECT_NE(msg.find("the loss is nan at epoch 2, step 25"), std::string::npos) << msg;
  EXPECT_NE(msg.find("last.ckpt (epoch 2, batch 0, step 20)"), std::string::npos) << msg;
  const Checkpoint ck = load_checkpoint(r.run_dir + "/last.ckpt");
  EXPECT_EQ(ck.meta.at("position").at("step").get<int64_t>(), 20);
  EXPECT_TRUE(all_finite(ck));
  EXPECT_EQ(test::read_metrics(r.run_dir).size(), 1u);
}

// train.on_nonfinite = skip_step: the step's update is skipped and counted; the run goes on.
TEST_F(NonFinite, SkipStepSkipsTheUpdateAndCountsIt) {
  TrainOptions o = test::quiet();
  o.nonfinite_at_step = 25;
  const TrainResult r = train(config("skip", {"train.on_nonfinite=skip_step"}), o);
  ASSERT_EQ(r.status, TrainStatus::Finished);
  EXPECT_EQ(r.summary.at("skipped_steps").get<int64_t>(), 1);
  const auto m = test::read_metrics(r.run_dir);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0]["skipped_steps"].get<int64_t>(), 0);
  EXPECT_EQ(m[1]["skipped_steps"].get<int64_t>(), 1);
  EXPECT_TRUE(std::isfinite(m[1]["train_loss"].get<double>()));
  EXPECT_TRUE(all_finite(load_checkpoint(r.run_dir + "/last.ckpt")));
  // The skipped step changed no weight: the run differs from an unskipped one.
  const TrainResult plain = train(config("noskip"), test::quiet());
  EXPECT_NE(test::read_metrics(plain.run_dir)[1]["train_loss"], m[1]["train_loss"]);
}

// The command's exit code for a diverged run is 3, and the message goes to stderr.
TEST_F(NonFinite, CommandExitsWithThree) {
  const std::string cfg_path = root + "/div.json";
  json c = test::tiny_config(data, root + "/div_run");
  c["train"]["optimizer"]["lr"] = 1e300;
  c["train"]["grad_clip"] = 0;
  std::ofstream(cfg_path) << c.dump();
  const test::CliRun r = test::softlab_cli({"train", cfg_path, "--quiet"}, root);
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("training diverged"), std::string::npos) << r.err;
}

// NaN compares false, so a plain arg-max or rank count would call a NaN row class 0 or
// rank its label first. Such a row is never correct.
TEST(NonFiniteScores, NeverCountAsCorrect) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Tensor s = from_vector({3, 4}, {nan, nan, nan, nan,  //
                                   0.f, nan, 0.f, 0.f,  //
                                   1.f, 2.f, 3.f, inf});
  const std::vector<int32_t> labels = {0, 0, 3};
  EXPECT_EQ(argmax_rows(s), (std::vector<int32_t>{kNoClass, kNoClass, kNoClass}));
  for (int64_t k : {1, 3, 5}) EXPECT_EQ(topk_correct(s, labels, k), 0) << "k = " << k;
  const Tensor fine = from_vector({1, 4}, {0.f, 1.f, 0.5f, -1.f});
  EXPECT_EQ(argmax_rows(fine), (std::vector<int32_t>{1}));
  EXPECT_EQ(topk_correct(fine, std::vector<int32_t>{2}, 2), 1);
}
