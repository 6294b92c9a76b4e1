// Chooses how OpenMP threads wait, before the OpenMP runtime starts.
//
// libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it is loaded, so the choice
// has to be in the environment before the process starts: the softlab command samples
// /proc/stat for 100 ms, sets the variables and re-executes itself (once). Measured on the
// default config (docs/performance.md): on a quiet 2-core machine short spinning
// (GOMP_SPINCOUNT=10000) trains 2.6x faster than passive waiting; with one core taken by
// another process, passive waiting is 2x faster than spinning. A user's own setting of
// either variable always wins.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "cli/commands.hpp"

namespace softlab::cli {

namespace {
// Busy and total jiffies over all CPUs, from the first line of /proc/stat.
bool cpu_times(unsigned long long& busy, unsigned long long& total) {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  if (!(in >> cpu) || cpu != "cpu") return false;
  for (auto& x : v) in >> x;
  total = 0;
  for (auto x : v) total += x;
  busy = total - v[3] - v[4];  // minus idle and iowait
  return true;
}
}  // namespace

void configure_openmp_env(char** argv) {
  if (std::getenv("SOFTLAB_OMP_CONFIGURED") || std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT"))
    return;
  unsigned long long b0, t0, b1, t1;
  if (!cpu_times(b0, t0)) return;
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (!cpu_times(b1, t1) || t1 <= t0) return;
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const double busy_cores = static_cast<double>(b1 - b0) / static_cast<double>(t1 - t0) * static_cast<double>(cpus);
  const bool quiet = busy_cores < 0.5;
  if (quiet) setenv("GOMP_SPINCOUNT", "10000", 1);
  else setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  std::ostringstream why;
  why << (quiet ? "spin" : "passive") << " (other load " << static_cast<int>(busy_cores * 100 + 0.5) / 100.0
      << " cores)";
  setenv("SOFTLAB_OMP_CONFIGURED", why.str().c_str(), 1);
  execv("/proc/self/exe", argv);  // only returns on failure: then carry on with the defaults
}

std::string openmp_wait_description() {
  if (const char* c = std::getenv("SOFTLAB_OMP_CONFIGURED")) return c;
  if (const char* p = std::getenv("OMP_WAIT_POLICY")) return std::string("OMP_WAIT_POLICY=") + p;
  if (const char* s = std::getenv("GOMP_SPINCOUNT")) return std::string("GOMP_SPINCOUNT=") + s;
  return "libgomp default";
}

}  // namespace softlab::cli
