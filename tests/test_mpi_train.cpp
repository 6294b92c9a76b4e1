// Data-parallel training under mpirun (docs/distributed.md): two ranks against one process,
// resume after a signal to one rank, refusals, and a rank that dies. Each test runs the
// softlab command under `mpirun --oversubscribe -np 2` and skips where this build has no MPI
// or mpirun is missing.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_run.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/distributed.hpp"
#include "softlab/softlab.hpp"
#include "train_fixtures.hpp"

namespace fs = std::filesystem;
using namespace softlab;

namespace {

const std::string kConfig = std::string(SOFTLAB_SOURCE_DIR) + "/configs/fmnist_vit.json";

// Why these tests cannot run here, or "" when they can.
std::string missing_requirement() {
  if (!dist::built_with_mpi()) return "this softlab is built without MPI (SOFTLAB_WITH_MPI)";
  if (!test::have_mpirun()) return "mpirun is not on PATH (tools/setup.sh installs Open MPI)";
  if (!fs::exists("/usr/share/datasets/fashion-mnist") && !std::getenv("SOFTLAB_DATA_DIR"))
    return "Fashion-MNIST is not installed (tools/setup.sh installs dataset-fashion-mnist)";
  return {};
}
#define SKIP_WITHOUT_MPI()                                 \
  do {                                                     \
    if (const auto why = missing_requirement(); !why.empty()) GTEST_SKIP() << why; \
  } while (0)

// The default model for `steps` steps, evaluated on one batch, one thread per process.
std::vector<std::string> train_args(const std::string& out, int steps, const std::string& step_log) {
  return {"train", kConfig, "--set", "train.max_steps=" + std::to_string(steps), "--set", "train.max_eval_batches=1",
          "--threads", "1", "--progress", "plain", "--out", out, "--log-steps", step_log};
}

std::vector<double> step_losses(const std::string& path) {
  std::vector<double> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line).at("loss").get<double>());
  return out;
}

// The model.* tensors of a checkpoint, by name.
std::map<std::string, Tensor> weights(const std::string& ckpt) {
  std::map<std::string, Tensor> out;
  for (auto& [n, t] : load_checkpoint(ckpt).tensors)
    if (n.rfind("model.", 0) == 0) out[n] = t;
  return out;
}

// max |a - b| / max(1, |a|) over all weights; -1 if the names or shapes differ.
double weight_difference(const std::string& a_path, const std::string& b_path) {
  const auto a = weights(a_path), b = weights(b_path);
  if (a.size() != b.size() || a.empty()) return -1.0;
  double worst = 0.0;
  for (const auto& [n, ta] : a) {
    const auto it = b.find(n);
    if (it == b.end() || it->second.shape() != ta.shape()) return -1.0;
    for (int64_t i = 0; i < ta.numel(); ++i) {
      const double x = ta.data()[i], y = it->second.data()[i];
      worst = std::max(worst, std::abs(x - y) / std::max(1.0, std::abs(x)));
    }
  }
  return worst;
}

// The pid of rank `rank` among the processes whose command line holds `marker`.
int rank_pid(const std::string& marker, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = test::slurp(e.path() / "cmdline"), env = test::slurp(e.path() / "environ");
    for (char& c : cmd) c = c ? c : ' ';
    if (cmd.find(marker) == std::string::npos || cmd.find("mpirun") != std::string::npos ||
        cmd.find("timeout") == 0)
      continue;
    if (env.find("OMPI_COMM_WORLD_RANK=" + std::to_string(rank) + '\0') != std::string::npos) return std::stoi(name);
  }
  return -1;
}

