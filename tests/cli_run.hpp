#pragma once
// Runs the softlab command as a user would, for the CLI and sweep tests.
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
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

// Runs softlab with arguments in the current directory; captures stdout and stderr through
// files in `dir`.
inline CliRun softlab_cli(const std::vector<std::string>& args, const std::string& dir) {
  std::string cmd = std::string("'") + SOFTLAB_CLI_PATH + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " >'" + dir + "/out.txt' 2>'" + dir + "/err.txt' </dev/null";
  const int st = std::system(cmd.c_str());
  CliRun r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = slurp(dir + "/out.txt");
  r.err = slurp(dir + "/err.txt");
  return r;
}

}  // namespace softlab::test
