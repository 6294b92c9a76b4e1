// The softlab command as a user runs it: exit codes (0, 2 for bad input, 130 when
// interrupted), messages that name the problem, and every verb end to end.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "softlab/image_io.hpp"
#include "softlab/softlab.hpp"
#include "cli_run.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {
using test::CliRun;
using test::slurp;
using test::softlab_cli;

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = test::temp_dir(std::string("cli_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    data = root + "/data";
    test::write_learnable_mnist(data, 600, 100);
    json cfg = test::tiny_config(data, root + "/run");
    cfg["train"]["epochs"] = 2;
    config = root + "/tiny.json";
    write(config, cfg.dump(2));
  }
  void TearDown() override { fs::remove_all(root); }
  CliRun run(const std::vector<std::string>& args) { return softlab_cli(args, root); }
  std::string root, data, config;
};
}  // namespace

TEST_F(CliTest, TrainEvalPredictEndToEnd) {
  CliRun t = run({"train", config, "--quiet"});
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("test_accuracy"), std::string::npos);
  CliRun e = run({"eval", root + "/run"});
  ASSERT_EQ(e.code, 0) << e.err;
  const json ej = json::parse(e.out);
  EXPECT_EQ(ej["examples"], 100);
  EXPECT_GT(ej["test_accuracy"].get<double>(), 0.3);
  // predict on an IDX image file, a PGM written from the test set, and with --json
  const std::string imgs = data + "/t10k-images-idx3-ubyte";
  CliRun p = run({"predict", "--checkpoint", root + "/run/last.ckpt", imgs, "--limit", "5"});
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_EQ(std::count(p.out.begin(), p.out.end(), '\n'), 5);
  Dataset test_set = read_idx(imgs, data + "/t10k-labels-idx1-ubyte");
  write_pnm(root + "/x.pgm", test_set, 0);
  CliRun pj = run({"predict", "--checkpoint", root + "/run/best.ckpt", "--json", root + "/x.pgm"});
  ASSERT_EQ(pj.code, 0) << pj.err;
  const json pred = json::parse(pj.out);
  EXPECT_GE(pred["class"].get<int>(), 0);
  EXPECT_LT(pred["class"].get<int>(), 10);
  // The head's probabilities (softmax here): one per class, summing to 1, largest at the class.
  const auto probs = pred.at("probabilities").get<std::vector<float>>();
  ASSERT_EQ(probs.size(), 10u);
  double total = 0.0;
  for (float q : probs) total += q;
  EXPECT_NEAR(total, 1.0, 1e-5);
  EXPECT_EQ(std::max_element(probs.begin(), probs.end()) - probs.begin(), pred["class"].get<int>());
}

// eval --set changes an inference-safe key (LSSAR's re-weighting power) for that
// evaluation only: another result, the weights and the run's files untouched; any other key
// of the trained model is refused with exit 2 naming it and the keys that may change.
TEST_F(CliTest, EvalWithInferenceOverrides) {
  CliRun t = run({"train", config, "--quiet", "--set", "model.attention.type=softplus"});
  ASSERT_EQ(t.code, 0) << t.err;
  const std::string ckpt_before = slurp(root + "/run/last.ckpt");
  CliRun plain = run({"eval", root + "/run"});
  CliRun sharp = run({"eval", root + "/run", "--set", "model.attention.p=4"});
  ASSERT_EQ(plain.code, 0) << plain.err;
  ASSERT_EQ(sharp.code, 0) << sharp.err;
  const json pj = json::parse(plain.out), sj = json::parse(sharp.out);
  EXPECT_FALSE(pj.contains("overrides"));
  EXPECT_EQ(sj["overrides"], json::array({"model.attention.p=4"}));
  EXPECT_NE(pj["test_loss"].get<double>(), sj["test_loss"].get<double>()) << "p did not reach the model";
  // The same model evaluated in-process with p = 4 gives the same loss.
  LoadedModel m = load_model(root + "/run/last.ckpt", false, {"model.attention.p=4"});
  EXPECT_EQ(m.config.model.attention["p"], 4.0);
  EXPECT_NEAR(evaluate(*m.model, load_dataset("mnist", data).test, m.norm, 64).loss, sj["test_loss"].get<double>(),
              1e-6);
  EXPECT_EQ(slurp(root + "/run/last.ckpt"), ckpt_before) << "eval --set touched the checkpoint";
  auto expect_refused = [&](const std::string& set, const std::vector<std::string>& needles) {
    CliRun r = run({"eval", root + "/run", "--set", set});
    EXPECT_EQ(r.code, 2) << set << ": " << r.err;
    for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "expected '" << n << "' in: " << r.err;
  };
  expect_refused("model.attention.causal=true", {"model.attention.causal", "model.attention.p"});
  expect_refused("model.attention.scale=2", {"model.attention.scale", "can change after training"});
  expect_refused("model.dim=8", {"model.dim", "inference-safe"});
  expect_refused("model.head.label_smoothing=0.1", {"model.head.label_smoothing", "none"});
  expect_refused("model.attention.p=0.5", {"model.attention.p"});  // out of range: the schema's check
  // softlab info says which keys may change.
  CliRun info = run({"info"});
  ASSERT_EQ(info.code, 0) << info.err;
  EXPECT_NE(info.out.find("re-weighting power"), std::string::npos);
  EXPECT_NE(info.out.find("inference-safe"), std::string::npos);
}

