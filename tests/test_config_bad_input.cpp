// Hostile input to the config, JSON and sweep readers: every one is refused as bad input
// (softlab::Error of kind BadInput, exit code 2) with a message that names the file and the
// key, never a crash, an "internal error" or a value that silently wrapped around.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "cli_run.hpp"
#include "config/config_schema.hpp"
#include "config/memory_estimate.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"
#include "softlab/sweep.hpp"
#include "train_fixtures.hpp"
#include "expect_error.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {
using test::expect_bad_input;
using test::CliRun;
using test::softlab_cli;

const char* kConfig = R"({"data": {"dataset": "fashion-mnist"},
  "model": {"dim": 32, "depth": 1, "heads": 2}, "train": {"epochs": 1, "threads": 1}})";

// `n` arrays inside each other around `inner`.
std::string nested(size_t n, const std::string& inner = "1") {
  return std::string(n, '[') + inner + std::string(n, ']');
}

class ConfigBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    root = test::temp_dir(std::string("cfg_bad_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    config = file("tiny.json", kConfig);
  }
  void TearDown() override { fs::remove_all(root); }

  std::string file(const std::string& name, const std::string& text) {
    const std::string p = root + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  CliRun run(const std::vector<std::string>& args) { return softlab_cli(args, root); }
  // `softlab validate` with --set overrides; expects exit 2 and each of `parts` on stderr.
  CliRun expect_exit_2(const std::vector<std::string>& args, std::initializer_list<std::string> parts) {
    const CliRun r = run(args);
    EXPECT_EQ(r.code, 2) << r.err;
    for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "missing '" << p << "' in: " << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
    return r;
  }
  std::string root, config;
};

}  // namespace

// ---- JSON text ---------------------------------------------------------------------------

TEST_F(ConfigBadInput, DeepNestingIsRefusedNamingFileAndPath) {
  // 100,000 levels: parsing is iterative, but printing such a document into a message used to
  // overflow the stack.
  const std::string deep = file("deep.json", R"({"data": {"dataset": )" + nested(100000) + "}}");
  expect_bad_input([&] { read_json_file(deep); }, {deep, "data.dataset[0]", "nested more than 64 levels"});
  expect_exit_2({"validate", deep}, {deep, "nested more than 64 levels"});
  // At the bound it parses (and is then an ordinary wrong type, printed as an excerpt).
  const std::string ok = file("ok.json", R"({"data": {"dataset": )" + nested(62) + "}}");
  const std::string msg = expect_bad_input([&] { load_config(ok); }, {ok, "data.dataset: expected one of"});
  EXPECT_LT(msg.size(), 1000u) << msg;
}

TEST_F(ConfigBadInput, NumberOverflowNamesFileAndKey) {
  const std::string seed = file("seed.json", R"({"seed": 1e999, "data": {"dataset": "mnist"}})");
  expect_bad_input([&] { read_json_file(seed); }, {seed, ": seed: number overflow"});
  expect_exit_2({"validate", seed}, {seed, "seed", "number overflow"});
  const std::string list = file("list.json", R"({"data": {"dataset": "mnist", "eval_lengths": [8, -1e400]}})");
  expect_bad_input([&] { read_json_file(list); }, {list, "data.eval_lengths[1]", "number overflow"});
  const std::string top = file("top.json", "1e999");
  expect_bad_input([&] { read_json_file(top); }, {top, "the top level", "number overflow"});
}

TEST_F(ConfigBadInput, SyntaxErrorsQuoteOnlyAnExcerpt) {
  // nlohmann quotes the last token; a megabyte of digits must not become the message.
  const std::string big = file("big.json", R"({"name": ")" + std::string(1 << 20, 'a'));  // no closing quote
  const std::string msg = expect_bad_input([&] { read_json_file(big); }, {big + ":1:", "JSON syntax error"});
  EXPECT_LT(msg.size(), 1000u);
  const std::string bytes = file("bytes.json", "{\"name\": \"a\xff\"}");
  expect_bad_input([&] { read_json_file(bytes); }, {bytes, "JSON syntax error", "\\xFF"});
}

