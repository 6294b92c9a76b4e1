// softlab sweep under `mpirun -np 2`: the ranks share the runs (rank 0 hands them out), every
// run trains exactly once, both ranks take some, a run interrupted beforehand is resumed, a
// second invocation skips everything, and ranks that read different sweeps refuse to start.
// Skipped in a build without MPI or without mpirun on PATH. A few seconds in all.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "cli_run.hpp"
#include "softlab/config.hpp"
#include "softlab/distributed.hpp"
#include "softlab/sweep.hpp"
#include "softlab/train.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

bool mpirun_on_path() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string d; std::getline(dirs, d, ':');)
    if (!d.empty() && access((fs::path(d) / "mpirun").c_str(), X_OK) == 0) return true;
  return false;
}

// `mpirun --oversubscribe <np_and_args>`, as CI runs it (as root, on 2 cores).
test::CliRun mpirun(const std::string& np_and_args, const std::string& dir) {
  const std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe " +
                          np_and_args + " >'" + dir + "/out.txt' 2>'" + dir + "/err.txt' </dev/null";
  const int st = std::system(cmd.c_str());
  test::CliRun r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = test::slurp(dir + "/out.txt");
  r.err = test::slurp(dir + "/err.txt");
  return r;
}

std::string sweep_cmd(const std::string& sweep) {
  return std::string("'") + SOFTLAB_CLI_PATH + "' sweep '" + sweep + "' --threads 1";
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

size_t lines_of(const std::string& file) { return count(test::slurp(file), "\n"); }

class MpiSweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!dist::built_with_mpi()) GTEST_SKIP() << "this build has no MPI (SOFTLAB_WITH_MPI, libopenmpi-dev)";
    if (!mpirun_on_path()) GTEST_SKIP() << "mpirun is not on PATH";
    root = test::temp_dir(std::string("mpi_sweep_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    base = root + "/base.json";
    // A tiny recall task: 2 epochs of 8 steps, a fraction of a second per run.
    const json cfg = {{"name", "tiny_recall"},
                      {"data", {{"dataset", "synthetic:recall"}, {"train_length", 8}, {"eval_lengths", {16}},
                                {"train_size", 256}, {"test_size", 64}, {"keys", 8}, {"values", 4}}},
                      {"model", {{"type", "seq"}, {"dim", 16}, {"depth", 1}, {"heads", 2}}},
                      {"train", {{"epochs", 2}, {"batch_size", 32}, {"threads", 1}}},
                      {"output", {{"dir", root + "/unused"}}}};
    std::ofstream(base) << cfg.dump(2);
  }
  void TearDown() override {
    if (!root.empty()) fs::remove_all(root);
  }
  std::string write_sweep(const std::string& name, const json& seeds) {
    const json j = {{"base", base},
                    {"grid", {{"model.attention.type", {"softmax", "sigmoid"}}}},
                    {"seeds", seeds},
                    {"out", root + "/out"}};
    const std::string p = root + "/" + name;
    std::ofstream(p) << j.dump(2);
    return p;
  }
  std::string root, base;
};

TEST_F(MpiSweepTest, TwoRanksShareTheRunsEachOnceAndResume) {
  const std::string sweep = write_sweep("sweep.json", {0, 1, 2});
  const Sweep s = load_sweep(sweep);
  ASSERT_EQ(s.runs.size(), 6u);
  // One run interrupted beforehand, mid-way through epoch 2 (8 steps an epoch): the sweep
  // must resume it, not start it again.
  const SweepRun& cut = s.runs[3];
  TrainOptions stop = test::quiet();
  stop.out_dir = cut.dir;
  stop.stop_after_step = 12;
  ASSERT_EQ(train(load_config(s.base, cut.overrides), stop).status, TrainStatus::Interrupted);
  const std::string metrics_before = test::slurp(cut.dir + "/metrics.jsonl");
  ASSERT_EQ(count(metrics_before, "\n"), 1u) << "epoch 1 done, epoch 2 not";

  test::CliRun r = mpirun("-np 2 " + sweep_cmd(sweep), root);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("6 runs (0 finished, 6 to run)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 ranks"), std::string::npos) << r.out;
  std::set<int> ranks;
  std::ifstream results(root + "/out/results.json");
  const json rows = json::parse(results);
  ASSERT_EQ(rows.size(), 6u);
  for (size_t i = 0; i < s.runs.size(); ++i) {
    const SweepRun& run = s.runs[i];
    EXPECT_TRUE(run_finished(run)) << run.dir;
    // Trained once: one line per epoch, one training session in the log, one start line.
    EXPECT_EQ(lines_of(run.dir + "/metrics.jsonl"), 2u) << run.dir;
    EXPECT_EQ(count(test::slurp(run.dir + "/train.log"), "| tiny_recall |"), 1u) << run.dir;
    ASSERT_EQ(rows[i]["status"], "finished") << rows[i].dump();
    ASSERT_TRUE(rows[i].contains("rank")) << rows[i].dump();
    const int rank = rows[i]["rank"].get<int>();
    ranks.insert(rank);
    // Rank 0 prints one start line per run, naming the rank that runs it.
    const std::string start = "] start  " + run.cell + " seed " + std::to_string(run.seed) + "\n";
    EXPECT_EQ(count(r.out, start), 1u) << r.out;
    const size_t at = r.out.find(start), line = r.out.rfind('\n', at) + 1;
    EXPECT_EQ(r.out.compare(line, 8, "rank " + std::to_string(rank) + ": "), 0) << r.out;
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1})) << "both ranks ran runs\n" << r.out;
  EXPECT_EQ(lines_of(root + "/out/results.csv"), 7u) << "a header and 6 rows";
  // The interrupted run resumed: epoch 1's line is the one written before the sweep.
  EXPECT_EQ(test::slurp(cut.dir + "/metrics.jsonl").rfind(metrics_before, 0), 0u);
  EXPECT_NE(test::slurp(cut.dir + "/train.log").find("resuming"), std::string::npos);

  // Again: everything is finished, nothing is touched.
  const auto mtime = fs::last_write_time(fs::path(s.runs[0].dir) / "last.ckpt");
  r = mpirun("-np 2 " + sweep_cmd(sweep), root);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("(6 finished, 0 to run)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("start"), std::string::npos) << r.out;
  EXPECT_EQ(fs::last_write_time(fs::path(s.runs[0].dir) / "last.ckpt"), mtime);
  EXPECT_EQ(lines_of(root + "/out/results.csv"), 7u);
}

// Ranks that read different sweeps (here: other seeds) would run other runs: every rank
// stops before anything runs, with one message naming the rank.
TEST_F(MpiSweepTest, RanksWithDifferentSweepsRefuseToStart) {
  const std::string a = write_sweep("a.json", {0, 1}), b = write_sweep("b.json", {0, 2});
  const test::CliRun r = mpirun("-np 1 " + sweep_cmd(a) + " : -np 1 " + sweep_cmd(b), root);
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("rank 1 computed other runs"), std::string::npos) << r.err;
  EXPECT_EQ(count(r.err, "computed other runs"), 1u) << "printed once\n" << r.err;
  EXPECT_FALSE(fs::exists(root + "/out")) << "nothing may start";
}

}  // namespace
