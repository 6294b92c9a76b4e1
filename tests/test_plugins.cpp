// Plugins: user modules loaded at run time. The example project's modules
// (examples/custom_attention, built here as the test_custom_attention plugin) train from
// the command line, in sweeps and in this process; a plugin that is not one, or that
// registers a taken name, is a clear error (exit 2).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cli_run.hpp"
#include "gradcheck.hpp"
#include "softlab/softlab.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

const std::string kPlugin = SOFTLAB_TEST_PLUGIN;
const std::string kExampleConfig = std::string(SOFTLAB_CUSTOM_ATTENTION_DIR) + "/bins_taylor.json";

class PluginCli : public ::testing::Test {
 protected:
  void SetUp() override { root = test::temp_dir("plugin_cli"); }
  void TearDown() override { fs::remove_all(root); }
  test::CliRun run(std::vector<std::string> args) { return test::softlab_cli(args, root); }
  std::string root;
};

TEST_F(PluginCli, TrainsEvaluatesAndSweepsTheExampleModules) {
  const std::string out = root + "/taylor";
  const auto t = run({"train", kExampleConfig, "--plugin", kPlugin, "--out", out, "--set", "train.epochs=2",
                      "--set", "data.train_size=600", "--progress", "plain"});
  ASSERT_EQ(t.code, 0) << t.err;
  const json summary = json::parse(test::slurp(out + "/summary.json"));
  EXPECT_EQ(summary["attention"]["type"], "taylor");
  const double acc = summary["test_accuracy"].get<double>();
  EXPECT_TRUE(std::isfinite(acc) && acc > 0.0) << summary.dump();

  // Evaluating the run needs the module again; without the plugin the error says so.
  const auto e = run({"eval", out, "--plugin", kPlugin});
  EXPECT_EQ(e.code, 0) << e.err;
  const auto missing = run({"eval", out});
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find("'taylor'"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("--plugin"), std::string::npos) << missing.err;

  // A sweep passes the plugin on to its child runs.
  const json sweep = {{"base", kExampleConfig},
                      {"grid", {{"model.attention.type", {"taylor", "relu_linear"}}}},
                      {"set", {{"model.causal", false}, {"train.epochs", 1}, {"data.train_size", 300}}},
                      {"seeds", {0}},
                      {"out", root + "/sweep"}};
  std::ofstream(root + "/sweep.json") << sweep.dump();
  const auto s = run({"sweep", root + "/sweep.json", "--plugin", kPlugin});
  ASSERT_EQ(s.code, 0) << s.err << s.out;
  const std::string csv = test::slurp(root + "/sweep/results.csv");
  EXPECT_NE(csv.find("taylor"), std::string::npos) << csv;
  EXPECT_NE(csv.find("relu_linear"), std::string::npos) << csv;
  EXPECT_EQ(csv.find("failed"), std::string::npos) << csv;
}

TEST_F(PluginCli, InfoListsPluginModules) {
  const auto list = run({"info", "--list", "attention", "--plugin", kPlugin});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("\ntaylor\n"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("\nrelu_linear\n"), std::string::npos) << list.out;
  const auto info = run({"info", "--plugin", kPlugin});
  ASSERT_EQ(info.code, 0) << info.err;
  EXPECT_NE(info.out.find("taylor"), std::string::npos) << info.out;
  const auto without = run({"info", "--list", "attention"});
  EXPECT_EQ(without.out.find("taylor"), std::string::npos) << without.out;
}

TEST_F(PluginCli, CapabilitiesOfPluginModulesAreEnforced) {
  // relu_linear has no causal form: a causal model with it is refused, naming both keys.
  const auto bad = run({"validate", kExampleConfig, "--plugin", kPlugin, "--set", "model.attention.type=relu_linear"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("model.causal"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("relu_linear"), std::string::npos) << bad.err;
  const auto ok = run({"validate", kExampleConfig, "--plugin", kPlugin, "--set", "model.attention.type=relu_linear",
                       "--set", "model.causal=false"});
  EXPECT_EQ(ok.code, 0) << ok.err;
  // Neither example module claims caps.padding: a bidirectional model on padded recall data
  // is refused, naming the module and the key; causal, right padding needs nothing of it.
  const std::vector<std::string> recall = {"--set", "data.dataset=synthetic:recall", "--set", "data.min_length=8",
                                           "--set", "model.target=all"};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), recall.begin(), recall.end());
    return run(args);
  };
  const auto pad = with({"validate", kExampleConfig, "--plugin", kPlugin, "--set", "model.attention.type=relu_linear",
                         "--set", "model.causal=false"});
  EXPECT_EQ(pad.code, 2);
  EXPECT_NE(pad.err.find("data.min_length"), std::string::npos) << pad.err;
  EXPECT_NE(pad.err.find("'relu_linear' cannot take padded batches"), std::string::npos) << pad.err;
  const auto causal_pad = with({"validate", kExampleConfig, "--plugin", kPlugin});
  EXPECT_EQ(causal_pad.code, 0) << causal_pad.err;
}