TEST_F(CliTest, BadInputExitsTwoNamingTheProblem) {
  auto expect_bad = [&](const std::vector<std::string>& args, const std::string& needle) {
    CliRun r = run(args);
    EXPECT_EQ(r.code, 2) << "args: " << args[0] << " ... stderr: " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
  };
  expect_bad({"train", root + "/missing.json"}, "missing.json");
  write(root + "/syntax.json", "{\"seed\": 1,\n \"data\": }");
  expect_bad({"train", root + "/syntax.json"}, "syntax.json");
  expect_bad({"train", config, "--set", "train.optimizer.lrr=0.1"}, "train.optimizer.lrr");
  // Arguments no option takes are errors, not silently dropped (a "--" before --set once
  // made a whole table train on the wrong data set).
  expect_bad({"train", config, "--", "--set", "data.dataset=mnist"}, "unexpected argument '--set'");
  expect_bad({"validate", config, config}, "unexpected argument");
  expect_bad({"train", config, "--set", "model.heads=3"}, "model.heads");
  expect_bad({"train", config, "--set", "model.attention.type=nope"}, "nope");
  expect_bad({"train", config, "--set", "train.epochs=-1"}, "train.epochs");
  expect_bad({"validate", config, "--set", "model.dim=abc"}, "model.dim");
  expect_bad({"train", config, "--no-such-flag"}, "no-such-flag");
  expect_bad({"frobnicate"}, "frobnicate");
  expect_bad({"eval", root + "/nothing-here"}, "nothing-here");
  expect_bad({"predict", "--checkpoint", root + "/nothing.ckpt", config}, "nothing.ckpt");
  // A corrupt data file: the IDX header claims more images than the file holds.
  const std::string bad_data = root + "/baddata";
  test::write_learnable_mnist(bad_data, 50, 10);
  {
    std::fstream f(bad_data + "/t10k-images-idx3-ubyte", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4);
    const char big[4] = {0, 0, 0x27, 0x10};  // 10000 images
    f.write(big, 4);
  }
  expect_bad({"train", config, "--set", "data.path=" + bad_data, "--out", root + "/r2"}, "t10k-images-idx3-ubyte");
  // A missing data set says where it looked.
  expect_bad({"train", config, "--set", "data.path=" + root + "/void", "--out", root + "/r3"}, "void");
}

