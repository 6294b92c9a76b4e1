// Every registered attention module trains end to end from a config (only
// model.attention.type changed), saves and reloads; the block options QK-norm and
// LayerScale add their parameters and train too.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "softlab/softlab.hpp"
#include "softlab/train.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

class AttentionTrain : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    root = test::temp_dir("attn_" + GetParam());
    data = root + "/data";
    test::write_learnable_mnist(data, 1000, 200);
  }
  void TearDown() override { fs::remove_all(root); }
  TrainResult run(const std::vector<std::string>& sets) {
    json j = test::tiny_config(data, root + "/run");
    apply_override(j, "model.attention.type=" + GetParam());
    for (const auto& s : sets) apply_override(j, s);
    TrainOptions o;
    o.quiet = true;
    return train(parse_config(resolve_config(j)), o);
  }
  std::string root, data;
};

TEST_P(AttentionTrain, LearnsAndReloads) {
  const TrainResult r = run({});
  ASSERT_EQ(r.status, TrainStatus::Finished);
  // Chance is 0.1; softmax attention reaches about 0.9 on this data in 3 epochs.
  EXPECT_GT(r.summary["test_accuracy"].get<double>(), 0.6) << r.summary.dump();
  EXPECT_EQ(r.summary["attention"]["type"], GetParam());
  LoadedModel lm = load_model((fs::path(r.run_dir) / "last.ckpt").string());
  DataSplit d = load_dataset("mnist", data);
  EXPECT_DOUBLE_EQ(evaluate(*lm.model, d.test, lm.norm, 64).accuracy, r.summary["test_accuracy"].get<double>());
}

// The options belong to the block, not the module: two modules cover them.
class BlockOptionsTrain : public AttentionTrain {};

TEST_P(BlockOptionsTrain, WithQkNormAndLayerScale) {
  const TrainResult r = run({"model.qk_norm=true", "model.layer_scale=0.1", "train.epochs=2"});
  ASSERT_EQ(r.status, TrainStatus::Finished);
  EXPECT_GT(r.summary["test_accuracy"].get<double>(), 0.3) << r.summary.dump();
  LoadedModel lm = load_model((fs::path(r.run_dir) / "last.ckpt").string());
  std::set<std::string> names;
  for (const auto& p : lm.model->parameters()) names.insert(p.name);
  for (const char* n : {"blocks.0.attn.q_norm.weight", "blocks.0.attn.k_norm.weight", "blocks.0.ls1", "blocks.1.ls2"})
    EXPECT_TRUE(names.count(n)) << n;
}

INSTANTIATE_TEST_SUITE_P(All, AttentionTrain, ::testing::ValuesIn(attention_registry().names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(SoftmaxAndSigmoid, BlockOptionsTrain, ::testing::Values("softmax", "sigmoid"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
