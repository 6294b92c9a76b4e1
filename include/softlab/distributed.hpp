#pragma once
// Running as one of several processes: data-parallel training and sweeps spread over the
// ranks of an MPI job (docs/distributed.md).
//
// One process per rank, started by mpirun, mpiexec or srun. Everything here also works in a
// build without MPI and in a process that no launcher started: size() is 1, every collective
// returns at once with its input unchanged, so callers never branch on the build.
//
// Every collective waits at most timeout() seconds. A rank that waits longer (another rank
// died, hangs, or took another path through the code) prints what it was waiting for and
// ends the whole job with MPI_Abort, rather than hanging for ever.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "softlab/tensor.hpp"

namespace softlab::dist {

// Whether this build has MPI, and the library's own version line ("" without MPI).
bool built_with_mpi();
std::string mpi_library_version();

// True when an MPI launcher started this process (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK
// or PMI_SIZE in the environment) and SOFTLAB_MPI is not "0". A process that the softlab
// command starts itself (a sweep's runs) gets SOFTLAB_MPI=0.
bool launched_by_mpi();

// Starts MPI when launched_by_mpi() and the build has MPI; a launched process in a build
// without MPI is refused (softlab::Error naming the build option), since it would otherwise
// run N copies of the whole job. Otherwise does nothing. Call once, before other threads
// start; finalize() before the process exits normally.
void init(int* argc, char*** argv);
void finalize();

int rank();
int size();
inline bool is_root() { return rank() == 0; }
inline bool active() { return size() > 1; }
// Ranks on this machine whose CPU affinity mask is this rank's (mpirun --bind-to none, or a
// socket shared by several ranks), this one included; 1 without MPI. Collective: every rank
// calls it. The default thread count divides the mask's cores by it.
int ranks_sharing_cores();

// Seconds any collective may wait. Default 300; SOFTLAB_MPI_TIMEOUT (seconds) overrides it.
void set_timeout(double seconds);
double timeout();

// Collectives over all ranks, in place; `what` names the collective in the timeout message.
// Every rank must make the same calls in the same order.
void allreduce_sum(double* x, int64_t n, const char* what);
void allreduce_sum(int64_t* x, int64_t n, const char* what);
void allreduce_max(int64_t* x, int64_t n, const char* what);
void broadcast(float* x, int64_t n, const char* what);     // rank 0's values to every rank
void broadcast(std::string& s, const char* what);           // rank 0's string to every rank
std::vector<std::string> allgather(const std::string& s, const char* what);  // by rank
void barrier(const char* what);

// Runs `phase` on every rank. If it throws softlab::Error on any rank, every rank throws the
// first failing rank's error (its kind kept, its message naming the rank when not 0), so no
// rank is left waiting in a later collective for one that stopped. The thrown error is
// marked shared: see error_is_shared().
void agree(const char* what, const std::function<void()>& phase);
// True once agree() has thrown on this rank: every rank knows of the error and exits with it
// on its own; otherwise an error on one rank must end the job (abort_job).
bool error_is_shared();

// Ends every rank of the job with `code` (MPI_Abort); std::exit(code) without MPI.
[[noreturn]] void abort_job(int code);

// Point to point: small integer messages, for work queues (softlab sweep under mpirun).
void send(int to, int tag, int64_t value);
// A message with `tag` from any rank, if one has arrived: its sender and value. Never waits.
bool poll(int tag, int* from, int64_t* value);
// The next message with `tag` from rank `from`; waits at most `seconds` (0: timeout()).
int64_t receive(int from, int tag, const char* what, double seconds = 0.0);

// Sums gradients across ranks while backward runs. The parameters are packed, in reverse
// order (the order backward finishes them), into flat float buckets of about
// `bucket_bytes`. During the backward of a step's last micro-batch, a bucket's
// MPI_Iallreduce starts as soon as backward has finished every gradient in it; buckets start
// in index order on every rank, so a run is deterministic for a given number of ranks.
// finish() starts what is left (parameters that got no gradient count as zeros), waits, and
// writes the sums back into each parameter's .grad. The trainer scales each rank's loss by
// its share of the global batch, so the sum is the global batch's gradient.
class GradientReducer {
 public:
  GradientReducer(std::vector<Tensor> params, int64_t bucket_bytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Around the backward pass whose gradients are to be summed: begin() before it (installs
  // the backward hook on this thread), finish() after it.
  void begin();
  void finish();

  int64_t buckets() const;
  int64_t bytes() const;  // the gradients' size: what each step sends and receives, about

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace softlab::dist