// softlab validate lists each parameter group with its settings and parameters, then the
// defaults; a group whose pattern selects nothing fails validation (exit 2) naming it.
TEST_F(CliTest, ValidateListsParameterGroups) {
  // The motivating use: selective attention's temperatures at their own learning rate.
  CliRun v = run({"validate", config, "--set", "model.attention.type=selective", "--set",
                  R"(train.optimizer.groups=[{"match": "*.attn.attn.*", "lr": 0.01}, {"match": "blocks.1"}])",
                  "--set", "train.optimizer.groups[1].lr_scale=0.5",
                  "--set", "train.optimizer.groups[1].weight_decay=0.1"});
  ASSERT_EQ(v.code, 0) << v.err;
  const json resolved = json::parse(v.out);
  EXPECT_EQ(resolved["train"]["optimizer"]["groups"][0]["match"], "*.attn.attn.*");
  EXPECT_EQ(resolved["train"]["optimizer"]["groups"][1]["lr_scale"], 0.5);
  // tiny_config: lr 0.003, weight decay 0.05, depth 2 with 2 heads of 16. Group 0 takes the
  // 5 temperature parameters of each block (none of which decays), group 1 the rest of block 1.
  for (const char* line : {
           "parameter groups (train.optimizer.groups; a parameter takes the first group that matches it):\n",
           "  [0] \"*.attn.attn.*\": 10 parameters; lr 0.01 (lr_scale 3.33333), weight_decay 0.05 (none of them "
           "decays):\n",
           "      blocks.*.attn.attn.beta (x2), blocks.*.attn.attn.w_q (x2), blocks.*.attn.attn.b_q (x2),",
           "  [1] \"blocks.1\": 12 parameters; lr 0.0015 (lr_scale 0.5), weight_decay 0.1 on 4 of them (the others "
           "never decay):\n",
           "      blocks.1.norm1.weight, blocks.1.norm1.bias, blocks.1.attn.qkv.weight,",
           "  default: ", "cls_token, pos_embed, patch_embed.proj.weight"})
    EXPECT_NE(v.err.find(line), std::string::npos) << "missing '" << line << "' in:\n" << v.err;
  EXPECT_EQ(v.err.find("blocks.1.attn.attn.beta,"), std::string::npos) << "listed in group 1 too:\n" << v.err;
  EXPECT_NE(v.err.find("ok: "), std::string::npos) << v.err;

  // Without groups: one line says so.
  CliRun none = run({"validate", config});
  ASSERT_EQ(none.code, 0) << none.err;
  EXPECT_NE(none.err.find("parameter groups: none"), std::string::npos) << none.err;

  // softmax attention has no attn.attn parameters: the same group is an error naming it.
  CliRun bad = run({"validate", config, "--set", R"(train.optimizer.groups=[{"match": "*.attn.attn.*", "lr": 0.01}])"});
  EXPECT_EQ(bad.code, 2) << bad.err;
  EXPECT_NE(bad.err.find("train.optimizer.groups[0].match: '*.attn.attn.*' selects no parameter of this model"),
            std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("cls_token"), std::string::npos) << bad.err;
  // Errors found while resolving name the element too, and exit 2.
  CliRun both =
      run({"validate", config, "--set", R"(train.optimizer.groups=[{"match": "head", "lr": 1, "lr_scale": 2}])"});
  EXPECT_EQ(both.code, 2) << both.err;
  EXPECT_NE(both.err.find("train.optimizer.groups[0]: sets both lr"), std::string::npos) << both.err;
}

TEST_F(CliTest, ValidateAndInfo) {
  CliRun v = run({"validate", config, "--set", "model.attention.type=softmax"});
  ASSERT_EQ(v.code, 0) << v.err;
  const json resolved = json::parse(v.out);
  EXPECT_EQ(resolved["model"]["attention"]["type"], "softmax");
  EXPECT_TRUE(resolved["train"].contains("max_steps"));  // defaults are filled in
  CliRun i = run({"info"});
  ASSERT_EQ(i.code, 0);
  EXPECT_NE(i.out.find("softmax"), std::string::npos);
  EXPECT_NE(i.out.find("label_smoothing"), std::string::npos);
  EXPECT_NE(i.out.find("threads"), std::string::npos);
  CliRun h = run({"train", "--help"});
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("--resume"), std::string::npos);
}

// SIGINT during training saves last.ckpt and exits 130; --resume then finishes the run.
TEST_F(CliTest, InterruptSavesCheckpointAndResumes) {
  const std::string out = root + "/long";
  const pid_t pid = test::start_softlab(
      {"train", config, "--out", out, "--set", "train.epochs=500", "--progress", "plain"}, root + "/long.log");
  ASSERT_GT(pid, 0);
  // Wait until training has finished an epoch (metrics.jsonl exists), then interrupt.
  const auto start = std::chrono::steady_clock::now();
  while (!fs::exists(out + "/metrics.jsonl") && std::chrono::steady_clock::now() - start < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(out + "/metrics.jsonl")) << slurp(root + "/long.log");
  kill(pid, SIGINT);
  EXPECT_EQ(test::wait_for_exit(pid, 120), 130) << slurp(root + "/long.log");
  EXPECT_TRUE(fs::exists(out + "/last.ckpt"));
  EXPECT_NE(slurp(root + "/long.log").find("interrupted"), std::string::npos);
  // Resume with a step cap already reached: it loads the checkpoint and finishes at once.
  CliRun r = run({"train", config, "--out", out, "--resume", "--set", "train.epochs=500", "--set", "train.max_steps=1",
               "--quiet"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out + "/summary.json"));
}

