// End-to-end training on a generated, learnable data set: the loss falls and accuracy
// beats chance; resume equals an uninterrupted run; checkpoints round-trip; the run
// directory is complete and never overwritten.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "softlab/checkpoint.hpp"
#include "softlab/optim.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

using TrainTest = test::RunTest;
using test::quiet;
using test::read_metrics;
}  // namespace

TEST_F(TrainTest, LearnsAndLeavesCompleteRunDirectory) {
  Config cfg = config("run");
  TrainResult r = train(cfg, quiet());
  ASSERT_EQ(r.status, TrainStatus::Finished);
  const auto m = read_metrics(r.run_dir);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_LT(m.back()["train_loss"].get<double>(), 0.5 * m.front()["train_loss"].get<double>());
  EXPECT_GT(m.back()["test_accuracy"].get<double>(), 0.6);  // chance is 0.1
  for (const char* k : {"epoch", "step", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                        "images_per_sec", "seconds", "grad_norm"})
    EXPECT_TRUE(m.back().contains(k)) << k;
  for (const char* f : {"config.json", "metrics.jsonl", "summary.json", "last.ckpt", "best.ckpt"})
    EXPECT_TRUE(fs::exists(fs::path(r.run_dir) / f)) << f;
  std::ifstream sf(fs::path(r.run_dir) / "summary.json");
  const json s = json::parse(sf);
  for (const char* k : {"name", "test_accuracy", "best_test_accuracy", "test_loss", "epochs", "params",
                        "train_seconds", "train_images_per_sec", "attention", "head", "seed", "version"})
    EXPECT_TRUE(s.contains(k)) << k;
  EXPECT_EQ(s["params"].get<int64_t>(), build_model(cfg, 10, 1000)->num_parameters());
  // The resolved config in the run directory is the config the run used.
  std::ifstream cf(fs::path(r.run_dir) / "config.json");
  EXPECT_EQ(json::parse(cf), cfg.resolved);
  // Evaluating the saved checkpoint gives the final test accuracy.
  LoadedModel lm = load_model((fs::path(r.run_dir) / "last.ckpt").string());
  DataSplit d = load_dataset("mnist", data);
  EXPECT_DOUBLE_EQ(evaluate(*lm.model, d.test, lm.norm, 64).accuracy, s["test_accuracy"].get<double>());
}

TEST_F(TrainTest, ExistingRunDirectoryIsNotOverwritten) {
  Config cfg = config("run", {"train.epochs=1", "train.max_batches_per_epoch=2"});
  train(cfg, quiet());
  const auto before = fs::last_write_time(fs::path(cfg.output.dir) / "last.ckpt");
  try {
    train(cfg, quiet());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
    EXPECT_EQ(e.kind(), Error::Kind::BadInput);
  }
  EXPECT_EQ(fs::last_write_time(fs::path(cfg.output.dir) / "last.ckpt"), before);
}

// With threads = 1, a run interrupted mid-epoch and resumed ends with exactly the weights,
// optimiser state and metrics of an uninterrupted run.
TEST_F(TrainTest, ResumeEqualsUninterruptedRun) {
  Config a = config("a");
  TrainResult ra = train(a, quiet());
  Config b = config("b");
  TrainOptions stop = quiet();
  stop.stop_after_step = 27;  // 20 steps per epoch: mid-way through epoch 2
  TrainResult rb1 = train(b, stop);
  ASSERT_EQ(rb1.status, TrainStatus::Interrupted);
  TrainOptions res = quiet();
  res.resume = true;
  TrainResult rb2 = train(b, res);
  ASSERT_EQ(rb2.status, TrainStatus::Finished);

  Checkpoint ca = load_checkpoint(ra.run_dir + "/last.ckpt"), cb = load_checkpoint(rb2.run_dir + "/last.ckpt");
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  for (size_t i = 0; i < ca.tensors.size(); ++i) {
    ASSERT_EQ(ca.tensors[i].first, cb.tensors[i].first);
    const Tensor &x = ca.tensors[i].second, &y = cb.tensors[i].second;
    ASSERT_EQ(x.shape(), y.shape());
    EXPECT_EQ(std::memcmp(x.data(), y.data(), static_cast<size_t>(x.numel()) * 4), 0) << ca.tensors[i].first;
  }
  const auto ma = read_metrics(ra.run_dir), mb = read_metrics(rb2.run_dir);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i)
    for (const char* k : {"epoch", "step", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                          "grad_norm"})
      EXPECT_EQ(ma[i][k], mb[i][k]) << "epoch " << i + 1 << " " << k;
}

