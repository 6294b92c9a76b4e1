// The run directory survives SIGKILL at any moment (docs/reliability.md): killed at random
// times, and at each point between the writes of an epoch's commit, a run resumed to the
// end holds exactly the files of an uninterrupted run: the same final weights bit for bit,
// the same best.ckpt, one metrics line per epoch. Also: a directory killed before its first
// checkpoint resumes from the start, stale temporary files go, one process per directory.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "cli_run.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/softlab.hpp"
#include "train/run_dir.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

// 400 training images in batches of 50: 8 steps an epoch, 4 epochs, a save every 2 steps, an
// EMA, dropout: every kind of state a checkpoint holds.
struct KillFixture : ::testing::Test {
  std::string root, data, config;
  void SetUp() override {
    root = test::temp_dir(std::string("kill_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    data = root + "/data";
    test::write_learnable_mnist(data, 400, 100);
    json c = test::tiny_config(data, root + "/unused");
    c["train"]["epochs"] = 4;
    c["train"]["ema"] = 0.9;
    c["train"]["checkpoint_every"] = {{"steps", 2}};
    config = root + "/tiny.json";
    std::ofstream(config) << c.dump(2);
  }
  void TearDown() override { fs::remove_all(root); }

  std::vector<std::string> train_args(const std::string& out, bool resume) const {
    std::vector<std::string> a = {"train", config, "--out", out, "--quiet"};
    if (resume) a.push_back("--resume");
    return a;
  }
  test::CliRun run(const std::string& out, bool resume) const {
    return test::softlab_cli(train_args(out, resume), root);
  }
};

// Starts `softlab ARGS` with `env` set, its output discarded.
pid_t spawn(const std::vector<std::string>& args, const std::vector<std::pair<std::string, std::string>>& env) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    std::vector<char*> argv = {const_cast<char*>(SOFTLAB_CLI_PATH)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(SOFTLAB_CLI_PATH, argv.data());
    ::_exit(127);
  }
  return pid;
}

// Starts `softlab ARGS` and kills it with SIGKILL after `delay`; true if it was still
// running then (false: it had ended by itself).
bool start_and_kill(const std::vector<std::string>& args, std::chrono::microseconds delay) {
  const pid_t pid = spawn(args, {});
  std::this_thread::sleep_for(delay);
  int status = 0;
  const bool alive = ::waitpid(pid, &status, WNOHANG) == 0;
  if (alive) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  return alive;
}

// Runs `softlab ARGS` with KEY=VALUE in its environment to its end (for SOFTLAB_CRASH_AT:
// until it kills itself); returns the raw wait status.
int run_with_env(const std::vector<std::string>& args, const std::string& key, const std::string& value) {
  const pid_t pid = spawn(args, {{key, value}});
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

void expect_same_tensors(const std::string& a, const std::string& b) {
  const Checkpoint ca = load_checkpoint(a), cb = load_checkpoint(b);
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size()) << a << " vs " << b;
  for (size_t i = 0; i < ca.tensors.size(); ++i) {
    ASSERT_EQ(ca.tensors[i].first, cb.tensors[i].first);
    const Tensor &x = ca.tensors[i].second, &y = cb.tensors[i].second;
    ASSERT_EQ(x.shape(), y.shape()) << ca.tensors[i].first;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), static_cast<size_t>(x.numel()) * sizeof(float)), 0)
        << ca.tensors[i].first << " differs between " << a << " and " << b;
  }
  EXPECT_EQ(ca.meta.at("position").at("step"), cb.meta.at("position").at("step"));
  EXPECT_EQ(ca.meta.at("position").at("best_step"), cb.meta.at("position").at("best_step"));
}

