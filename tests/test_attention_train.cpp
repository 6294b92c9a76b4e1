// Every registered attention module trains end to end from a config (only
// model.attention.type changed), saves and reloads; the block options QK-norm and
// LayerScale add their parameters and train too, and so do the papers' block extras (the
// value conv, the gate, the hybrid norm). The causal ViT trains with every module that has
// a causal form, and its class token (last) sees every patch.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "softlab/nn/vit.hpp"
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

// The block extras with the module whose paper uses them.
struct ExtrasCase {
  std::string name, module;
  std::vector<std::string> sets;
  std::vector<std::string> params;  // parameters the extras add (block 0)
};

class BlockExtrasTrain : public ::testing::TestWithParam<ExtrasCase> {};

TEST_P(BlockExtrasTrain, LearnsAndReloads) {
  const ExtrasCase& c = GetParam();
  const std::string root = test::temp_dir("extras_" + c.name), data = root + "/data";
  test::write_learnable_mnist(data, 1000, 200);
  json j = test::tiny_config(data, root + "/run");
  apply_override(j, "model.attention.type=" + c.module);
  apply_override(j, "train.epochs=2");
  for (const auto& s : c.sets) apply_override(j, s);
  const TrainResult r = train(parse_config(resolve_config(j)), test::quiet());
  ASSERT_EQ(r.status, TrainStatus::Finished);
  EXPECT_GT(r.summary["test_accuracy"].get<double>(), 0.3) << r.summary.dump();
  LoadedModel lm = load_model((fs::path(r.run_dir) / "last.ckpt").string());
  std::set<std::string> names;
  for (const auto& p : lm.model->parameters()) names.insert(p.name);
  for (const auto& n : c.params) EXPECT_TRUE(names.count(n)) << n;
  DataSplit d = load_dataset("mnist", data);
  EXPECT_DOUBLE_EQ(evaluate(*lm.model, d.test, lm.norm, 64).accuracy, r.summary["test_accuracy"].get<double>());
  fs::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(
    Papers, BlockExtrasTrain,
    ::testing::Values(
        ExtrasCase{"mala_gate_lepe", "mala", {"model.attn_gate=true", "model.value_conv=5"},
                   {"blocks.0.attn.gate.weight", "blocks.0.attn.value_conv.weight", "blocks.0.attn.value_conv.bias"}},
        ExtrasCase{"soft_head_conv", "soft", {"model.value_conv=3", "model.value_conv_groups=head",
                                              "model.attention.normalization=true"},
                   {"blocks.0.attn.value_conv.weight"}},
        ExtrasCase{"sigmoid_hybrid_norm", "sigmoid", {"model.attn_out_norm=true", "model.qk_norm=true"},
                   {"blocks.0.attn.out_norm.weight", "blocks.0.attn.out_norm.bias"}}),
    [](const ::testing::TestParamInfo<ExtrasCase>& info) { return info.param.name; });

// The causal ViT with every module that has a causal form.
std::vector<std::string> causal_modules() {
  std::vector<std::string> out;
  for (const auto& e : attention_registry().entries())
    if (e.caps.causal) out.push_back(e.name);
  return out;
}

class CausalViT : public ::testing::TestWithParam<std::string> {};

TEST_P(CausalViT, Learns) {
  const std::string root = test::temp_dir("causal_vit_" + GetParam()), data = root + "/data";
  test::write_learnable_mnist(data, 1000, 200);
  json j = test::tiny_config(data, root + "/run");
  apply_override(j, "model.attention.type=" + GetParam());
  apply_override(j, "model.causal=true");
  apply_override(j, "train.epochs=2");
  const TrainResult r = train(parse_config(resolve_config(j)), test::quiet());
  ASSERT_EQ(r.status, TrainStatus::Finished);
  EXPECT_GT(r.summary["test_accuracy"].get<double>(), 0.3) << r.summary.dump();
  fs::remove_all(root);
}

// The class token comes after the patches, so under the causal mask it sees all of them:
// the scores move when only the first patch or only the last patch of the image changes. A
// class token placed first would see itself alone, and the scores would not move at all.
TEST_P(CausalViT, ClassTokenSeesEveryPatch) {
  json j = test::tiny_config("unused", "unused");
  apply_override(j, "model.attention.type=" + GetParam());
  apply_override(j, "model.causal=true");
  apply_override(j, "model.dropout=0");
  const Config cfg = parse_config(resolve_config(j));
  nn::ViT vit(cfg.model, 10, 100, 5);
  vit.eval();
  NoGradGuard ng;
  Generator g(2);
  // Weights well away from the small initialisation, so that no module's map is flat or
  // zero at this point (relu attention's rows can be all zero at init).
  for (auto p : vit.parameters()) {
    float* w = p.tensor.mutable_data();
    for (int64_t i = 0; i < p.tensor.numel(); ++i) w[i] = g.uniform(-0.5f, 0.5f);
  }
  const Tensor img = uniform({1, 1, 28, 28}, g, 0.0f, 1.0f);
  const std::vector<float> base = vit.features(img).to_vector();
  for (int corner : {0, 1}) {  // top-left patch (first token), bottom-right patch (last)
    Tensor t = img.clone();
    float* p = t.mutable_data();
    for (int y = 0; y < 7; ++y)
      for (int x = 0; x < 7; ++x) p[(corner ? 21 + y : y) * 28 + (corner ? 21 + x : x)] += 0.5f;
    const std::vector<float> moved = vit.features(t).to_vector();
    double diff = 0.0;
    for (size_t i = 0; i < base.size(); ++i) diff = std::max(diff, static_cast<double>(std::fabs(moved[i] - base[i])));
    EXPECT_GT(diff, 1e-4) << (corner ? "the last" : "the first") << " patch does not reach the class token";
  }
}

INSTANTIATE_TEST_SUITE_P(EveryCausalModule, CausalViT, ::testing::ValuesIn(causal_modules()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

INSTANTIATE_TEST_SUITE_P(All, AttentionTrain, ::testing::ValuesIn(attention_registry().names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(SoftmaxAndSigmoid, BlockOptionsTrain, ::testing::Values("softmax", "sigmoid"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
