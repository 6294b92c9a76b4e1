// Every verb of the softlab command, given bad input (a missing file, a directory where a
// file belongs, bytes that are not what the verb reads, a bad option value), exits 2 with a
// message that names what is wrong (docs/reliability.md). Exit 1 is for bugs only.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli_run.hpp"
#include "train_fixtures.hpp"

namespace fs = std::filesystem;

namespace {

struct BadCall {
  std::vector<std::string> args;
  std::string named;  // what the message must contain
};

class CliBadInputWalk : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = softlab::test::temp_dir("walk");
    missing = dir + "/missing.json";
    garbage = dir + "/garbage.bin";
    std::ofstream(garbage, std::ios::binary) << std::string("\x00\xff\x13 not json, not a checkpoint", 30);
    not_utf8 = dir + "/not_utf8.json";
    std::ofstream(not_utf8, std::ios::binary) << "{\"name\": \"\xc3\x28\"}";
    subdir = dir + "/a_directory";
    fs::create_directories(subdir);
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string dir, missing, garbage, not_utf8, subdir;
};

}  // namespace

TEST_F(CliBadInputWalk, EveryVerbExitsTwoNamingTheProblem) {
  const std::vector<BadCall> calls = {
      {{"train", missing}, missing},
      {{"train", garbage}, garbage},
      {{"train", subdir}, subdir},
      {{"train", not_utf8, "--out", dir + "/run"}, not_utf8},
      {{"train", "--set", "model.dim=abc", garbage}, garbage},
      {{"validate", missing}, missing},
      {{"validate", garbage}, garbage},
      {{"validate", subdir}, subdir},
      {{"eval", dir + "/no_such_run"}, "no_such_run"},
      {{"eval", subdir}, subdir},
      {{"eval", "--checkpoint", garbage}, garbage},
      {{"eval", "--checkpoint", subdir}, subdir},
      {{"predict", "--checkpoint", garbage, garbage}, garbage},
      {{"predict", "--checkpoint", subdir, garbage}, subdir},
      {{"predict", "--checkpoint", missing, garbage}, missing},
      {{"bench", missing}, missing},
      {{"bench", garbage}, garbage},
      {{"sweep", missing}, missing},
      {{"sweep", garbage}, garbage},
      {{"sweep", subdir}, subdir},
      {{"report", dir + "/no_such_sweep"}, "no_such_sweep"},
      {{"report", garbage}, garbage},
      {{"info", "--params", missing}, missing},
      {{"info", "--list", "nonsense"}, "nonsense"},
      {{"info", "--plugin", garbage}, garbage},
      {{"no-such-verb"}, "no-such-verb"},
      {{"train", "--no-such-option", garbage}, "no-such-option"},
  };
  for (const BadCall& c : calls) {
    std::string cmd;
    for (const auto& a : c.args) cmd += " " + a;
    SCOPED_TRACE("softlab" + cmd);
    const softlab::test::CliRun r = softlab::test::softlab_cli(c.args, dir);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(c.named), std::string::npos) << "the message does not name '" << c.named << "': " << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  }
}
