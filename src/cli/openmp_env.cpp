// Chooses how OpenMP threads wait, before the OpenMP runtime starts.
//
// libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it is loaded, so the choice
// has to be in the environment before the process starts: the softlab command samples the
// machine for 100 ms, sets the variables and re-executes itself (once). Measured on the
// default config (docs/performance.md): on a quiet 2-core machine short spinning
// (GOMP_SPINCOUNT=10000) trains far faster than passive waiting; with one core taken by
// another process, passive waiting is far faster than spinning. A user's own setting of
// either variable always wins.
//
// "Other load" leaves out every process that started less than a second before softlab
// (src/core/load_probe.hpp), so a process starting alongside, such as the other end of a
// pipe, cannot make a quiet machine look busy.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>

#include "cli/commands.hpp"
#include "core/load_probe.hpp"

namespace softlab::cli {

void configure_openmp_env(char** argv) {
  if (std::getenv("SOFTLAB_OMP_CONFIGURED") || std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT"))
    return;
  const detail::LoadSample load = detail::sample_other_load(std::chrono::milliseconds(100));
  if (!load.ok) return;
  const double other_cores = load.other_cores;
  const bool quiet = other_cores < 0.5;
  if (quiet) setenv("GOMP_SPINCOUNT", "10000", 1);
  else setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  std::ostringstream why;
  why << (quiet ? "spin" : "passive") << " (load from processes older than softlab: "
      << static_cast<int>(other_cores * 100 + 0.5) / 100.0 << " cores)";
  setenv("SOFTLAB_OMP_CONFIGURED", why.str().c_str(), 1);
  setenv("SOFTLAB_OTHER_LOAD", std::to_string(other_cores).c_str(), 1);
  // The binary's own path, not /proc/self/exe: the kernel names a process after the file it
  // executes, and "exe" would hide softlab from pgrep, top and ps -C.
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (!ec && !self.empty()) execv(self.c_str(), argv);
  execv("/proc/self/exe", argv);  // the file was replaced since it started
  // execv only returns on failure: then carry on with the defaults.
}

double openmp_probe_other_load() {
  const char* c = std::getenv("SOFTLAB_OTHER_LOAD");
  return c ? std::strtod(c, nullptr) : 0.0;
}

std::string openmp_wait_description() {
  if (const char* c = std::getenv("SOFTLAB_OMP_CONFIGURED")) return c;
  if (const char* p = std::getenv("OMP_WAIT_POLICY")) return std::string("OMP_WAIT_POLICY=") + p;
  if (const char* s = std::getenv("GOMP_SPINCOUNT")) return std::string("GOMP_SPINCOUNT=") + s;
  return "libgomp default";
}

}  // namespace softlab::cli
