// The default thread count (affinity mask, cgroup quota, OMP_NUM_THREADS) and the start-up
// load probe that chooses OpenMP's wait policy.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "cli_run.hpp"
#include "core/load_probe.hpp"
#include "softlab/parallel.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"
#include "train_fixtures.hpp"

using namespace softlab;

namespace {

// Two sockets of two cores with two hyper-threads each: processors 0-7.
std::string cpuinfo_2x2x2() {
  std::string s;
  for (int p = 0; p < 8; ++p) {
    const int socket = p / 4, core = (p / 2) % 2;
    s += "processor\t: " + std::to_string(p) + "\nmodel name\t: Test CPU\nphysical id\t: " + std::to_string(socket) +
         "\ncore id\t\t: " + std::to_string(core) + "\nflags\t\t: fpu avx2\n\n";
  }
  return s;
}

TEST(ThreadDefaults, PhysicalCoresInTheAffinityMask) {
  ThreadInputs in;
  in.cpuinfo = cpuinfo_2x2x2();
  EXPECT_EQ(choose_default_threads(in).threads, 4) << "no mask: every physical core";
  in.allowed_cpus = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(choose_default_threads(in).threads, 4);
  in.allowed_cpus = {0, 1};  // both hyper-threads of one core
  EXPECT_EQ(choose_default_threads(in).threads, 1);
  in.allowed_cpus = {0, 2, 4};  // one thread of three cores
  const ThreadDefault d = choose_default_threads(in);
  EXPECT_EQ(d.threads, 3);
  EXPECT_NE(d.reason.find("affinity"), std::string::npos) << d.reason;
}

TEST(ThreadDefaults, CgroupQuotaCaps) {
  ThreadInputs in;
  in.cpuinfo = cpuinfo_2x2x2();
  in.cgroup_quota = 2.5;  // more than 2 busy threads would be throttled
  ThreadDefault d = choose_default_threads(in);
  EXPECT_EQ(d.threads, 2);
  EXPECT_NE(d.reason.find("quota"), std::string::npos) << d.reason;
  in.cgroup_quota = 0.5;  // less than a CPU: still one thread
  EXPECT_EQ(choose_default_threads(in).threads, 1);
  in.cgroup_quota = 16;  // a quota above the cores does not raise the count
  EXPECT_EQ(choose_default_threads(in).threads, 4);
}

TEST(ThreadDefaults, OmpNumThreadsWins) {
  ThreadInputs in;
  in.cpuinfo = cpuinfo_2x2x2();
  in.allowed_cpus = {0};
  in.omp_num_threads = "3";
  EXPECT_EQ(choose_default_threads(in).threads, 3);
  in.omp_num_threads = "6,2";  // nested levels: the outer one
  EXPECT_EQ(choose_default_threads(in).threads, 6);
  in.omp_num_threads = "lots";  // not a count: ignored
  EXPECT_EQ(choose_default_threads(in).threads, 1);
  in.omp_num_threads = "0";
  EXPECT_EQ(choose_default_threads(in).threads, 1);
}

TEST(ThreadDefaults, NoCpuinfoFallsBackToTheMask) {
  ThreadInputs in;
  in.allowed_cpus = {3, 5};
  EXPECT_EQ(choose_default_threads(in).threads, 2);
}

// The command line: `taskset` and OMP_NUM_THREADS change what softlab info reports.
TEST(ThreadDefaults, CommandLineFollowsAffinityAndEnvironment) {
  const std::string dir = test::temp_dir("thread_defaults");
  if (std::system("command -v taskset >/dev/null 2>&1") == 0) {
    const std::string cmd = std::string("taskset -c 0 '") + SOFTLAB_CLI_PATH + "' info > '" + dir + "/out.txt'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    const std::string out = test::slurp(dir + "/out.txt");
    EXPECT_NE(out.find("threads: 1 (default 1:"), std::string::npos) << out;
  }
  setenv("OMP_NUM_THREADS", "3", 1);
  const auto r = test::softlab_cli({"info"}, dir);
  unsetenv("OMP_NUM_THREADS");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("threads: 3 (default 3: OMP_NUM_THREADS=3)"), std::string::npos) << r.out;
  std::filesystem::remove_all(dir);
}

// A child that spins until killed.
pid_t start_spinner() {
  const pid_t pid = fork();
  if (pid == 0) {
    volatile unsigned long x = 0;
    for (;;) x = x + 1;
  }
  return pid;
}

void stop(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

// A busy process that started alongside (younger than a second) is not "other load": it
// is measured as young and left out, whatever else runs on the machine.
TEST(LoadProbe, ProcessStartedAlongsideIsLeftOut) {
  const pid_t spinner = start_spinner();
  ASSERT_GT(spinner, 0);
  const detail::LoadSample s = detail::sample_other_load(std::chrono::milliseconds(300), 1.0);
  stop(spinner);
  ASSERT_TRUE(s.ok);
  // The spinner runs the whole window; sharing 2 cores with whatever else runs, it gets well
  // over a third of one.
  EXPECT_GT(s.young_cores, 0.3) << "other " << s.other_cores;
}

// A busy process that was there before counts. The probe measures relative to its own
// process's start, so it runs in a child forked after the spinner.
TEST(LoadProbe, ProcessStartedBeforeCounts) {
  const pid_t spinner = start_spinner();
  ASSERT_GT(spinner, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  int fd[2];
  ASSERT_EQ(pipe(fd), 0);
  const pid_t probe = fork();
  if (probe == 0) {  // young_seconds 0.1: the spinner, 200 ms older than this child, is old
    const detail::LoadSample s = detail::sample_other_load(std::chrono::milliseconds(300), 0.1);
    const double v[2] = {s.ok ? s.other_cores : -1.0, s.young_cores};
    (void)!write(fd[1], v, sizeof v);
    _exit(0);
  }
  double v[2] = {-1.0, 0.0};
  close(fd[1]);
  const bool got = read(fd[0], v, sizeof v) == static_cast<ssize_t>(sizeof v);
  close(fd[0]);
  waitpid(probe, nullptr, 0);
  stop(spinner);
  ASSERT_TRUE(got && v[0] >= 0.0) << "the probe could not read /proc";
  EXPECT_GT(v[0], 0.3) << "young " << v[1];
}

// With the default thread count, cores that other processes kept busy are left out; an
// explicit count is kept as it is.
TEST(BusyMachineThreads, DefaultLeavesBusyCoresOut) {
  if (default_num_threads() < 2) GTEST_SKIP() << "one CPU: nothing to leave out";
  const std::string root = test::temp_dir("busy_threads");
  test::write_learnable_mnist(root + "/data", 200, 50);
  auto run = [&](const std::string& out, int threads, double load) {
    json j = test::tiny_config(root + "/data", root + "/" + out);
    apply_override(j, "train.threads=" + std::to_string(threads));
    apply_override(j, "train.max_steps=2");
    TrainOptions o;
    o.quiet = true;
    o.other_load_cores = load;
    const TrainResult r = train(parse_config(resolve_config(j)), o);
    set_num_threads(0);
    return r.summary["threads"].get<int>();
  };
  const int all = default_num_threads();
  EXPECT_EQ(run("quiet", 0, 0.2), all);
  EXPECT_EQ(run("one_busy", 0, 1.04), all - 1);
  EXPECT_EQ(run("all_busy", 0, 7.0), 1);
  EXPECT_EQ(run("explicit", 2, 1.0), 2);
  std::filesystem::remove_all(root);
}

}  // namespace
