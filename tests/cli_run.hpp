#pragma once
// Runs the softlab command as a user would, for the CLI and sweep tests.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace softlab::test {

struct CliRun {
  int code = -1;
  std::string out, err;
};

inline std::string slurp(const std::string& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs `prefix` followed by the softlab command and `args` (each quoted) through the shell;
// captures stdout and stderr through files in `dir`.
inline CliRun run_softlab(const std::string& prefix, const std::vector<std::string>& args, const std::string& dir) {
  std::string cmd = prefix + "'" + SOFTLAB_CLI_PATH + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " >'" + dir + "/out.txt' 2>'" + dir + "/err.txt' </dev/null";
  const int st = std::system(cmd.c_str());
  CliRun r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = slurp(dir + "/out.txt");
  r.err = slurp(dir + "/err.txt");
  return r;
}

// Runs softlab with arguments in the current directory.
inline CliRun softlab_cli(const std::vector<std::string>& args, const std::string& dir) {
  return run_softlab("", args, dir);
}

// Starts the softlab command with `args` in a child process, its stdout and stderr going to
// `log`, and returns the child's pid without waiting (for tests that signal it).
inline pid_t start_softlab(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> words = {SOFTLAB_CLI_PATH};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits up to `seconds` for the child `pid` to exit and returns its exit code (128 + signal
// when a signal ended it); a child still running then is killed and -1 returned, so a hang
// fails the test instead of stalling the suite.
inline int wait_for_exit(pid_t pid, int seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int st = 0;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Whether `mpirun` is on PATH (the MPI tests skip without it).
inline bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

// Runs `mpirun --oversubscribe -np N softlab ARGS` as softlab_cli does, allowed to run as root
// (CI does), with each rank on one thread unless ARGS say otherwise, and ended after
// `seconds` by timeout(1) so that a hang fails the test instead of stalling the suite. `env`:
// VAR=VALUE words for the ranks' environment.
inline CliRun softlab_mpirun(int ranks, const std::vector<std::string>& args, const std::string& dir,
                             int seconds = 300, const std::string& env = "") {
  return run_softlab(env + " OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout " +
                         std::to_string(seconds) + " mpirun --oversubscribe -np " + std::to_string(ranks) + " ",
                     args, dir);
}

}  // namespace softlab::test