// A stop request that comes before training starts (a SIGINT while the data loads) is not
// lost: the run saves its starting point and returns; --resume then trains it all.
TEST_F(TrainTest, StopRequestedBeforeTrainingIsKept) {
  Config b = config("b", {"train.epochs=1"});
  request_stop();
  const TrainResult r1 = train(b, quiet());
  clear_stop_request();
  ASSERT_EQ(r1.status, TrainStatus::Interrupted);
  EXPECT_EQ(load_checkpoint(r1.run_dir + "/last.ckpt").meta.at("position").at("step").get<int64_t>(), 0);
  TrainOptions res = quiet();
  res.resume = true;
  const TrainResult r2 = train(b, res);
  ASSERT_EQ(r2.status, TrainStatus::Finished);
  EXPECT_EQ(r2.summary["steps"].get<int64_t>(), 20);
}

TEST_F(TrainTest, ResumeRejectsAChangedConfig) {
  Config b = config("b");
  TrainOptions stop = quiet();
  stop.stop_after_step = 5;
  train(b, stop);
  Config changed = config("b", {"train.optimizer.lr=0.1"});
  TrainOptions res = quiet();
  res.resume = true;
  try {
    train(changed, res);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.optimizer.lr"), std::string::npos) << e.what();
  }
}

// A checkpoint written before softlab gained a config key (its saved config lacks the key)
// still resumes: the missing key takes its default, which is no change.
TEST_F(TrainTest, ResumeAcceptsCheckpointsFromBeforeANewKey) {
  Config b = config("b");
  TrainOptions stop = quiet();
  stop.stop_after_step = 5;
  const TrainResult r1 = train(b, stop);
  const std::string last = r1.run_dir + "/last.ckpt";
  Checkpoint ck = load_checkpoint(last);
  ck.meta["config"]["train"].erase("max_eval_batches");
  ck.meta["config"]["model"].erase("positions");
  save_checkpoint(last, ck);
  TrainOptions res = quiet();
  res.resume = true;
  EXPECT_EQ(train(b, res).status, TrainStatus::Finished);
}

// Parameter groups through the trainer: a frozen group (lr_scale 0) ends where it started
// while the rest trains, the resolved config in the run directory holds the groups, and a
// run with groups resumes to the weights of an uninterrupted one.
TEST_F(TrainTest, ParameterGroupsReachTheOptimizerAndResume) {
  const std::vector<std::string> sets = {
      R"(train.optimizer.groups=[{"match": "blocks.0", "lr_scale": 0}, {"match": "head", "lr": 0.01}])",
      "train.epochs=1", "train.max_steps=8", "model.dropout=0"};
  Config a = config("a", sets);
  ASSERT_EQ(a.train.optimizer.groups.size(), 2u);
  const auto initial = build_model(a, 10, 1000)->state();  // the weights the run starts from (same seed)
  const TrainResult ra = train(a, quiet());
  ASSERT_EQ(ra.status, TrainStatus::Finished);
  std::ifstream cf(fs::path(ra.run_dir) / "config.json");
  const json saved = json::parse(cf);
  EXPECT_EQ(saved["train"]["optimizer"]["groups"], a.resolved["train"]["optimizer"]["groups"]);
  EXPECT_EQ(saved["train"]["optimizer"]["groups"][1]["lr"], 0.01);

  const Checkpoint ca = load_checkpoint(ra.run_dir + "/last.ckpt");
  std::map<std::string, Tensor> final_weights;
  for (const auto& [n, t] : ca.tensors)
    if (n.rfind("model.", 0) == 0) final_weights[n.substr(6)] = t;
  size_t frozen = 0, moved = 0;
  for (const auto& [n, t0] : initial) {
    const Tensor& t1 = final_weights.at(n);
    const bool same = std::memcmp(t0.data(), t1.data(), static_cast<size_t>(t0.numel()) * 4) == 0;
    if (n.rfind("blocks.0.", 0) == 0) {
      EXPECT_TRUE(same) << n << " is in a group with lr_scale 0 but moved";
      ++frozen;
    } else if (!same) {
      ++moved;
    }
  }
  EXPECT_GT(frozen, 0u);
  EXPECT_GT(moved, 0u);

  Config b = config("b", sets);
  TrainOptions stop = quiet();
  stop.stop_after_step = 3;
  ASSERT_EQ(train(b, stop).status, TrainStatus::Interrupted);
  TrainOptions res = quiet();
  res.resume = true;
  const TrainResult rb = train(b, res);
  ASSERT_EQ(rb.status, TrainStatus::Finished);
  const Checkpoint cb = load_checkpoint(rb.run_dir + "/last.ckpt");
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  for (size_t i = 0; i < ca.tensors.size(); ++i) {
    ASSERT_EQ(ca.tensors[i].first, cb.tensors[i].first);
    const Tensor &x = ca.tensors[i].second, &y = cb.tensors[i].second;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), static_cast<size_t>(x.numel()) * 4), 0) << ca.tensors[i].first;
  }
  // A changed group is a changed config: resume refuses it, naming the element's key.
  Config changed = config("b", {R"(train.optimizer.groups=[{"match": "blocks.0", "lr_scale": 0.5}, )"
                                R"({"match": "head", "lr": 0.01}])",
                                "train.epochs=1", "train.max_steps=8", "model.dropout=0"});
  try {
    train(changed, res);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.optimizer.groups[0].lr_scale"), std::string::npos) << e.what();
  }
}