// Every line whole, one per epoch in order, each equal to the uninterrupted run's in every
// value that does not depend on time.
void expect_same_metrics(const std::string& ref_dir, const std::string& dir) {
  const auto a = test::read_metrics(ref_dir), b = test::read_metrics(dir);
  ASSERT_EQ(a.size(), b.size()) << dir << "/metrics.jsonl";
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i]["epoch"].get<int64_t>(), static_cast<int64_t>(i + 1));
    for (const char* k : {"epoch", "step", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                          "ema_test_accuracy", "grad_norm"})
      EXPECT_EQ(a[i][k], b[i][k]) << "line " << i + 1 << " " << k;
  }
}

// The run directory as an uninterrupted run leaves it.
void expect_same_run(const std::string& ref, const std::string& dir) {
  expect_same_tensors(ref + "/last.ckpt", dir + "/last.ckpt");
  expect_same_tensors(ref + "/best.ckpt", dir + "/best.ckpt");
  expect_same_metrics(ref, dir);
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    EXPECT_EQ(n.find(".tmp."), std::string::npos) << n;
    EXPECT_EQ(n.find("pending"), std::string::npos) << n;
  }
}

// Whatever a kill left is loadable: last.ckpt and best.ckpt, if present, read back.
void expect_loadable(const std::string& dir) {
  for (const char* f : {"last.ckpt", "best.ckpt"}) {
    if (fs::exists(fs::path(dir) / f)) {
      EXPECT_NO_THROW(load_checkpoint(dir + "/" + f)) << dir << "/" << f;
    }
  }
}

}  // namespace

// SIGKILL at 20 or more random moments (saves included: one every two steps), each followed
// by --resume (from the start while there is no checkpoint yet).
TEST_F(KillFixture, RandomKillsResumeToTheUninterruptedRun) {
  const std::string ref = root + "/ref";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run(ref, false).code, 0);
  const auto full = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);

  std::mt19937 rng(12345);
  int kills = 0, cycle = 0;
  while (kills < 20) {
    const std::string dir = root + "/killed" + std::to_string(cycle++);
    // Kill points spread over a fifth of a whole run, start-up included: several kills a
    // cycle, the first ones often before the first checkpoint. Start-up (reading the data,
    // the command's load probe) is a fixed cost that can be as long as a fifth of this tiny
    // run, so the window widens with every kill of the cycle: each process then gets past
    // start-up sooner or later, and the cycle ends.
    bool started = false;
    for (int attempt = 0;; ++attempt) {
      ASSERT_LT(attempt, 400) << dir << ": killed 400 times without finishing";
      std::uniform_int_distribution<int64_t> delay(0, full.count() / 5 + attempt * full.count() / 20);
      const bool resume = started && fs::exists(fs::path(dir) / "config.json");
      const bool killed = start_and_kill(train_args(dir, resume), std::chrono::microseconds(delay(rng)));
      started = true;
      if (!killed) break;  // it finished first
      ++kills;
      expect_loadable(dir);
    }
    ASSERT_TRUE(fs::exists(fs::path(dir) / "summary.json")) << dir;
    // Resuming a finished run only reports; it must not change it.
    ASSERT_EQ(run(dir, true).code, 0);
    expect_same_run(ref, dir);
  }
  EXPECT_GE(kills, 20);
}

// A kill at each point between the writes of an epoch's commit: after the metrics line, after
// the pending best.ckpt, after last.ckpt (before best.ckpt is renamed into place).
TEST_F(KillFixture, KillBetweenTheWritesOfACommit) {
  const std::string ref = root + "/ref";
  ASSERT_EQ(run(ref, false).code, 0);
  for (const char* point : {"metrics_appended", "best_pending_saved", "last_saved"}) {
    SCOPED_TRACE(point);
    const std::string dir = root + "/" + point;
    const int st = run_with_env(train_args(dir, false), "SOFTLAB_CRASH_AT", point);
    ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "the crash point was not reached";
    expect_loadable(dir);
    const test::CliRun r = run(dir, true);
    ASSERT_EQ(r.code, 0) << r.err;
    expect_same_run(ref, dir);
  }
}

