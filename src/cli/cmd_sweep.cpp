// softlab sweep SWEEP.json [--jobs N] [--threads T] [--out DIR] [--dry-run]
//
// Every run is a child process `softlab train BASE --set ... --out <run dir>` with its output
// in <run dir>/train.log, so a sweep's runs are ordinary run directories (eval, predict and
// --resume work on them) and a crash in one run cannot take the others down. Finished runs
// are skipped and runs with a last.ckpt are resumed, so an interrupted sweep continues where
// it stopped. --jobs N runs N children at once with the threads split between them. A lock
// (<out>/sweep.lock) keeps a second sweep out of a folder while one runs.
//
// Under mpirun (`mpirun -np R softlab sweep ...`) the ranks share the runs: rank 0 hands them
// out and writes the results, each rank runs --jobs of them at once (cli/sweep_dispatch.hpp).
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <thread>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "cli/sweep_dispatch.hpp"
#include "cli/sweep_runs.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/distributed.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/sweep.hpp"

namespace softlab::cli {

namespace fs = std::filesystem;

using namespace softlab::cli::sweep;

namespace {
struct SweepArgs {
  Sweep sweep;
  int jobs = 1, threads = 1;
  bool help = false, dry_run = false;
  std::string help_text;
};

SweepArgs read_args(int argc, char** argv) {
  cxxopts::Options opts("softlab sweep", "Run every cell of a sweep file and write its results tables");
  opts.positional_help("SWEEP.json");
  opts.add_options()("sweep", "sweep file", cxxopts::value<std::string>())(
      "j,jobs", "runs at once (per rank under mpirun); the threads are split between them",
      cxxopts::value<int>()->default_value("1"))(
      "threads", "threads in total (per rank under mpirun; 0 = physical cores, shared by the machine's ranks)",
      cxxopts::value<int>()->default_value("0"))(
      "out", "the sweep's folder (overrides the file's \"out\")", cxxopts::value<std::string>())(
      "dry-run", "validate and list the runs, run nothing")("h,help", "show this help");
  add_plugin_option(opts);
  opts.parse_positional({"sweep"});
  auto r = parse_args(opts, argc, argv);
  SweepArgs a;
  if (r.count("help")) {
    a.help = true;
    a.help_text = opts.help();
    return a;
  }
  SOFTLAB_CHECK(r.count("sweep"), "sweep: no sweep file given (softlab sweep SWEEP.json)");
  a.jobs = r["jobs"].as<int>();
  SOFTLAB_CHECK(a.jobs >= 1, "--jobs: expected a positive number, got ", a.jobs);
  // Ranks on one machine that share cores share them out (collective: every rank gets here).
  const int sharing = dist::ranks_sharing_cores();
  const int total_threads = r["threads"].as<int>() > 0 ? r["threads"].as<int>()
                                                       : std::max(1, default_num_threads() / sharing);
  a.threads = std::max(1, total_threads / a.jobs);
  a.dry_run = r.count("dry-run") > 0;
  a.sweep = load_sweep(r["sweep"].as<std::string>(), r.count("out") ? r["out"].as<std::string>() : "");
  return a;
}

// One sweep per folder at a time: two would start the same runs into the same directories.
// The lock goes with the process (also when it is killed), so a stale lock cannot block.
// Under mpirun rank 0 alone takes it: it guards against a second sweep, not the ranks of this
// one against each other (they never take the same run: rank 0 hands each out once). It is a
// flock(), which Linux NFSv4 clients honour, but not every network file system does.
void lock_sweep_folder(const Sweep& s) {
  fs::create_directories(s.out);
  const std::string lock_path = (fs::path(s.out) / "sweep.lock").string();
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT, 0644);
  SOFTLAB_CHECK(lock_fd >= 0, "sweep: cannot create ", lock_path);
  SOFTLAB_CHECK(flock(lock_fd, LOCK_EX | LOCK_NB) == 0, "sweep: another softlab sweep is running in ", s.out,
                " (it holds ", lock_path, "); wait for it, or give this one another --out");
  write_file_atomic((fs::path(s.out) / "sweep.json").string(), s.spec.dump(2) + "\n");
}

// The single-process loop: up to `jobs` children at once. It polls rather than blocking in
// waitpid, so that an interruption arriving at any moment is passed on to the running
// children within a nap.
DispatchResult run_here(const std::string& self, const Sweep& s, const std::vector<size_t>& todo, int jobs,
                        int threads) {
  std::map<pid_t, size_t> running;
  size_t next = 0, done = 0;
  bool forwarded = false;
  DispatchResult res;
  for (;;) {
    if (g_interrupted && !forwarded) {
      interrupt_all(running);
      forwarded = true;
    }
    while (!g_interrupted && next < todo.size() && static_cast<int>(running.size()) < jobs) {
      const size_t i = todo[next++];
      std::cout << "[" << done + running.size() + 1 << "/" << todo.size() << "] start  " << describe(s.runs[i]) << "\n"
                << std::flush;
      running[start_run(self, s, s.runs[i], threads, -1)] = i;
    }
    reap(s, running, [&](size_t i, Outcome o, int code) {
      ++done;
      if (o == Outcome::Failed) ++res.failed;
      std::cout << "[" << done << "/" << todo.size() << "] " << outcome_text(s.runs[i], o, code) << "\n" << std::flush;
    });
    if (running.empty() && (g_interrupted || next == todo.size())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  res.interrupted = g_interrupted;
  return res;
}
}  // namespace

int cmd_sweep(int argc, char** argv) {
  // Under mpirun every rank reads the arguments and the sweep; an error anywhere is every
  // rank's (dist::agree), printed once.
  SweepArgs a;
  dist::agree("reading the sweep's arguments and file", [&] {
    try {
      a = read_args(argc, argv);
    } catch (const cxxopts::exceptions::exception& e) {
      if (!dist::active()) throw;
      throw Error(std::string(e.what()) + " (see --help)");
    }
  });
  if (a.help) {
    if (dist::is_root()) std::cout << a.help_text << "\n";
    return 0;
  }
  const Sweep& s = a.sweep;
  if (dist::active()) check_same_runs(s);

  // Rank 0 alone decides what is still to do.
  std::vector<size_t> todo;
  if (dist::is_root()) {
    for (size_t i = 0; i < s.runs.size(); ++i)
      if (!run_finished(s.runs[i])) todo.push_back(i);
    std::cout << "sweep " << s.file << ": " << s.runs.size() << " runs (" << s.runs.size() - todo.size()
              << " finished, " << todo.size() << " to run) in " << s.out << "; ";
    if (dist::active()) std::cout << dist::size() << " ranks, ";
    std::cout << a.jobs << " at a time" << (dist::active() ? " on each" : "") << ", " << a.threads << " thread"
              << (a.threads > 1 ? "s" : "") << " each\n";
    if (a.dry_run)
      for (const auto& run : s.runs) std::cout << (run_finished(run) ? "  done  " : "  todo  ") << run.dir << "\n";
    std::cout << std::flush;
  }
  if (a.dry_run) return 0;
  dist::agree("taking the sweep's lock", [&] {
    if (dist::is_root()) lock_sweep_folder(s);
  });
  install_signal_handlers();

  const std::string self = fs::read_symlink("/proc/self/exe").string();
  if (dist::active() && !dist::is_root()) return work(self, s, a.jobs, a.threads);
  const DispatchResult res =
      dist::active() ? dispatch(self, s, todo, a.jobs, a.threads) : run_here(self, s, todo, a.jobs, a.threads);
  const json rows = collect_results(s);
  write_results(s, rows);
  std::cout << results_markdown(s, rows) << "results: " << (fs::path(s.out) / "results.md").string() << ", .csv, .json\n";
  int code = 0;
  if (res.interrupted) {
    std::cout << "sweep interrupted: run the same command again to continue\n";
    code = kExitInterrupted;
  } else if (res.failed) {
    std::cerr << "softlab: error: " << res.failed << " run" << (res.failed > 1 ? "s" : "") << " failed\n";
    code = 1;
  }
  std::cout << std::flush;
  if (dist::active()) release_workers(code);
  return code;
}

}  // namespace softlab::cli