// info --params: one row per tensor (name, shape, count) and totals that add up; the model
// is built from the config alone (no data set is read).
TEST_F(CliTest, InfoParamsListsEveryTensorWithTotals) {
  // A config whose data path does not exist: --params must not need the data.
  json cfg = json::parse(slurp(config));
  cfg["data"]["path"] = root + "/no-data-here";
  write(root + "/nodata.json", cfg.dump(2));
  CliRun r = run({"info", "--params", root + "/nodata.json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::regex row(R"(^  (\S+)\s+(\[[0-9, ]*\])\s+([0-9]+)(  no weight decay)?$)");
  std::map<std::string, std::pair<std::string, int64_t>> rows;
  std::set<std::string> undecayed;
  int64_t sum = 0, total = -1;
  std::istringstream lines(r.out);
  std::string line;
  bool in_params = false;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (line.rfind("parameters", 0) == 0) in_params = true;
    if (line.rfind("buffers", 0) == 0) in_params = false;
    if (in_params && line.rfind("  total: ", 0) == 0) total = std::stoll(line.substr(9));
    if (in_params && std::regex_match(line, m, row)) {
      rows[m[1]] = {m[2], std::stoll(m[3])};
      if (m[4].matched) undecayed.insert(m[1]);
      sum += std::stoll(m[3]);
    }
  }
  ASSERT_TRUE(rows.count("blocks.0.attn.qkv.weight")) << r.out;
  EXPECT_EQ(rows["blocks.0.attn.qkv.weight"], std::make_pair(std::string("[96, 32]"), int64_t{3072}));
  EXPECT_EQ(rows["head.weight"], std::make_pair(std::string("[10, 32]"), int64_t{320}));
  EXPECT_EQ(rows["cls_token"], std::make_pair(std::string("[1, 1, 32]"), int64_t{32}));
  EXPECT_EQ(total, sum) << r.out;
  // The decay column is the model's flag for each parameter.
  auto model = build_model(parse_config(resolve_config(cfg)), 10, 1000);
  for (const auto& p : model->parameters()) EXPECT_EQ(undecayed.count(p.name) == 1, !p.decay) << p.name;
  EXPECT_TRUE(undecayed.count("cls_token") && !undecayed.count("head.weight")) << r.out;
  // The same count as validate's and the library's.
  CliRun v = run({"validate", config});
  ASSERT_EQ(v.code, 0) << v.err;
  EXPECT_NE(v.err.find("ok: " + std::to_string(total) + " parameters"), std::string::npos) << v.err;
  EXPECT_EQ(total, model->num_parameters());
  EXPECT_EQ(rows.size(), model->named_parameters().size());
  EXPECT_NE(r.out.find("buffers (fixed, saved with the state): none"), std::string::npos) << r.out;

  // --set applies, and a head with a buffer lists it apart from the parameters.
  CliRun s = run({"info", "--params", config, "--set", "model.dim=48", "--set", "model.head.type=ebv"});
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_TRUE(std::regex_search(s.out, std::regex(R"(\n  blocks\.0\.attn\.qkv\.weight +\[144, 48\] +6912\n)"))) << s.out;
  EXPECT_TRUE(std::regex_search(s.out, std::regex(R"(buffers[^\n]*:\n  head\.basis\s+\[[0-9, ]+\]\s+[0-9]+\n)")))
      << s.out;
}

// The child process has the built-in entries; this process may have registered more (the
// registry tests and plugin tests add modules), so the comparison is with the built-ins.
template <class Registry>
std::vector<std::string> builtin_names(const Registry& registry) {
  std::vector<std::string> names;
  for (const auto& e : registry.entries())
    if (e.builtin) names.push_back(e.name);
  return names;
}

TEST_F(CliTest, InfoListPrintsTheRegisteredNames) {
  for (const auto& [which, names] : {std::pair{std::string("attention"), builtin_names(attention_registry())},
                                     std::pair{std::string("heads"), builtin_names(head_registry())}}) {
    CliRun r = run({"info", "--list", which});
    ASSERT_EQ(r.code, 0) << r.err;
    std::string expected;
    for (const auto& n : names) expected += n + "\n";
    EXPECT_EQ(r.out, expected);
    EXPECT_GE(names.size(), 7u);
  }
}

TEST_F(CliTest, InfoBadInputsExitTwo) {
  auto expect_bad = [&](const std::vector<std::string>& args, const std::string& needle) {
    CliRun r = run(args);
    EXPECT_EQ(r.code, 2) << "stderr: " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  };
  expect_bad({"info", "--list", "bogus"}, "valid: attention, heads");
  expect_bad({"info", "--list", "head"}, "did you mean 'heads'");
  expect_bad({"info", "--params", root + "/missing.json"}, "missing.json");
  expect_bad({"info", "--params"}, "no config file given");
  expect_bad({"info", "--params", config, "--set", "model.dim=abc"}, "model.dim");
  expect_bad({"info", "--params", config, "--set", "model.heads=3"}, "model.heads");
  expect_bad({"info", "--params", config, "--set", "model.attention.type=nope"}, "nope");
  expect_bad({"info", config}, "only with --params");
  expect_bad({"info", "--set", "model.dim=48"}, "--set applies to the config of --params");
  expect_bad({"info", "--params", config, "--list", "heads"}, "give one of them");
}