// Killed before its first checkpoint (after the first metrics line, with mid-epoch saves
// off): a new `train` is refused with the ways out; --resume starts from the beginning.
TEST_F(KillFixture, NoCheckpointYetResumesFromTheStart) {
  const std::string ref = root + "/ref", dir = root + "/early";
  ASSERT_EQ(run(ref, false).code, 0);
  auto args = train_args(dir, false);
  for (const char* a : {"--set", "train.checkpoint_every.steps=0"}) args.push_back(a);
  const int st = run_with_env(args, "SOFTLAB_CRASH_AT", "metrics_appended");
  ASSERT_TRUE(WIFSIGNALED(st));
  ASSERT_FALSE(fs::exists(fs::path(dir) / "last.ckpt"));
  ASSERT_TRUE(fs::exists(fs::path(dir) / "metrics.jsonl"));

  const test::CliRun again = run(dir, false);
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.err.find("--resume"), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("--overwrite"), std::string::npos) << again.err;

  const test::CliRun res = run(dir, true);
  ASSERT_EQ(res.code, 0) << res.err;
  expect_same_run(ref, dir);
}

TEST_F(KillFixture, OverwriteReplacesARun) {
  const std::string ref = root + "/ref", dir = root + "/over";
  ASSERT_EQ(run(ref, false).code, 0);
  ASSERT_EQ(test::softlab_cli({"train", config, "--out", dir, "--quiet", "--set", "train.epochs=1"}, root).code, 0);
  const test::CliRun r = test::softlab_cli({"train", config, "--out", dir, "--quiet", "--overwrite"}, root);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_same_run(ref, dir);
  EXPECT_EQ(test::softlab_cli({"train", config, "--out", dir, "--resume", "--overwrite"}, root).code, 2);
}

// Temporary files of an interrupted save are removed at the next start; pending best
// checkpoints that last.ckpt never recorded too.
TEST_F(KillFixture, LeftoversOfAnInterruptedSaveAreCleared) {
  const std::string dir = root + "/left";
  ASSERT_EQ(test::softlab_cli({"train", config, "--out", dir, "--quiet", "--set", "train.max_steps=5"}, root).code, 0);
  for (const char* f : {"last.ckpt.tmp.99999", "best.ckpt.tmp.12", "summary.json.tmp.7", "best.ckpt.pending-3"})
    std::ofstream(fs::path(dir) / f) << "half a file";
  const test::CliRun r = test::softlab_cli({"train", config, "--out", dir, "--quiet", "--resume"}, root);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* f : {"last.ckpt.tmp.99999", "best.ckpt.tmp.12", "summary.json.tmp.7", "best.ckpt.pending-3"})
    EXPECT_FALSE(fs::exists(fs::path(dir) / f)) << f;
}

// One training process per run directory.
TEST_F(KillFixture, ARunDirectoryInUseIsRefused) {
  const std::string dir = root + "/busy";
  fs::create_directories(dir);
  detail::RunDirLock held(dir);
  const test::CliRun r = run(dir, false);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("in use by another softlab process"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(fs::path(dir) / "config.json"));
}

// A SIGINT saves last.ckpt and prints the whole command that continues the run.
TEST_F(KillFixture, InterruptPrintsTheResumeCommand) {
  const std::string dir = root + "/int";
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int log = ::open((root + "/int_out.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execl(SOFTLAB_CLI_PATH, SOFTLAB_CLI_PATH, "train", config.c_str(), "--out", dir.c_str(), "--progress", "plain",
            "--set", "train.epochs=50", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Once it trains (config.json is written after the data loads), a SIGINT.
  for (int i = 0; i < 400 && !fs::exists(fs::path(dir) / "config.json"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ::kill(pid, SIGINT);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 130);
  const std::string out = test::slurp(root + "/int_out.txt");
  EXPECT_NE(out.find("continue with: softlab train " + config + " --progress plain --set train.epochs=50 --out " + dir +
                     " --resume"),
            std::string::npos)
      << out;
  EXPECT_TRUE(fs::exists(fs::path(dir) / "last.ckpt"));
}
