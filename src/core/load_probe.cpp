// The start-up load probe (load_probe.hpp).
#include "core/load_probe.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

namespace softlab::detail {

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

struct ProcStat {
  unsigned long long cpu = 0;    // utime + stime, in clock ticks (the unit of /proc/stat)
  unsigned long long start = 0;  // start time, in clock ticks since boot
};

// Fields 14, 15 and 22 of /proc/PID/stat; the command name (field 2) may hold spaces and
// parentheses, so counting starts after its last ')'.
bool read_proc_stat(const std::string& path, ProcStat& s) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return false;
  const auto close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream f(line.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 22 && (f >> field); ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 22) {
      s.cpu = utime + stime;
      s.start = std::strtoull(field.c_str(), nullptr, 10);
      return true;
    }
  }
  return false;
}

// CPU time of the processes that started at or after `since` (clock ticks since boot),
// this one included, by PID.
std::map<long, unsigned long long> young_processes(unsigned long long since) {
  std::map<long, unsigned long long> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    ProcStat s;
    if (read_proc_stat(std::string("/proc/") + e->d_name + "/stat", s) && s.start >= since) out[pid] = s.cpu;
  }
  closedir(d);
  return out;
}
}  // namespace


LoadSample sample_other_load(std::chrono::milliseconds window, double young_seconds) {
  LoadSample r;
  ProcStat self;
  if (!read_proc_stat("/proc/self/stat", self)) return r;
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  const auto back = static_cast<unsigned long long>(young_seconds * hz);
  const unsigned long long since = self.start > back ? self.start - back : 0;
  unsigned long long b0, t0, b1, t1;
  const auto y0 = young_processes(since);
  if (!cpu_times(b0, t0)) return r;
  std::this_thread::sleep_for(window);
  if (!cpu_times(b1, t1) || t1 <= t0) return r;
  const auto y1 = young_processes(since);
  // Busy time of the young processes over the window; one that started inside the window
  // counts from zero, one that ended inside it is lost (and so counted as other load).
  unsigned long long young = 0;
  for (const auto& [pid, cpu] : y1) {
    const auto it = y0.find(pid);
    const unsigned long long before = it == y0.end() ? 0 : it->second;
    if (cpu > before) young += cpu - before;
  }
  const double cpus = static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
  const double per_core = static_cast<double>(t1 - t0) / cpus;  // jiffies of one core over the window
  r.ok = true;
  r.young_cores = static_cast<double>(young) / per_core;
  r.other_cores = std::max(0.0, (static_cast<double>(b1 - b0) - static_cast<double>(young)) / per_core);
  return r;
}

}  // namespace softlab::detail
