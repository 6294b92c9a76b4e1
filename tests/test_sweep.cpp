// Sweeps: the sweep file's validation (every error before any run, naming the problem), the
// cells it expands to, the results tables (mean ± std over seeds), and `softlab sweep` /
// `softlab report` end to end on a tiny synthetic task: two cells, resumed and skipped runs,
// parallel jobs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli_run.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"
#include "softlab/sweep.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

// A tiny recall task: 2 epochs of 8 batches, evaluated at two lengths; a few seconds a run.
json tiny_seq_config(const std::string& out) {
  return {{"name", "tiny_recall"},
          {"data", {{"dataset", "synthetic:recall"}, {"train_length", 8}, {"eval_lengths", {16}},
                    {"train_size", 256}, {"test_size", 64}, {"keys", 8}, {"values", 4}}},
          {"model", {{"type", "seq"}, {"dim", 16}, {"depth", 1}, {"heads", 2}}},
          {"train", {{"epochs", 2}, {"batch_size", 32}, {"threads", 1}}},
          {"output", {{"dir", out}}}};
}

class SweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = test::temp_dir(std::string("sweep_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    base = root + "/base.json";
    std::ofstream(base) << tiny_seq_config(root + "/unused").dump(2);
  }
  void TearDown() override { fs::remove_all(root); }
  std::string write_sweep(const json& j, const std::string& name = "sweep.json") {
    const std::string p = root + "/" + name;
    std::ofstream(p) << j.dump(2);
    return p;
  }
  json two_cells() const {
    return {{"base", base},
            {"grid", {{"model.attention.type", {"softmax", "sigmoid"}}}},
            {"seeds", {0}},
            {"out", root + "/out"}};
  }
  std::string error_of(const json& j) {
    try {
      load_sweep(write_sweep(j));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  std::string root, base;
};

TEST_F(SweepTest, ExpandsVariantsTimesGridTimesSeeds) {
  json j = two_cells();
  j["grid"]["train.epochs"] = {1, 2};
  j["variants"] = {{{"name", "a"}, {"set", {{"model.dim", 16}}}}, {{"name", "b"}, {"set", {{"model.dim", 32}}}}};
  j["seeds"] = {3, 4};
  const Sweep s = load_sweep(write_sweep(j));
  ASSERT_EQ(s.runs.size(), 2u * 2u * 2u * 2u);
  EXPECT_TRUE(s.has_variants);
  EXPECT_EQ(s.keys, (std::vector<std::string>{"model.attention.type", "train.epochs"}));
  // Variant outermost, the last grid key fastest, seeds innermost.
  EXPECT_EQ(s.runs[0].cell, "a_attention.type=softmax_epochs=1");
  EXPECT_EQ(s.runs[0].seed, 3u);
  EXPECT_EQ(s.runs[1].seed, 4u);
  EXPECT_EQ(s.runs[2].cell, "a_attention.type=softmax_epochs=2");
  EXPECT_EQ(s.runs[4].cell, "a_attention.type=sigmoid_epochs=1");
  EXPECT_EQ(s.runs[8].cell, "b_attention.type=softmax_epochs=1");
  EXPECT_EQ(s.runs[0].dir, (fs::path(root) / "out" / "a_attention.type=softmax_epochs=1" / "seed3").string());
  // The overrides: the variant's, then the grid's, then the seed.
  EXPECT_EQ(s.runs[9].overrides,
            (std::vector<std::string>{"model.dim=32", "model.attention.type=softmax", "train.epochs=1", "seed=4"}));
  // Every run's config resolves to what its overrides say.
  const Config c = load_config(s.base, s.runs[9].overrides);
  EXPECT_EQ(c.model.dim, 32);
  EXPECT_EQ(c.seed, 4u);
}

TEST_F(SweepTest, BadSweepFilesFailBeforeAnyRunNamingTheProblem) {
  json j = two_cells();
  j["grid"]["train.epoch"] = {1};
  std::string e = error_of(j);
  EXPECT_NE(e.find("train.epoch"), std::string::npos) << e;
  EXPECT_NE(e.find("sweep.json"), std::string::npos) << e;

  j = two_cells();
  j["grid"] = json::object();
  e = error_of(j);
  EXPECT_NE(e.find("grid is empty"), std::string::npos) << e;

  j = two_cells();
  j["grid"]["model.dim"] = json::array();
  e = error_of(j);
  EXPECT_NE(e.find("grid.model.dim"), std::string::npos) << e;

  j = two_cells();
  j["grid"]["model.dim"] = {15};  // not divisible by the 2 heads
  e = error_of(j);
  EXPECT_NE(e.find("model.dim"), std::string::npos) << e;

  j = two_cells();
  j["base"] = root + "/missing.json";
  e = error_of(j);
  EXPECT_NE(e.find("missing.json"), std::string::npos) << e;

  std::ofstream(root + "/bad_base.json") << R"({"data": {"dataset": "synthetic:recall"}, "train": {"epochs": 0}})";
  j = two_cells();
  j["base"] = root + "/bad_base.json";
  e = error_of(j);
  EXPECT_NE(e.find("train.epochs"), std::string::npos) << e;

  j = two_cells();
  j["seeds"] = json::array();
  EXPECT_NE(error_of(j).find("seeds"), std::string::npos);
  j["seeds"] = {0, 0};
  EXPECT_NE(error_of(j).find("twice"), std::string::npos);

  j = two_cells();
  j["seed"] = {0};
  e = error_of(j);
  EXPECT_NE(e.find("unknown key 'seed'"), std::string::npos) << e;

  j = two_cells();
  j["variants"] = {{{"name", "x"}, {"set", {{"model.attention.type", "nope"}}}}};
  e = error_of(j);
  EXPECT_NE(e.find("nope"), std::string::npos) << e;

  j = two_cells();
  j.erase("out");
  EXPECT_NE(error_of(j).find("'out'"), std::string::npos);
}

// Fake finished runs with known numbers: the table's mean ± std is exact.
TEST_F(SweepTest, ResultsTablesAggregateOverSeeds) {
  json j = two_cells();
  j["seeds"] = {0, 1};
  j["metrics"] = {"test_kl"};
  const Sweep s = load_sweep(write_sweep(j));
  const double acc[4] = {0.90, 0.92, 0.50, 0.50};
  for (size_t i = 0; i < 3; ++i) {  // the last run never finished
    fs::create_directories(s.runs[i].dir);
    json sum = {{"status", "finished"}, {"test_accuracy", acc[i]}, {"best_test_accuracy", acc[i]},
                {"test_loss", 1.0}, {"train_seconds", 10.0 * static_cast<double>(i + 1)}, {"test_kl", 0.25},
                {"test_by_length", {{"8", {{"accuracy", acc[i]}, {"loss", 1.0}}}, {"16", {{"accuracy", 0.5}, {"loss", 2.0}}}}}};
    write_file_atomic((fs::path(s.runs[i].dir) / "summary.json").string(), sum.dump());
  }
  const json rows = collect_results(s);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0]["status"], "finished");
  EXPECT_EQ(rows[3]["status"], "missing");
  EXPECT_EQ(rows[0]["model.attention.type"], "softmax");
  EXPECT_DOUBLE_EQ(rows[1]["accuracy@8"].get<double>(), 0.92);
  EXPECT_DOUBLE_EQ(rows[1]["loss@16"].get<double>(), 2.0);
  write_results(s, rows);
  const std::string md = test::slurp(root + "/out/results.md");
  // softmax: 91.00 ± 1.41 (sample std of 90 and 92); sigmoid: one of two runs finished.
  EXPECT_NE(md.find("| softmax | 2 | 91.00 ± 1.41 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| sigmoid | 1/2 | 50.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| accuracy (%) | best accuracy (%) | loss | train seconds | kl |"), std::string::npos) << md;
  EXPECT_NE(md.find("accuracy@16 (%)"), std::string::npos) << md;
  const std::string csv = test::slurp(root + "/out/results.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);  // header + 4 rows
  EXPECT_EQ(csv.rfind("model.attention.type,seed,dir,status,", 0), 0u) << csv;
  std::ifstream rj(root + "/out/results.json");
  EXPECT_EQ(json::parse(rj), rows);
}

// The whole machinery as a user drives it: two cells, then a rerun that skips them, a run
// whose summary is gone resumed from its checkpoint, two jobs at once, and the report.
TEST_F(SweepTest, SweepCommandRunsResumesSkipsAndReports) {
  json j = two_cells();
  j["seeds"] = {0, 1};
  j["set"] = {{"data.eval_lengths", {16, 24}}};  // a list through --set: no splitting at the comma
  const std::string sweep = write_sweep(j);
  test::CliRun r = test::softlab_cli({"sweep", sweep, "--jobs", "2", "--threads", "2"}, root);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("4 runs (0 finished, 4 to run)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 thread each"), std::string::npos) << r.out;
  const Sweep s = load_sweep(sweep);
  for (const auto& run : s.runs) {
    EXPECT_TRUE(run_finished(run)) << run.dir;
    EXPECT_TRUE(fs::exists(fs::path(run.dir) / "train.log"));
    const json sum = read_json_file((fs::path(run.dir) / "summary.json").string());
    EXPECT_EQ(sum["seed"].get<uint64_t>(), run.seed);
    EXPECT_EQ(sum["threads"].get<int>(), 1);
    EXPECT_TRUE(sum["test_by_length"].contains("8") && sum["test_by_length"].contains("16") &&
                sum["test_by_length"].contains("24"))
        << sum.dump();
  }
  std::ifstream rj(root + "/out/results.json");
  const json res = json::parse(rj);
  ASSERT_EQ(res.size(), 4u);
  for (const auto& row : res) {
    EXPECT_EQ(row["status"], "finished");
    EXPECT_TRUE(row.contains("accuracy@16"));
    EXPECT_GT(row["params"].get<int64_t>(), 0);
  }
  const std::string md = test::slurp(root + "/out/results.md");
  EXPECT_NE(md.find("| softmax | 2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| sigmoid | 2 |"), std::string::npos) << md;

  // Rerun: nothing to do, nothing touched.
  const auto mtime = fs::last_write_time(fs::path(s.runs[0].dir) / "last.ckpt");
  r = test::softlab_cli({"sweep", sweep}, root);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("(4 finished, 0 to run)"), std::string::npos) << r.out;
  EXPECT_EQ(fs::last_write_time(fs::path(s.runs[0].dir) / "last.ckpt"), mtime);

  // A run that lost its summary (as if killed after the last checkpoint) is resumed, not redone.
  fs::remove(fs::path(s.runs[1].dir) / "summary.json");
  r = test::softlab_cli({"sweep", sweep}, root);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("(3 finished, 1 to run)"), std::string::npos) << r.out;
  EXPECT_TRUE(run_finished(s.runs[1]));
  EXPECT_NE(test::slurp((fs::path(s.runs[1].dir) / "train.log").string()).find("resuming"), std::string::npos);

  // The report: tables and plots.
  r = test::softlab_cli({"report", root + "/out"}, root);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  for (const char* f : {"report.md", "accuracy_per_epoch.svg", "accuracy_per_minute.svg", "train_loss_per_epoch.svg",
                        "test_loss_per_epoch.svg", "accuracy_vs_length.svg",
                        "loss_vs_length.svg"})
    EXPECT_TRUE(fs::exists(fs::path(root) / "out" / f)) << f;
  const std::string svg = test::slurp(root + "/out/accuracy_vs_length.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("softmax"), std::string::npos);
  EXPECT_NE(test::slurp(root + "/out/report.md").find("![accuracy_vs_length.svg]"), std::string::npos);
  const std::string per_minute = test::slurp(root + "/out/accuracy_per_minute.svg");
  EXPECT_NE(per_minute.find("minutes of training"), std::string::npos);
  EXPECT_NE(per_minute.find("softmax"), std::string::npos);
}