// Waits until `path` holds at least `lines` lines (or `seconds` pass); true if it does.
bool wait_for_lines(const std::string& path, size_t lines, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (step_losses(path).size() >= lines) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

// The contract: with a fixed global batch, 2 ranks give 1 process's result within float
// reduction order. Small buckets, so that several allreduces overlap backward.
TEST(MpiTrain, TwoRanksMatchOneProcess) {
  SKIP_WITHOUT_MPI();
  const std::string dir = test::temp_dir("mpi_equivalence");
  const auto one = test::softlab_cli(train_args(dir + "/one", 20, dir + "/one.jsonl"), dir);
  ASSERT_EQ(one.code, 0) << one.err;
  auto args = train_args(dir + "/two", 20, dir + "/two.jsonl");
  args.insert(args.end(), {"--bucket-mib", "0.1"});
  const auto two = test::softlab_mpirun(2, args, dir);
  ASSERT_EQ(two.code, 0) << two.out << two.err;
  const std::string said = two.out + two.err;  // progress lines go to stderr
  EXPECT_NE(said.find("data parallel over 2 MPI ranks: 64 of each batch of 128 per rank"), std::string::npos) << said;
  EXPECT_NE(said.find("summed in 6 buckets"), std::string::npos) << "0.1 MiB buckets hold the 0.65 MB of gradients in 6: "
                                                                 << said;

  const auto a = step_losses(dir + "/one.jsonl"), b = step_losses(dir + "/two.jsonl");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u) << "rank 0 alone writes the step log";
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-5 * std::abs(a[i])) << "step " << i + 1;
  const double dw = weight_difference(dir + "/one/last.ckpt", dir + "/two/last.ckpt");
  EXPECT_GE(dw, 0.0) << "the checkpoints hold different tensors";
  EXPECT_LE(dw, 1e-4);
  EXPECT_GT(a.front() - a.back(), 0.2) << "20 steps of training lower the loss";
  fs::remove_all(dir);
}

// SIGTERM to one rank stops both at the same step with a resumable checkpoint; resuming with
// the same number of ranks ends bit for bit where an uninterrupted run ends, and resuming
// with another number (1) ends within float reduction order of it.
TEST(MpiTrain, SignalToOneRankStopsAllAndResumeIsExact) {
  SKIP_WITHOUT_MPI();
  const std::string dir = test::temp_dir("mpi_resume");
  const int steps = 60;
  const auto full = test::softlab_mpirun(2, train_args(dir + "/full", steps, dir + "/full.jsonl"), dir);
  ASSERT_EQ(full.code, 0) << full.err;

  test::CliRun cut;
  fs::create_directories(dir + "/c");
  std::thread run([&] { cut = test::softlab_mpirun(2, train_args(dir + "/cut", steps, dir + "/cut.jsonl"), dir + "/c"); });
  const bool started = wait_for_lines(dir + "/cut.jsonl", 3, 120);
  const int pid = rank_pid(dir + "/cut", 1);
  if (started && pid > 0) kill(pid, SIGTERM);
  run.join();
  ASSERT_TRUE(started) << cut.err;
  ASSERT_GT(pid, 0) << "rank 1 of the run was not found";
  ASSERT_EQ(cut.code, 130) << "every rank stops as interrupted: " << cut.out << cut.err;
  const size_t done = step_losses(dir + "/cut.jsonl").size();
  ASSERT_LT(done, static_cast<size_t>(steps)) << "the signal came too late to test anything";
  EXPECT_NE((cut.out + cut.err).find("interrupted: saved"), std::string::npos) << cut.out << cut.err;

  fs::copy(dir + "/cut", dir + "/cut1", fs::copy_options::recursive);
  auto resume = train_args(dir + "/cut", steps, dir + "/cut.jsonl");
  resume.push_back("--resume");
  const auto again = test::softlab_mpirun(2, resume, dir);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(weight_difference(dir + "/full/last.ckpt", dir + "/cut/last.ckpt"), 0.0)
      << "resumed under the same number of ranks: bit for bit";
  const auto a = step_losses(dir + "/full.jsonl"), b = step_losses(dir + "/cut.jsonl");
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i + 1;

  auto alone = train_args(dir + "/cut1", steps, dir + "/cut1.jsonl");
  alone.push_back("--resume");
  const auto one = test::softlab_cli(alone, dir);
  ASSERT_EQ(one.code, 0) << one.err;
  const double dw = weight_difference(dir + "/full/last.ckpt", dir + "/cut1/last.ckpt");
  EXPECT_GE(dw, 0.0);
  EXPECT_LE(dw, 1e-4) << "a 2-rank checkpoint resumed by one process";
  fs::remove_all(dir);
}

