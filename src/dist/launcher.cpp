// What both communicators share: whether a launcher started this process, and how many ranks
// share this process's cores (include/softlab/distributed.hpp).
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "dist/comm.hpp"
#include "softlab/distributed.hpp"

namespace softlab::dist {

const char* detail::env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}
using detail::env;

bool launched_by_mpi() {
  if (const char* v = env("SOFTLAB_MPI"); v && std::strcmp(v, "0") == 0) return false;
  return env("OMPI_COMM_WORLD_SIZE") || env("PMIX_RANK") || env("PMI_RANK") || env("PMI_SIZE");
}

int ranks_sharing_cores() {
  if (!active()) return 1;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string key = std::string(host) + "|";
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof mask, &mask) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c) key += CPU_ISSET(c, &mask) ? '1' : '0';
  int sharing = 0;
  for (const auto& k : allgather(key, "comparing the ranks' cores")) sharing += k == key;
  return sharing;
}

}  // namespace softlab::dist