// A signal to the sweep process alone (a scheduler's `kill`, or SIGINT not from a terminal)
// reaches its runs: each stops at its next step with last.ckpt saved, the sweep waits for
// them and exits 130, and nothing is left running. Then the same command resumes them.
TEST_F(SweepTest, SignalToTheSweepAloneStopsItsRunsWithACheckpoint) {
  for (const int sig : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGINT");
    json j = two_cells();
    j["out"] = root + "/out" + std::to_string(sig);
    // 500 epochs: a few seconds, so the signal lands early in each run; runs that never got
    // it would finish, which the checks below catch.
    j["set"] = {{"train.epochs", 500}};
    const std::string sweep = write_sweep(j);
    const std::string log = root + "/sweep" + std::to_string(sig) + ".log";
    const pid_t pid = test::start_softlab({"sweep", sweep, "--jobs", "2", "--threads", "2"}, log);
    ASSERT_GT(pid, 0);
    const Sweep s = load_sweep(sweep);
    // Both runs are training once each has written its first epoch's metrics.
    const auto start = std::chrono::steady_clock::now();
    auto training = [&] {
      for (const auto& run : s.runs)
        if (!fs::exists(fs::path(run.dir) / "metrics.jsonl")) return false;
      return true;
    };
    while (!training() && std::chrono::steady_clock::now() - start < std::chrono::seconds(120))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(training()) << test::slurp(log);
    kill(pid, sig);
    EXPECT_EQ(test::wait_for_exit(pid, 120), 130) << test::slurp(log);
    const std::string out = test::slurp(log);
    EXPECT_NE(out.find("sweep interrupted"), std::string::npos) << out;
    for (const auto& run : s.runs) {
      EXPECT_TRUE(fs::exists(fs::path(run.dir) / "last.ckpt")) << run.dir;
      EXPECT_FALSE(run_finished(run)) << run.dir;
      EXPECT_NE(out.find("stopped " + run.cell + " seed " + std::to_string(run.seed)), std::string::npos) << out;
      EXPECT_NE(test::slurp((fs::path(run.dir) / "train.log").string()).find("interrupted"), std::string::npos);
    }
    // Resumed with a step budget already reached: each run loads its checkpoint and finishes.
    j["set"]["train.max_steps"] = 1;
    test::CliRun r = test::softlab_cli({"sweep", write_sweep(j)}, root);
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    for (const auto& run : load_sweep(root + "/sweep.json").runs) {
      EXPECT_TRUE(run_finished(run)) << run.dir;
      EXPECT_NE(test::slurp((fs::path(run.dir) / "train.log").string()).find("resuming"), std::string::npos);
    }
  }
}