TEST_F(ConfigBadInput, DeepSetValueIsRefusedNamingTheKey) {
  json cfg = json::parse(kConfig);
  expect_bad_input([&] { apply_override(cfg, "model.attention={\"type\": " + nested(100000) + "}"); },
                   {"model.attention", "nested more than 64 levels"});
  expect_bad_input([&] { apply_override(cfg, "data.eval_lengths=" + nested(100000)); },
                   {"data.eval_lengths", "nested more than 64 levels"});
  // The command line takes about 128 KiB per argument: 20,000 levels fit.
  expect_exit_2({"validate", config, "--set", "data.eval_lengths=" + nested(20000)},
                {config, "data.eval_lengths", "nested more than 64 levels"});
}

TEST_F(ConfigBadInput, MessagesQuoteExcerptsOfLongValues) {
  const std::string long_value(1 << 20, 'a');
  const std::string f = file("long.json", R"({"data": {"dataset": ")" + long_value + R"("}})");
  std::string msg = expect_bad_input([&] { load_config(f); }, {f, "data.dataset: expected one of", "..."});
  EXPECT_LT(msg.size(), 1000u);
  json cfg = json::parse(kConfig);
  msg = expect_bad_input([&] { apply_override(cfg, "train.epochs=" + long_value); }, {"train.epochs", "..."});
  EXPECT_LT(msg.size(), 1000u);
  msg = expect_bad_input([&] { apply_override(cfg, "train." + long_value + "=1"); }, {"unknown key", "..."});
  EXPECT_LT(msg.size(), 2000u);
  // A value nested as deep as memory allows prints in constant stack and length.
  json deep = 1;
  for (int i = 0; i < 200000; ++i) deep = json::array({std::move(deep)});
  EXPECT_LE(json_excerpt(deep).size(), 60u);
  EXPECT_EQ(json_excerpt(json::array({1, "two", json::object({{"k", nullptr}})})), R"([1,"two",{"k":null}])");
  EXPECT_LE(describe_value(json(std::string(1000, 'x'))).size(), 80u);
}

// ---- UTF-8 -------------------------------------------------------------------------------

TEST_F(ConfigBadInput, SetValuesThatAreNotUtf8AreBadInputNamingTheKey) {
  expect_exit_2({"validate", config, "--set", "name=run\xff"}, {"name", "not UTF-8", "run\\xFF"});
  expect_exit_2({"validate", config, "--set", "data.path=/data/\xc3\x28"}, {"data.path", "not UTF-8"});
  json cfg = json::parse(kConfig);
  // Overlong forms and surrogates are not UTF-8 either.
  for (const std::string bad : {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "abc\xe2\x82"})
    expect_bad_input([&] { apply_override(cfg, "name=" + bad); }, {"name", "not UTF-8"});
  apply_override(cfg, "name=caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80");  // é, €, an emoji
  EXPECT_EQ(resolve_config(cfg)["name"], "caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80");
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_FALSE(is_valid_utf8("\x80"));
}

TEST_F(ConfigBadInput, FileNameThatIsNotUtf8CannotNameTheRun) {
  const std::string f = file("conf\xff.json", kConfig);
  expect_bad_input([&] { load_config(f); }, {f, "name", "not UTF-8", "--set name="});
  expect_exit_2({"validate", f}, {"name", "not UTF-8"});
  EXPECT_EQ(load_config(f, {"name=renamed"}).name, "renamed");
  const CliRun ok = run({"validate", f, "--set", "name=renamed"});
  EXPECT_EQ(ok.code, 0) << ok.err;
}

