// softlab sweep SWEEP.json [--jobs N] [--threads T] [--out DIR] [--dry-run]
//
// Every run is a child process `softlab train BASE --set ... --out <run dir>` with its output
// in <run dir>/train.log, so a sweep's runs are ordinary run directories (eval, predict and
// --resume work on them) and a crash in one run cannot take the others down. Finished runs
// are skipped and runs with a last.ckpt are resumed, so an interrupted sweep continues where
// it stopped. --jobs N runs N children at once with the threads split between them. A lock
// (<out>/sweep.lock) keeps a second sweep out of a folder while one runs.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "softlab/plugin.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/sweep.hpp"

namespace softlab::cli {

namespace fs = std::filesystem;

namespace {
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_sweep_signal(int) { g_interrupted = 1; }  // the children get the signal too

// A directory left by a run that died before its first checkpoint holds nothing to resume;
// it is renamed aside (never deleted) so the run can start afresh.
void set_aside_unresumable(const SweepRun& r) {
  const fs::path d(r.dir);
  if (!fs::exists(d / "config.json") || fs::exists(d / "last.ckpt")) return;
  const fs::path aside = d.string() + ".incomplete-" + std::to_string(std::time(nullptr));
  fs::rename(d, aside);
  std::cerr << "sweep: " << r.dir << " had no checkpoint; moved it to " << aside.string() << "\n";
}

pid_t start_run(const std::string& self, const Sweep& s, const SweepRun& r, int threads) {
  set_aside_unresumable(r);
  fs::create_directories(r.dir);
  const bool resume = fs::exists(fs::path(r.dir) / "last.ckpt");
  std::vector<std::string> args = {self, "train", s.base};
  for (const auto& o : r.overrides) {
    args.push_back("--set");
    args.push_back(o);
  }
  for (const char* a : {"--out", r.dir.c_str(), "--threads"}) args.push_back(a);
  args.push_back(std::to_string(threads));
  args.push_back("--progress");
  args.push_back("plain");
  if (resume) args.push_back("--resume");
  for (const std::string& lib : loaded_plugins()) {  // absolute paths: the child's modules are the parent's
    args.push_back("--plugin");
    args.push_back(lib);
  }
  const std::string log = (fs::path(r.dir) / "train.log").string();
  const pid_t pid = fork();
  if (pid < 0) throw Error("sweep: cannot start a process for " + r.dir, Error::Kind::Internal);
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(self.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

std::string describe(const SweepRun& r) { return r.cell + " seed " + std::to_string(r.seed); }
}  // namespace

int cmd_sweep(int argc, char** argv) {
  cxxopts::Options opts("softlab sweep", "Run every cell of a sweep file and write its results tables");
  opts.positional_help("SWEEP.json");
  opts.add_options()("sweep", "sweep file", cxxopts::value<std::string>())(
      "j,jobs", "runs at once; the threads are split between them", cxxopts::value<int>()->default_value("1"))(
      "threads", "threads in total (0 = physical cores)", cxxopts::value<int>()->default_value("0"))(
      "out", "the sweep's folder (overrides the file's \"out\")", cxxopts::value<std::string>())(
      "dry-run", "validate and list the runs, run nothing")("h,help", "show this help");
  add_plugin_option(opts);
  opts.parse_positional({"sweep"});
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  SOFTLAB_CHECK(r.count("sweep"), "sweep: no sweep file given (softlab sweep SWEEP.json)");
  const int jobs = r["jobs"].as<int>();
  SOFTLAB_CHECK(jobs >= 1, "--jobs: expected a positive number, got ", jobs);
  const int total_threads = r["threads"].as<int>() > 0 ? r["threads"].as<int>() : default_num_threads();
  const int threads = std::max(1, total_threads / jobs);
  const Sweep s = load_sweep(r["sweep"].as<std::string>(), r.count("out") ? r["out"].as<std::string>() : "");

  std::vector<const SweepRun*> todo;
  for (const auto& run : s.runs)
    if (!run_finished(run)) todo.push_back(&run);
  std::cout << "sweep " << s.file << ": " << s.runs.size() << " runs (" << s.runs.size() - todo.size()
            << " finished, " << todo.size() << " to run) in " << s.out << "; " << jobs << " at a time, " << threads
            << " thread" << (threads > 1 ? "s" : "") << " each\n";
  if (r.count("dry-run")) {
    for (const auto& run : s.runs)
      std::cout << (run_finished(run) ? "  done  " : "  todo  ") << run.dir << "\n";
    return 0;
  }
  fs::create_directories(s.out);
  // One sweep per folder at a time: two would start the same runs into the same directories.
  // The lock goes with the process (also when it is killed), so a stale lock cannot block.
  const std::string lock_path = (fs::path(s.out) / "sweep.lock").string();
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT, 0644);
  SOFTLAB_CHECK(lock_fd >= 0, "sweep: cannot create ", lock_path);
  SOFTLAB_CHECK(flock(lock_fd, LOCK_EX | LOCK_NB) == 0, "sweep: another softlab sweep is running in ", s.out,
                " (it holds ", lock_path, "); wait for it, or give this one another --out");
  write_file_atomic((fs::path(s.out) / "sweep.json").string(), s.spec.dump(2) + "\n");

  struct sigaction sa {};
  sa.sa_handler = on_sweep_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::map<pid_t, const SweepRun*> running;
  size_t next = 0, failed = 0, done = 0;
  while (next < todo.size() || !running.empty()) {
    while (!g_interrupted && next < todo.size() && static_cast<int>(running.size()) < jobs) {
      const SweepRun* run = todo[next++];
      std::cout << "[" << done + running.size() + 1 << "/" << todo.size() << "] start  " << describe(*run) << "\n"
                << std::flush;
      running[start_run(self, s, *run, threads)] = run;
    }
    if (running.empty()) break;
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const auto it = running.find(pid);
    if (it == running.end()) continue;
    const SweepRun* run = it->second;
    running.erase(it);
    ++done;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0 && run_finished(*run)) {
      std::cout << "[" << done << "/" << todo.size() << "] done   " << describe(*run) << "\n";
    } else if (code == 130 || g_interrupted) {
      std::cout << "[" << done << "/" << todo.size() << "] stopped " << describe(*run) << " (resumes next time)\n";
    } else {
      ++failed;
      std::cout << "[" << done << "/" << todo.size() << "] FAILED " << describe(*run) << " (exit " << code
                << "; see " << (fs::path(run->dir) / "train.log").string() << ")\n";
    }
    std::cout << std::flush;
  }
  const json rows = collect_results(s);
  write_results(s, rows);
  std::cout << results_markdown(s, rows) << "results: " << (fs::path(s.out) / "results.md").string() << ", .csv, .json\n";
  if (g_interrupted) {
    std::cout << "sweep interrupted: run the same command again to continue\n";
    return 130;
  }
  if (failed) {
    std::cerr << "softlab: error: " << failed << " run" << (failed > 1 ? "s" : "") << " failed\n";
    return 1;
  }
  return 0;
}

}  // namespace softlab::cli
