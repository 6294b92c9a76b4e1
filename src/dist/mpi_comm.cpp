// The communicator of a build with MPI: MPI_COMM_WORLD, used from the main thread only
// (MPI_THREAD_FUNNELED: OpenMP's threads and the loader's prefetch thread never call MPI).
//
// Every collective is the non-blocking form followed by a wait that polls MPI_Test: that is
// how a wait gets a deadline (MPI has no timeout of its own), and how a rank whose partner
// died ends the job with a message instead of hanging. The poll spins for the first 100 µs
// (the tiny per-step reductions finish in a few µs on one machine) and then sleeps in
// growing steps up to 1 ms, so a rank that waits for a slower one leaves its core alone.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include "dist/comm.hpp"
#include "softlab/distributed.hpp"
#include "softlab/error.hpp"

namespace softlab::dist {

namespace {
using softlab::detail::cat;
using Clock = std::chrono::steady_clock;

bool g_started = false;   // this process called MPI_Init_thread
int g_rank = 0, g_size = 1;
double g_timeout = 300.0;
bool g_error_shared = false;

// The started float sums of the current step (the gradient reducer's buckets).
std::vector<MPI_Request> g_requests;

int count_of(int64_t n, const char* what) {
  SOFTLAB_ASSERT(n >= 0 && n <= INT_MAX, what, ": ", n, " elements do not fit one MPI message");
  return static_cast<int>(n);
}

// Waits for `req` with a deadline; past it, this rank says what it waited for and ends the job.
void wait_request(MPI_Request& req, const char* what, double seconds) {
  const auto start = Clock::now();
  const double limit = seconds > 0.0 ? seconds : g_timeout;
  auto nap = std::chrono::microseconds(20);
  for (int spins = 0;; ++spins) {
    int done = 0;
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) return;
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited > limit) {
      std::cerr << "softlab: rank " << g_rank << " of " << g_size << " waited " << static_cast<int>(waited)
                << " s in " << what << ": another rank has stopped, hangs or took another path. Ending the job "
                << "(SOFTLAB_MPI_TIMEOUT sets the limit, now " << limit << " s)." << std::endl;
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (waited > 1e-4) {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }
}
using detail::env;
}  // namespace

bool built_with_mpi() { return true; }

std::string mpi_library_version() {
  char buf[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(buf, &len);
  std::string s(buf, static_cast<size_t>(std::max(len, 0)));
  if (const auto nl = s.find_first_of(",\n"); nl != std::string::npos) s.resize(nl);  // the first clause
  return s;
}

void init(int* argc, char*** argv) {
  if (g_started || !launched_by_mpi()) return;
  if (const char* t = env("SOFTLAB_MPI_TIMEOUT")) {
    char* end = nullptr;
    const double s = std::strtod(t, &end);
    SOFTLAB_CHECK(end && *end == '\0' && s > 0.0, "SOFTLAB_MPI_TIMEOUT: expected a positive number of seconds, got '",
                  t, "'");
    g_timeout = s;
  }
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_started = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
}

void finalize() {
  if (!g_started) return;
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

int rank() { return g_rank; }
int size() { return g_size; }
void set_timeout(double seconds) { g_timeout = seconds; }
double timeout() { return g_timeout; }

namespace {
// In place over all ranks, waited for with the deadline.
void allreduce(void* x, int64_t n, MPI_Datatype type, MPI_Op op, const char* what) {
  if (g_size == 1) return;
  MPI_Request req;
  MPI_Iallreduce(MPI_IN_PLACE, x, count_of(n, what), type, op, MPI_COMM_WORLD, &req);
  wait_request(req, what, 0.0);
}
}  // namespace

void allreduce_sum(double* x, int64_t n, const char* what) { allreduce(x, n, MPI_DOUBLE, MPI_SUM, what); }
void allreduce_sum(int64_t* x, int64_t n, const char* what) { allreduce(x, n, MPI_INT64_T, MPI_SUM, what); }
void allreduce_max(int64_t* x, int64_t n, const char* what) { allreduce(x, n, MPI_INT64_T, MPI_MAX, what); }

void broadcast(float* x, int64_t n, const char* what) {
  if (g_size == 1) return;
  MPI_Request req;
  MPI_Ibcast(x, count_of(n, what), MPI_FLOAT, 0, MPI_COMM_WORLD, &req);
  wait_request(req, what, 0.0);
}

void broadcast(std::string& s, const char* what) {
  if (g_size == 1) return;
  int64_t len = static_cast<int64_t>(s.size());
  MPI_Request req;
  MPI_Ibcast(&len, 1, MPI_INT64_T, 0, MPI_COMM_WORLD, &req);
  wait_request(req, what, 0.0);
  s.resize(static_cast<size_t>(len));
  MPI_Ibcast(s.data(), count_of(len, what), MPI_CHAR, 0, MPI_COMM_WORLD, &req);
  wait_request(req, what, 0.0);
}

std::vector<std::string> allgather(const std::string& s, const char* what) {
  if (g_size == 1) return {s};
  std::vector<int> lens(static_cast<size_t>(g_size)), offsets(static_cast<size_t>(g_size));
  int mine = count_of(static_cast<int64_t>(s.size()), what);
  MPI_Request req;
  MPI_Iallgather(&mine, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD, &req);
  wait_request(req, what, 0.0);
  int64_t total = 0;
  for (int r = 0; r < g_size; ++r) {
    offsets[static_cast<size_t>(r)] = count_of(total, what);
    total += lens[static_cast<size_t>(r)];
  }
  std::string all(static_cast<size_t>(total), '\0');
  MPI_Iallgatherv(s.data(), mine, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, MPI_COMM_WORLD, &req);
  wait_request(req, what, 0.0);
  std::vector<std::string> out;
  for (int r = 0; r < g_size; ++r)
    out.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                             static_cast<size_t>(lens[static_cast<size_t>(r)])));
  return out;
}

void barrier(const char* what) {
  if (g_size == 1) return;
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  wait_request(req, what, 0.0);
}

void agree(const char* what, const std::function<void()>& phase) {
  if (g_size == 1) {
    phase();
    return;
  }
  // "" when the phase went well, else the error's kind ('B' or 'I') and message.
  std::string status;
  try {
    phase();
  } catch (const Error& e) {
    status = std::string(e.kind() == Error::Kind::BadInput ? "B" : "I") + e.what();
  } catch (const std::exception& e) {
    status = std::string("I") + e.what();
  }
  const std::vector<std::string> all = allgather(status, what);
  for (int r = 0; r < g_size; ++r) {
    const std::string& st = all[static_cast<size_t>(r)];
    if (st.empty()) continue;
    g_error_shared = true;
    const std::string msg = (r == 0 ? std::string() : cat("rank ", r, ": ")) + st.substr(1);
    throw Error(msg, st[0] == 'B' ? Error::Kind::BadInput : Error::Kind::Internal);
  }
}

bool error_is_shared() { return g_error_shared; }

void abort_job(int code) {
  std::cout.flush();
  std::cerr.flush();
  if (g_started && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

void send(int to, int tag, int64_t value) { MPI_Send(&value, 1, MPI_INT64_T, to, tag, MPI_COMM_WORLD); }

bool poll(int tag, int* from, int64_t* value) {
  int flag = 0;
  MPI_Status st;
  MPI_Iprobe(MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, &flag, &st);
  if (!flag) return false;
  MPI_Recv(value, 1, MPI_INT64_T, st.MPI_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  *from = st.MPI_SOURCE;
  return true;
}

int64_t receive(int from, int tag, const char* what, double seconds) {
  int64_t v = 0;
  MPI_Request req;
  MPI_Irecv(&v, 1, MPI_INT64_T, from, tag, MPI_COMM_WORLD, &req);
  wait_request(req, what, seconds);
  return v;
}

namespace detail {

int start_sum(float* x, int64_t n) {
  g_requests.emplace_back();
  MPI_Iallreduce(MPI_IN_PLACE, x, count_of(n, "gradient bucket"), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                 &g_requests.back());
  return static_cast<int>(g_requests.size()) - 1;
}

bool test(int handle) {
  int done = 0;
  MPI_Test(&g_requests[static_cast<size_t>(handle)], &done, MPI_STATUS_IGNORE);
  return done != 0;
}

void wait(int handle, const char* what) { wait_request(g_requests[static_cast<size_t>(handle)], what, 0.0); }

void release_all() { g_requests.clear(); }

}  // namespace detail
}  // namespace softlab::dist