// train.optimizer.groups, a list of objects: every malformed list, element, key or index is
// bad input naming the element, from a file and from --set alike, and a huge or deep one
// costs no more than any other value.
TEST_F(ConfigBadInput, ParameterGroupsFailClosedNamingTheElement) {
  const std::string groups = "train.optimizer.groups=";
  expect_exit_2({"validate", config, "--set", groups + R"([{"match": "head", "lr": 0.1, "lr_scale": 2}])"},
                {config, "train.optimizer.groups[0]: sets both lr"});
  expect_exit_2({"validate", config, "--set", groups + R"([{"match": "head", "lr": 0.1}, {"lr": 1}])"},
                {config, "train.optimizer.groups[1].match: missing required key"});
  expect_exit_2({"validate", config, "--set", groups + R"([{"match": "head", "lr": 0.1, "momentum": 0}])"},
                {config, "train.optimizer.groups[0].momentum: unknown key"});
  expect_exit_2({"validate", config, "--set", groups + "3"}, {config, "train.optimizer.groups: expected a JSON list"});
  expect_exit_2({"validate", config, "--set", groups + R"([{"match": "blocks.7", "lr": 0.1}])"},
                {"train.optimizer.groups[0].match: 'blocks.7' selects no parameter", "blocks.0."});
  expect_exit_2({"validate", config, "--set", "train.optimizer.groups[1].lr=0.1"},
                {config, "train.optimizer.groups[1]: no such element; the list has 0 elements"});
  expect_exit_2({"validate", config, "--set", "train.optimizer.groups[18446744073709551616].lr=0.1"},
                {config, "bad key"});
  expect_exit_2({"validate", config, "--set", groups + "[" + nested(20000, "{}") + "]"},
                {config, "train.optimizer.groups", "nested more than 64 levels"});
  const std::string f = file("groups.json", R"({"data": {"dataset": "mnist"},
    "train": {"optimizer": {"groups": [{"match": "head", "lr": 0.1}, {"match": "x", "lr_scale": 1e999}]}}})");
  expect_bad_input([&] { load_config(f); }, {f, "train.optimizer.groups[1].lr_scale", "number overflow"});
  // Many elements: a value like any other, resolved in one pass.
  json many = json::array();
  for (int i = 0; i < 10000; ++i) many.push_back({{"match", "blocks." + std::to_string(i)}, {"lr_scale", 1}});
  json cfg = json::parse(kConfig);
  cfg["train"]["optimizer"]["groups"] = many;
  EXPECT_EQ(resolve_config(cfg)["train"]["optimizer"]["groups"].size(), 10000u);
}

// ---- sizes and integers ------------------------------------------------------------------

TEST_F(ConfigBadInput, SizeKeysHaveUpperBounds) {
  expect_exit_2({"validate", config, "--set", "model.dim=1000000"}, {config, "model.dim", "[1, 8192]"});
  expect_exit_2({"validate", config, "--set", "model.mlp_ratio=1e9"}, {config, "model.mlp_ratio"});
  expect_exit_2({"validate", config, "--set", "model.depth=1000000"}, {config, "model.depth"});
  expect_exit_2({"validate", config, "--set", "train.batch_size=100000000"}, {config, "train.batch_size"});
  // `softlab info` shows the bounds as it shows the lower ones.
  const json s = config_schema_json();
  EXPECT_EQ(s["keys"]["model"]["keys"]["dim"]["max"], 8192.0);
  EXPECT_EQ(s["keys"]["model"]["keys"]["dim"]["expects"], "an integer in [1, 8192]");
}

// Every integer key is read into a C++ field; its bounds must keep it there.
TEST_F(ConfigBadInput, EveryIntegerKeyIsBoundedWithinItsField) {
  using config_detail::Node;
  std::function<void(const Node&, const std::string&)> walk = [&](const Node& n, const std::string& path) {
    for (const auto& c : n.children) {
      const std::string here = join_path(path, c.name);
      if (c.kind == Node::Kind::Object || c.kind == Node::Kind::List) walk(c, here);
      if (c.kind != Node::Kind::Param) continue;
      const ParamSpec& p = c.param;
      if (p.type != ParamType::Int && p.type != ParamType::IntList) continue;
      if (here == "seed") continue;  // a uint64_t: every non-negative 64-bit integer
      // int64_t fields take what the generic check allows; the int ones need a bound.
      if (here == "train.threads" || here == "data.augment.random_crop" || here == "data.augment.translate") {
        ASSERT_TRUE(p.max) << here;
        EXPECT_LE(*p.max, 2147483647.0) << here;
      }
      // Beyond int64 is refused for every one of them.
      EXPECT_THROW(check_param(p, json(18446744073709551615ULL), here), Error) << here;
    }
  };
  walk(config_detail::config_schema(), "");
}