// A sweep over the sequence length gets the cost plots: one line per attention module, the
// length keys on the x axis (tokens per example) rather than in the legend.
TEST_F(SweepTest, ReportPlotsCostAgainstTokens) {
  json j = two_cells();
  j["grid"]["data.train_length"] = {8, 16};
  j["set"] = {{"train.epochs", 1}};
  const std::string sweep = write_sweep(j);
  test::CliRun r = test::softlab_cli({"sweep", sweep, "--jobs", "2"}, root);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  r = test::softlab_cli({"report", root + "/out"}, root);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string svg = test::slurp(root + "/out/time_vs_tokens.svg");
  ASSERT_FALSE(svg.empty());
  EXPECT_NE(svg.find(">softmax<"), std::string::npos) << "series are the modules";
  EXPECT_EQ(svg.find("train_length"), std::string::npos) << "the length is the x axis, not a series";
  EXPECT_TRUE(fs::exists(root + "/out/memory_vs_tokens.svg"));
  const Sweep s = load_sweep(sweep);
  for (const auto& run : s.runs) {
    const json sum = read_json_file((fs::path(run.dir) / "summary.json").string());
    EXPECT_GT(sum["seconds_per_step"].get<double>(), 0.0);
    EXPECT_LE(sum["seconds_per_step"].get<double>() * sum["steps"].get<double>(), sum["train_seconds"].get<double>())
        << "a step's time excludes evaluation";
  }
}

TEST_F(SweepTest, CommandLineErrorsExitWithTwo) {
  json j = two_cells();
  j["grid"]["model.nope"] = {1};
  test::CliRun r = test::softlab_cli({"sweep", write_sweep(j)}, root);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("model.nope"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(root + "/out")) << "nothing may run or be written before the sweep validates";
  r = test::softlab_cli({"sweep", write_sweep(two_cells()), "--jobs", "0"}, root);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--jobs"), std::string::npos) << r.err;
  // A second sweep into a folder that a running sweep holds is refused.
  fs::create_directories(root + "/out");
  const int fd = open((root + "/out/sweep.lock").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX | LOCK_NB), 0);
  r = test::softlab_cli({"sweep", write_sweep(two_cells())}, root);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("another softlab sweep is running"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(root + "/out/attention.type=softmax")) << "nothing may start";
  close(fd);
  r = test::softlab_cli({"report", root + "/nowhere"}, root);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("sweep.json"), std::string::npos) << r.err;
}

}  // namespace