TEST_F(TrainTest, OverfitOneBatch) {
  Config cfg = config("of", {"train.epochs=60", "model.dropout=0", "train.schedule.type=constant",
                             "train.schedule.warmup_epochs=0"});
  TrainOptions o = quiet();
  o.overfit_batch = true;
  TrainResult r = train(cfg, o);
  const auto m = read_metrics(r.run_dir);
  EXPECT_GT(m.back()["train_accuracy"].get<double>(), 0.95);
}

TEST_F(TrainTest, MaxStepsStopsEarly) {
  Config cfg = config("ms", {"train.max_steps=7"});
  TrainResult r = train(cfg, quiet());
  EXPECT_EQ(r.summary["steps"].get<int64_t>(), 7);
  EXPECT_EQ(read_metrics(r.run_dir).size(), 1u);
}

TEST_F(TrainTest, DivergenceStopsAndKeepsLastGoodCheckpoint) {
  // A huge learning rate with no clipping blows the loss up within the second epoch.
  Config cfg = config("div", {"train.optimizer.lr=1e6", "train.grad_clip=0", "train.schedule.type=constant",
                              "train.schedule.warmup_epochs=0", "train.optimizer.type=sgd",
                              "train.optimizer.momentum=0"});
  const TrainResult r = train(cfg, quiet());
  ASSERT_EQ(r.status, TrainStatus::Diverged);
  EXPECT_NE(r.summary.at("message").get<std::string>().find("diverged"), std::string::npos) << r.summary.dump();
}

TEST(Checkpoint, RoundTripAndDamageDetection) {
  const std::string dir = test::temp_dir("ckpt");
  Checkpoint c;
  c.meta = {{"hello", "world"}};
  Generator g(1);
  c.tensors = {{"a", randn({3, 4}, g)}, {"b.c", randn({5}, g)}, {"s", scalar(2.0f)}};
  const std::string p = dir + "/x.ckpt";
  save_checkpoint(p, c);
  Checkpoint r = load_checkpoint(p);
  EXPECT_EQ(r.meta["hello"], "world");
  ASSERT_EQ(r.tensors.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r.tensors[i].first, c.tensors[i].first);
    EXPECT_EQ(r.tensors[i].second.to_vector(), c.tensors[i].second.to_vector());
  }
  // safetensors layout: u64 header length, then a JSON header with dtype/shape/offsets.
  {
    std::ifstream in(p, std::ios::binary);
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    std::string h(n, ' ');
    in.read(h.data(), static_cast<std::streamsize>(n));
    const json hj = json::parse(h);
    EXPECT_EQ(hj["a"]["dtype"], "F32");
    EXPECT_EQ(hj["a"]["shape"], json({3, 4}));
    EXPECT_EQ(hj["a"]["data_offsets"], json({0, 48}));
  }
  // A flipped byte in the data fails the CRC; a truncated file is rejected; no temp files remain.
  {
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  EXPECT_THROW(load_checkpoint(p), Error);
  save_checkpoint(p, c);
  fs::resize_file(p, fs::file_size(p) - 4);
  EXPECT_THROW(load_checkpoint(p), Error);
  int files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
}