TEST_F(ConfigBadInput, IntegersNeverWrapAround) {
  expect_exit_2({"validate", config, "--set", "data.augment.random_crop=5000000000"},
                {config, "data.augment.random_crop"});
  expect_exit_2({"validate", config, "--set", "train.threads=4294967297"}, {config, "train.threads"});
  const std::string f = file("threads.json", R"({"data": {"dataset": "mnist"}, "train": {"threads": 4294967297}})");
  expect_bad_input([&] { load_config(f); }, {f, "train.threads", "4294967297"});
  // Above int64: refused where the field is int64_t, accepted for the uint64_t seed.
  const std::string e =
      file("epochs.json", R"({"data": {"dataset": "mnist"}, "train": {"epochs": 18446744073709551615}})");
  expect_bad_input([&] { load_config(e); }, {e, "train.epochs", "largest 64-bit integer"});
  const std::string s = file("seed.json", R"({"data": {"dataset": "mnist"}, "seed": 18446744073709551615})");
  EXPECT_EQ(load_config(s).seed, 18446744073709551615ULL);
  expect_exit_2({"validate", config, "--set", "data.eval_lengths=[16, 9223372036854775808]"}, {"data.eval_lengths[1]"});
}

TEST_F(ConfigBadInput, ModelTooLargeForThisMachineIsRefusedWithTheNumbers) {
  // About 2e11 parameters: terabytes with gradients and AdamW's state.
  expect_exit_2({"validate", config, "--set", "model.dim=8192", "--set", "model.depth=256",
                                  "--set", "model.heads=8", "--set", "model.mlp_ratio=4"},
                                 {config, "model.dim = 8192", "model.depth = 256", "GiB", "more than this machine's"});
  json cfg = json::parse(kConfig);
  cfg["model"]["dim"] = 8192;
  cfg["model"]["depth"] = 256;
  cfg["model"]["heads"] = 8;
  expect_bad_input([&] { resolve_config(cfg); }, {"model.dim = 8192", "GiB"});
  // A large batch of a modest model: nearly a terabyte of activations.
  cfg["model"]["dim"] = 1024;
  cfg["model"]["depth"] = 16;
  cfg["train"]["batch_size"] = 1;
  const config_detail::MemoryEstimate e = config_detail::estimate_memory(resolve_config(cfg));
  EXPECT_GT(e.parameters, 16 * 8.0 * 1024 * 1024);  // the blocks alone: 8 dim^2 each (mlp_ratio 2)
  EXPECT_LT(e.activation_bytes, e.parameter_bytes);
  expect_exit_2({"validate", config, "--set", "train.batch_size=65536", "--set", "model.dim=1024", "--set",
                 "model.depth=16"},
                {config, "train.batch_size = 65536", "activations"});
  EXPECT_GT(config_detail::machine_memory_bytes(), 0u);
}

// The shipped configs and sweeps must stay valid under the bounds and the memory estimate.
TEST_F(ConfigBadInput, ShippedConfigsAndSweepsStayValid) {
  const fs::path src(SOFTLAB_SOURCE_DIR);
  for (const auto& entry : fs::directory_iterator(src / "configs")) {
    if (entry.path().extension() == ".json") {
      EXPECT_NO_THROW(load_config(entry.path().string())) << entry.path();
    }
  }
  // Sweep bases are relative to the checkout.
  const fs::path here = fs::current_path();
  fs::current_path(src);
  for (const auto& entry : fs::directory_iterator(src / "configs" / "ablations")) {
    try {
      const Sweep s = load_sweep(entry.path().string(), root + "/sweep");
      EXPECT_FALSE(s.runs.empty()) << entry.path();
    } catch (const Error& e) {
      ADD_FAILURE() << entry.path() << ": " << e.what();
    }
  }
  fs::current_path(here);
}

// ---- null and key paths ------------------------------------------------------------------

