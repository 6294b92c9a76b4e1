// Thread count and the OpenMP runner behind parallel_for.
//
// The default thread count is what this process may really use: the physical cores among
// the CPUs of its affinity mask (taskset, cpusets), capped by a cgroup CPU quota (docker
// --cpus, systemd CPUQuota), unless OMP_NUM_THREADS names a count, which wins. More
// threads than that only time-slice against each other at every barrier.
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "softlab/parallel.hpp"

namespace softlab {

namespace {
int g_threads = 0;  // 0: not set yet, use the default

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<int> affinity_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// "max 100000" or "150000 100000" (cgroup v2 cpu.max), or a v1 quota and period.
std::optional<double> quota_from(const std::string& quota, const std::string& period) {
  if (quota.empty() || quota.rfind("max", 0) == 0) return std::nullopt;
  char* end = nullptr;
  const double q = std::strtod(quota.c_str(), &end);
  const double p = std::strtod(period.c_str(), nullptr);
  if (end == quota.c_str() || q <= 0 || p <= 0) return std::nullopt;  // v1 says -1 for no quota
  return q / p;
}

// The tightest CPU quota on this process's cgroup and its ancestors (v2, then v1).
std::optional<double> cgroup_quota() {
  std::optional<double> best;
  auto take = [&](std::optional<double> q) {
    if (q && (!best || *q < *best)) best = q;
  };
  std::istringstream lines(read_file("/proc/self/cgroup"));
  std::string line;
  while (std::getline(lines, line)) {
    // "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1)
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    const bool v2 = controllers.empty();
    const bool v1cpu = (',' + controllers + ',').find(",cpu,") != std::string::npos;
    if (!v2 && !v1cpu) continue;
    for (;;) {  // the group and each parent: a limit anywhere above applies too
      if (v2) {
        std::istringstream f(read_file("/sys/fs/cgroup" + path + "/cpu.max"));
        std::string q, p;
        f >> q >> p;
        take(quota_from(q, p));
      } else {
        for (const char* root : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {
          std::string q = read_file(std::string(root) + path + "/cpu.cfs_quota_us");
          std::string p = read_file(std::string(root) + path + "/cpu.cfs_period_us");
          take(quota_from(q, p));
        }
      }
      if (path.empty() || path == "/") break;
      const auto slash = path.find_last_of('/');
      path = slash == 0 ? "/" : path.substr(0, slash);
    }
  }
  return best;
}

const ThreadDefault& machine_default() {
  static const ThreadDefault d = [] {
    ThreadInputs in;
    in.cpuinfo = read_file("/proc/cpuinfo");
    in.allowed_cpus = affinity_cpus();
    in.cgroup_quota = cgroup_quota();
    if (const char* e = std::getenv("OMP_NUM_THREADS")) in.omp_num_threads = e;
    return choose_default_threads(in);
  }();
  return d;
}
}  // namespace

ThreadDefault choose_default_threads(const ThreadInputs& in) {
  ThreadDefault d;
  // OMP_NUM_THREADS: the first entry of its list (the outer level), when it is a count.
  if (in.omp_num_threads) {
    const std::string& v = *in.omp_num_threads;
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (end != v.c_str() && (*end == '\0' || *end == ',') && n > 0 && n <= 4096) {
      d.threads = static_cast<int>(n);
      d.reason = "OMP_NUM_THREADS=" + v;
      return d;
    }
  }
  // Physical cores among the allowed CPUs: a "processor" block gives its (physical id,
  // core id); hyper-threads of one core share its FMA units, so they do not help GEMMs.
  const std::set<int> allowed(in.allowed_cpus.begin(), in.allowed_cpus.end());
  std::set<std::pair<int, int>> cores;
  std::set<int> seen;  // allowed processors that cpuinfo describes
  int proc = -1, phys = 0, core = -1;
  auto flush = [&] {
    if (proc >= 0 && (allowed.empty() || allowed.count(proc))) {
      seen.insert(proc);
      cores.insert({phys, core >= 0 ? core : 100000 + proc});  // no core id: count the processor
    }
    proc = -1, phys = 0, core = -1;
  };
  std::istringstream lines(in.cpuinfo);
  std::string line;
  while (std::getline(lines, line)) {
    const auto colon = line.find(':');
    const int value = colon == std::string::npos ? -1 : std::atoi(line.c_str() + colon + 1);
    if (line.rfind("processor", 0) == 0) {
      flush();
      proc = value;
    } else if (line.rfind("physical id", 0) == 0) {
      phys = value;
    } else if (line.rfind("core id", 0) == 0) {
      core = value;
    }
  }
  flush();
  int n = static_cast<int>(cores.size());
  std::string why = "physical cores";
  if (n == 0) {  // no usable /proc/cpuinfo: the allowed CPUs, or what the system reports online
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    n = !allowed.empty() ? static_cast<int>(allowed.size()) : static_cast<int>(online > 0 ? online : 1);
    why = "CPUs";
  }
  if (!allowed.empty()) why += " in the affinity mask (" + std::to_string(allowed.size()) + " CPUs)";
  // A quota of q CPUs per period: more than floor(q) busy threads get throttled.
  if (in.cgroup_quota) {
    const int q = std::max(1, static_cast<int>(std::floor(*in.cgroup_quota + 1e-9)));
    if (q < n) {
      n = q;
      std::ostringstream s;
      s << "cgroup CPU quota " << *in.cgroup_quota;
      why = s.str();
    }
  }
  d.threads = std::max(1, n);
  d.reason = why;
  return d;
}

int default_num_threads() { return machine_default().threads; }
std::string default_threads_reason() { return machine_default().reason; }

void set_num_threads(int n) {
  g_threads = n <= 0 ? default_num_threads() : n;
  omp_set_num_threads(g_threads);  // oneDNN (OpenMP runtime) follows this too
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

bool in_parallel_region() { return omp_in_parallel() != 0; }

namespace detail {
void parallel_run(int64_t n_chunks, void (*fn)(void*, int64_t), void* ctx) {
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(n_chunks))
  for (int64_t c = 0; c < n_chunks; ++c) fn(ctx, c);
}
}  // namespace detail

}  // namespace softlab
