// One run of softlab sweep: its child process and what its exit means (cli/sweep_runs.hpp).
#include "cli/sweep_runs.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <vector>

#include "cli/commands.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/distributed.hpp"
#include "softlab/error.hpp"
#include "softlab/plugin.hpp"

extern char** environ;

namespace softlab::cli::sweep {

namespace fs = std::filesystem;

volatile std::sig_atomic_t g_interrupted = 0;

namespace {
extern "C" void on_sweep_signal(int) { g_interrupted = 1; }

// Under mpirun the rank's lines say which rank they come from.
std::string rank_prefix() { return dist::active() ? "rank " + std::to_string(dist::rank()) + ": " : ""; }

// A directory left by a run that died before its first checkpoint holds nothing to resume;
// it is renamed aside (never deleted) so the run can start afresh.
void set_aside_unresumable(const SweepRun& r) {
  const fs::path d(r.dir);
  if (!fs::exists(d / "config.json") || fs::exists(d / "last.ckpt")) return;
  const fs::path aside = d.string() + ".incomplete-" + std::to_string(std::time(nullptr));
  fs::rename(d, aside);
  std::cerr << rank_prefix() << "sweep: " << r.dir << " had no checkpoint; moved it to " << aside.string() << "\n";
}

// Which rank (and machine) ran the run last, for results.json; a run started without mpirun
// drops an old record rather than keep a wrong one.
void record_rank(const SweepRun& r, int rank) {
  const fs::path p = fs::path(r.dir) / "sweep_rank.json";
  if (rank < 0) {
    std::error_code ec;
    fs::remove(p, ec);
    return;
  }
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const json j = {{"rank", rank}, {"ranks", dist::size()}, {"host", std::string(host)}};
  write_file_atomic(p.string(), j.dump() + "\n");
}

// The parent's environment with SOFTLAB_MPI=0, built before fork (the child only execs).
std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "SOFTLAB_MPI=", 12) != 0) env.emplace_back(*e);
  env.emplace_back("SOFTLAB_MPI=0");
  return env;
}
}  // namespace

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_sweep_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A closed terminal: the children, in their own process groups, do not get its SIGHUP.
  sigaction(SIGHUP, &sa, nullptr);
}

pid_t start_run(const std::string& self, const Sweep& s, const SweepRun& r, int threads, int rank) {
  set_aside_unresumable(r);
  fs::create_directories(r.dir);
  record_rank(r, rank);
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
  std::vector<std::string> env = child_environment();
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string log = (fs::path(r.dir) / "train.log").string();
  const pid_t pid = fork();
  if (pid < 0) throw Error("sweep: cannot start a process for " + r.dir, Error::Kind::Internal);
  if (pid == 0) {
    setpgid(0, 0);  // signals reach it through the sweep only (sweep_runs.hpp)
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execve(self.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

void interrupt(pid_t child) { kill(child, SIGTERM); }

void interrupt_all(const std::map<pid_t, size_t>& running) {
  for (const auto& [pid, i] : running) interrupt(pid);
}

void reap(const Sweep& s, std::map<pid_t, size_t>& running, const std::function<void(size_t, Outcome, int)>& done) {
  for (;;) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    const auto it = running.find(pid);
    if (it == running.end()) continue;
    const size_t i = it->second;
    running.erase(it);
    int code = 0;
    const Outcome o = outcome_of(s.runs[i], status, &code);
    done(i, o, code);
  }
}

Outcome outcome_of(const SweepRun& r, int status, int* code) {
  *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (*code == 0 && run_finished(r)) return Outcome::Done;
  if (*code == kExitInterrupted || g_interrupted) return Outcome::Stopped;
  return Outcome::Failed;
}

std::string describe(const SweepRun& r) { return r.cell + " seed " + std::to_string(r.seed); }

std::string outcome_text(const SweepRun& r, Outcome o, int code) {
  switch (o) {
    case Outcome::Done: return "done   " + describe(r);
    case Outcome::Stopped: return "stopped " + describe(r) + " (resumes next time)";
    case Outcome::Failed: break;
  }
  return "FAILED " + describe(r) + " (exit " + std::to_string(code) + "; see " +
         (fs::path(r.dir) / "train.log").string() + ")";
}

}  // namespace softlab::cli::sweep