TEST_F(ConfigBadInput, NullOutputDirMeansTheDefaultInFilesAndSet) {
  EXPECT_EQ(load_config(config, {"output.dir=null"}).output.dir, "runs/tiny");
  const std::string f = file("nulldir.json", R"({"data": {"dataset": "mnist"}, "output": {"dir": null}})");
  EXPECT_EQ(load_config(f).output.dir, "runs/nulldir");
  // The other nullable keys: null is their documented default.
  const Config c = load_config(config, {"data.path=null", "model.causal=null", "model.layer_scale=null"});
  EXPECT_FALSE(c.data.path);
  EXPECT_FALSE(c.model.causal);
  EXPECT_EQ(c.model.layer_scale, 0.0);
  // A key that is not nullable still refuses null.
  expect_exit_2({"validate", config, "--set", "train.epochs=null"}, {"train.epochs"});
}

TEST(ConfigKeyPath, JsonPointerBecomesDottedPath) {
  EXPECT_EQ(dotted_key_path("/model/dim"), "model.dim");
  EXPECT_EQ(dotted_key_path("/model/attention/bias"), "model.attention.bias");
  EXPECT_EQ(dotted_key_path("/data/eval_lengths/0"), "data.eval_lengths[0]");
  EXPECT_EQ(dotted_key_path("/a~1b/c~0d/~01"), "a/b.c~d.~1");
  EXPECT_EQ(dotted_key_path(""), "");
  // What the resume check reports: json::diff's paths.
  json a = json::parse(kConfig), b = a;
  b["model"]["dim"] = 64;
  const json diff = json::diff(a, b);
  ASSERT_EQ(diff.size(), 1u);
  EXPECT_EQ(dotted_key_path(diff[0]["path"].get<std::string>()), "model.dim");
}

// ---- sweep files -------------------------------------------------------------------------

TEST_F(ConfigBadInput, SweepFilesFailClosed) {
  const std::string base = "\"base\": \"" + config + "\", \"out\": \"" + root + "/sweep\"";
  const std::string deep = file("deep_sweep.json", "{" + base + R"(, "seeds": [0], "grid": {"train.epochs": )" +
                                                       nested(100000) + "}}");
  expect_bad_input([&] { load_sweep(deep); }, {deep, "grid.train.epochs[0]", "nested more than 64 levels"});
  expect_exit_2({"sweep", deep, "--dry-run"}, {deep, "nested more than 64 levels"});

  const std::string over =
      file("over_sweep.json", "{" + base + R"(, "seeds": [0, 1e999], "grid": {"train.epochs": [1]}})");
  expect_exit_2({"sweep", over, "--dry-run"}, {over, "seeds[1]", "number overflow"});

  const std::string good = file("good_sweep.json", "{" + base + R"(, "seeds": [0], "grid": {"train.epochs": [1]}})");
  expect_exit_2({"sweep", good, "--dry-run", "--out", root + "/out\xff"}, {good, "not UTF-8"});
  const CliRun ok = run({"sweep", good, "--dry-run"});
  EXPECT_EQ(ok.code, 0) << ok.err;

  // A grid value too long to be a directory name, and one that is no override at all.
  const std::string long_name = file("long_sweep.json", "{" + base + R"(, "seeds": [0], "grid": {"name": [")" +
                                                            std::string(300, 'n') + "\"]}}");
  expect_exit_2({"sweep", long_name, "--dry-run"}, {long_name, "bytes, more than 200"});
  const std::string bad_cell =
      file("bad_cell.json", "{" + base + R"(, "seeds": [0], "grid": {"train.threads": [4294967297]}})");
  expect_exit_2({"sweep", bad_cell, "--dry-run"}, {bad_cell, "train.threads"});
  std::string ones = "1";
  for (int i = 0; i < 30000; ++i) ones += ",1";
  const std::string huge = file("huge_sweep.json", "{" + base + R"(, "seeds": [0], "set": [)" + ones + "]}");
  const CliRun h = expect_exit_2({"sweep", huge, "--dry-run"}, {huge, "set: expected an object"});
  EXPECT_LT(h.err.size(), 1000u);
  const std::string out_type = file("out_type.json", R"({"base": ")" + config +
                                                         R"(", "out": 5, "seeds": [0], "grid": {"train.epochs": [1]}})");
  expect_exit_2({"sweep", out_type, "--dry-run"}, {out_type, "'out' must be a directory name"});
}