TEST(Schedule, WarmupCosineStep) {
  ScheduleConfig s;
  s.type = "cosine";
  s.warmup_epochs = 1;
  EXPECT_NEAR(schedule_lr(s, 1.0, 0, 10, 100), 0.1, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 1.0, 9, 10, 100), 1.0, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 1.0, 10, 10, 100), 1.0, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 1.0, 55, 10, 100), 0.5, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 1.0, 100, 10, 100), 0.0, 1e-12);
  s.type = "step";
  s.warmup_epochs = 0;
  s.step_epochs = 2;
  s.gamma = 0.5;
  EXPECT_DOUBLE_EQ(schedule_lr(s, 1.0, 19, 10, 100), 1.0);
  EXPECT_DOUBLE_EQ(schedule_lr(s, 1.0, 20, 10, 100), 0.5);
  EXPECT_DOUBLE_EQ(schedule_lr(s, 1.0, 45, 10, 100), 0.25);
  s.type = "constant";
  EXPECT_DOUBLE_EQ(schedule_lr(s, 0.3, 77, 10, 100), 0.3);
}

TEST(Optim, AdamWMatchesHandComputedSteps) {
  // One parameter, gradient 0.5 twice; torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, wd=0.01).
  Tensor p = from_vector({1}, {1.0f});
  nn::Parameter prm{"p", p, true};
  p.set_requires_grad(true);
  OptimizerConfig c;
  c.lr = 0.1;
  c.weight_decay = 0.01;
  auto opt = make_optimizer(c, {prm});
  double x = 1.0, m = 0, v = 0;
  for (int t = 1; t <= 2; ++t) {
    sum(scale(p, 0.5f)).backward();
    opt->step(0.1);
    opt->zero_grad();
    m = 0.9 * m + 0.1 * 0.5;
    v = 0.999 * v + 0.001 * 0.25;
    x = x * (1 - 0.1 * 0.01) - 0.1 * (m / (1 - std::pow(0.9, t))) / (std::sqrt(v / (1 - std::pow(0.999, t))) + 1e-8);
    EXPECT_NEAR(p.item(), x, 1e-5);  // the update runs in float32
  }
}

TEST(Optim, SgdNesterovMatchesHandComputedSteps) {
  Tensor p = from_vector({1}, {1.0f});
  p.set_requires_grad(true);
  OptimizerConfig c;
  c.type = "sgd";
  c.momentum = 0.9;
  c.nesterov = true;
  c.weight_decay = 0.1;
  auto opt = make_optimizer(c, {{"p", p, true}});
  double x = 1.0, buf = 0;
  for (int t = 1; t <= 3; ++t) {
    sum(scale(p, 2.0f)).backward();
    opt->step(0.05);
    opt->zero_grad();
    const double d = 2.0 + 0.1 * x;
    buf = t == 1 ? d : 0.9 * buf + d;
    x -= 0.05 * (d + 0.9 * buf);
    EXPECT_NEAR(p.item(), x, 1e-6);
  }
}

TEST(Optim, ClipGradNormScalesToMax) {
  Tensor a = from_vector({2}, {0, 0}).set_requires_grad(true);
  sum(mul(a, from_vector({2}, {3, 4}))).backward();  // grad (3, 4), norm 5
  const double n = clip_grad_norm({{"a", a, true}}, 1.0);
  EXPECT_DOUBLE_EQ(n, 5.0);
  EXPECT_NEAR(a.grad().at({0}), 0.6f, 1e-5);
  EXPECT_NEAR(a.grad().at({1}), 0.8f, 1e-5);
}