TEST(MpiTrain, RefusalsReachEveryRank) {
  SKIP_WITHOUT_MPI();
  const std::string dir = test::temp_dir("mpi_refusals");
  // A batch that does not split: exit 2 naming both numbers, printed once.
  auto args = train_args(dir + "/odd", 2, dir + "/odd.jsonl");
  args.insert(args.end(), {"--set", "train.batch_size=127"});
  const auto odd = test::softlab_mpirun(2, args, dir);
  EXPECT_EQ(odd.code, 2) << odd.err;
  EXPECT_NE(odd.err.find("train.batch_size = 127 does not split evenly over 2 ranks"), std::string::npos) << odd.err;
  EXPECT_EQ(odd.err.find("rank 1"), std::string::npos) << "rank 0 alone reports an error every rank has: " << odd.err;
  EXPECT_FALSE(fs::exists(dir + "/odd")) << "nothing is written for a refused run";

  // A run directory that holds a run: rank 0 alone looks at it, and every rank exits 2.
  const auto first = test::softlab_mpirun(2, train_args(dir + "/run", 2, dir + "/run.jsonl"), dir);
  ASSERT_EQ(first.code, 0) << first.err;
  const auto second = test::softlab_mpirun(2, train_args(dir + "/run", 2, dir + "/run.jsonl"), dir);
  EXPECT_EQ(second.code, 2) << second.err;
  EXPECT_NE(second.err.find("already holds a run"), std::string::npos) << second.err;

  // Ranks that do not run the same training: one with another seed (MPMD launch).
  const std::string cli = SOFTLAB_CLI_PATH;
  std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun --oversubscribe";
  for (const char* seed : {"0", "1"}) {
    cmd += std::string(seed[0] == '0' ? "" : " :") + " -np 1 '" + cli + "'";
    for (const auto& a : train_args(dir + "/mixed", 2, dir + "/mixed.jsonl")) cmd += " '" + a + "'";
    cmd += std::string(" --set seed=") + seed;
  }
  cmd += " >'" + dir + "/out.txt' 2>'" + dir + "/err.txt' </dev/null";
  const int st = std::system(cmd.c_str());
  const std::string err = test::slurp(dir + "/err.txt");
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2) << err;
  EXPECT_NE(err.find("rank 1 has another config"), std::string::npos) << err;
  fs::remove_all(dir);
}

namespace {
// A long 2-rank run whose rank 1 gets `sig` once the run has taken two steps: its result,
// whether it started, the pid signalled (-1: not found), and the seconds from the signal
// to the end of the job.
struct Signalled {
  test::CliRun res;
  bool started = false;
  int pid = -1;
  double after = 0.0;
};
Signalled signal_rank_one(const std::string& dir, int sig, const std::string& env = "") {
  fs::create_directories(dir + "/c");
  Signalled s;
  std::thread run([&] {
    s.res = test::softlab_mpirun(2, train_args(dir + "/run", 100000, dir + "/run.jsonl"), dir + "/c", 120, env);
  });
  s.started = wait_for_lines(dir + "/run.jsonl", 2, 120);
  s.pid = rank_pid(dir + "/run", 1);
  const auto sent = std::chrono::steady_clock::now();
  if (s.started && s.pid > 0) kill(s.pid, sig);
  run.join();
  s.after = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  if (s.pid > 0 && sig == SIGSTOP) kill(s.pid, SIGKILL);  // in case the job left it behind
  return s;
}
}  // namespace

// A rank killed outright (no chance to say anything): the job ends with an error, it does
// not hang. mpirun notices the death and ends the other rank.
TEST(MpiTrain, ADeadRankEndsTheJob) {
  SKIP_WITHOUT_MPI();
  const std::string dir = test::temp_dir("mpi_dead_rank");
  const Signalled s = signal_rank_one(dir, SIGKILL);
  ASSERT_TRUE(s.started) << s.res.err;
  ASSERT_GT(s.pid, 0);
  EXPECT_NE(s.res.code, 0);
  EXPECT_NE(s.res.code, 124) << "the job hung until timeout(1) ended it";
  EXPECT_LT(s.after, 60.0) << "seconds from the kill to the end of the job";
  EXPECT_TRUE(fs::exists(dir + "/run/config.json"));
  fs::remove_all(dir);
}

// A rank that stops answering without dying (SIGSTOP): the other gives up after
// SOFTLAB_MPI_TIMEOUT seconds, says what it waited for, and ends the job.
TEST(MpiTrain, AHungRankEndsTheJobAfterTheTimeout) {
  SKIP_WITHOUT_MPI();
  const std::string dir = test::temp_dir("mpi_hung_rank");
  const Signalled s = signal_rank_one(dir, SIGSTOP, "SOFTLAB_MPI_TIMEOUT=3");
  ASSERT_TRUE(s.started) << s.res.err;
  ASSERT_GT(s.pid, 0);
  EXPECT_NE(s.res.code, 0);
  EXPECT_NE(s.res.code, 124) << "the job hung until timeout(1) ended it";
  EXPECT_NE(s.res.err.find("rank 0 of 2 waited 3 s in"), std::string::npos) << s.res.err;
  EXPECT_LT(s.after, 60.0);
  fs::remove_all(dir);
}