TEST_F(PluginCli, BadPluginsAreClearErrors) {
  const auto dup = run({"validate", kExampleConfig, "--plugin", SOFTLAB_TEST_DUPLICATE_PLUGIN});
  EXPECT_EQ(dup.code, 2);
  EXPECT_NE(dup.err.find("'softmax'"), std::string::npos) << dup.err;
  EXPECT_NE(dup.err.find("taken"), std::string::npos) << dup.err;
  EXPECT_NE(dup.err.find(SOFTLAB_TEST_DUPLICATE_PLUGIN), std::string::npos) << dup.err;

  const auto notp = run({"validate", kExampleConfig, "--plugin", SOFTLAB_TEST_NOT_A_PLUGIN});
  EXPECT_EQ(notp.code, 2);
  EXPECT_NE(notp.err.find("not a softlab plugin"), std::string::npos) << notp.err;

  const auto gone = run({"train", kExampleConfig, "--plugin", root + "/missing.so", "--out", root + "/r"});
  EXPECT_EQ(gone.code, 2);
  EXPECT_NE(gone.err.find("missing.so"), std::string::npos) << gone.err;
  EXPECT_FALSE(fs::exists(root + "/r"));

  std::ofstream(root + "/garbage.so") << "not an ELF file";
  const auto garbage = run({"validate", kExampleConfig, "--plugin", root + "/garbage.so"});
  EXPECT_EQ(garbage.code, 2);
  EXPECT_NE(garbage.err.find("cannot load"), std::string::npos) << garbage.err;
}

// In this process: the plugin's row map runs in the fused kernel and matches the same
// maths composed from primitive ops, values and gradients, in both modes.
TEST(PluginInProcess, TaylorRowMapMatchesComposedMaths) {
  load_plugin(kPlugin);
  load_plugin(kPlugin);  // a second load of the same file is a no-op, not a taken name
  ASSERT_NE(attention_registry().find("taylor"), nullptr);
  EXPECT_FALSE(attention_registry().find("taylor")->builtin);
  EXPECT_EQ(loaded_plugins().size(), 1u);
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    AttentionContext ctx;
    ctx.dim = 8, ctx.heads = 2, ctx.head_dim = 4, ctx.seq_len = 7;
    auto module = make_attention({{"type", "taylor"}, {"causal", causal}}, ctx);
    Generator g(3);
    const Shape s({2, 2, 7, 4});
    Tensor q = randn(s, g).set_requires_grad(true), k = randn(s, g).set_requires_grad(true),
           v = randn(s, g).set_requires_grad(true);
    // Composed: f = 1 + x + x^2/2 on the visible logits, zero elsewhere, rows normalised.
    auto composed = [&](const Tensor& q_, const Tensor& k_, const Tensor& v_) {
      const Tensor x = scale(matmul(q_, k_, false, true), 0.5f);  // Dh = 4: s = 1/2
      Tensor f = add_scalar(add(x, scale(mul(x, x), 0.5f)), 1.0f);
      if (causal) {
        Tensor mask = zeros({7, 7});
        for (int i = 0; i < 7; ++i)
          for (int j = 0; j <= i; ++j) mask.mutable_data()[i * 7 + j] = 1.0f;
        f = mul(f, mask);
      }
      return matmul(div(f, sum(f, -1, true)), v_);
    };
    const Tensor fused = module->forward(q, k, v), ref = composed(q, k, v);
    for (int64_t i = 0; i < fused.numel(); ++i) EXPECT_NEAR(fused.data()[i], ref.data()[i], 1e-5f) << i;
    // Gradients: the same upstream gradient through both.
    const Tensor w = randn(s, g);
    std::vector<std::vector<float>> grads[2];
    for (int which = 0; which < 2; ++which) {
      for (Tensor* t : {&q, &k, &v}) t->zero_grad();
      const Tensor o = which == 0 ? module->forward(q, k, v) : composed(q, k, v);
      sum(mul(o, w)).backward();
      for (Tensor* t : {&q, &k, &v}) grads[which].emplace_back(t->grad().data(), t->grad().data() + t->numel());
    }
    for (size_t t = 0; t < 3; ++t)
      for (size_t i = 0; i < grads[0][t].size(); ++i)
        EXPECT_NEAR(grads[0][t][i], grads[1][t][i], 1e-4f + 1e-4f * std::abs(grads[1][t][i])) << "tensor " << t << " " << i;
  }
}

}  // namespace
