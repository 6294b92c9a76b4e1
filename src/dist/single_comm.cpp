// The communicator of a build without MPI: one process, every collective a no-op. A process
// that an MPI launcher started is refused, since it would run the whole job N times over.
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "dist/comm.hpp"
#include "softlab/distributed.hpp"
#include "softlab/error.hpp"

namespace softlab::dist {

namespace {
double g_timeout = 300.0;
using detail::env;
}  // namespace

bool built_with_mpi() { return false; }
std::string mpi_library_version() { return {}; }

void init(int*, char***) {
  const char* n = env("OMPI_COMM_WORLD_SIZE") ? env("OMPI_COMM_WORLD_SIZE") : env("PMI_SIZE");
  SOFTLAB_CHECK(!launched_by_mpi() || (n && std::strcmp(n, "1") == 0),
                "this softlab was built without MPI (SOFTLAB_WITH_MPI=OFF, or MPI not found at build time) but an MPI "
                "launcher started it; rebuild with libopenmpi-dev installed (tools/setup.sh), or run it without mpirun "
                "(SOFTLAB_MPI=0 runs each process on its own)");
}
void finalize() {}
int rank() { return 0; }
int size() { return 1; }
void set_timeout(double seconds) { g_timeout = seconds; }
double timeout() { return g_timeout; }
void allreduce_sum(double*, int64_t, const char*) {}
void allreduce_sum(int64_t*, int64_t, const char*) {}
void allreduce_max(int64_t*, int64_t, const char*) {}
void broadcast(float*, int64_t, const char*) {}
void broadcast(std::string&, const char*) {}
std::vector<std::string> allgather(const std::string& s, const char*) { return {s}; }
void barrier(const char*) {}
void agree(const char*, const std::function<void()>& phase) { phase(); }
bool error_is_shared() { return false; }
void abort_job(int code) {
  std::cout.flush();
  std::cerr.flush();
  std::exit(code);
}
void send(int, int, int64_t) { SOFTLAB_ASSERT(false, "dist::send in a single process"); }
bool poll(int, int*, int64_t*) { return false; }
int64_t receive(int, int, const char* what, double) {
  SOFTLAB_ASSERT(false, "dist::receive in a single process (", what, ")");
  return 0;
}

namespace detail {
int start_sum(float*, int64_t) {
  SOFTLAB_ASSERT(false, "dist::detail::start_sum in a single process");
  return 0;
}
bool test(int) { return true; }
void wait(int, const char*) {}
void release_all() {}
}  // namespace detail
}  // namespace softlab::dist
