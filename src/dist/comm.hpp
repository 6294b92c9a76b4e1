#pragma once
// What the gradient reducer needs of the communicator beyond the public collectives: an
// in-place float sum that runs while backward goes on. mpi_comm.cpp implements it over
// MPI_Iallreduce; single_comm.cpp (a build without MPI) never gets a call, since nothing is
// reduced at size 1.
#include <cstdint>

namespace softlab::dist::detail {

// Starts summing x[0..n) across ranks in place; the handle is for test() and wait().
int start_sum(float* x, int64_t n);
// Lets MPI progress the started sums; true when `handle` is done. Never waits.
bool test(int handle);
// Waits for `handle` (at most timeout() seconds, else the job is aborted, naming `what`).
void wait(int handle, const char* what);
// Forgets every handle: each must be done (called at the end of a step).
void release_all();

// The environment variable `name`, or nullptr when it is unset or empty (launcher.cpp).
const char* env(const char* name);

}  // namespace softlab::dist::detail
