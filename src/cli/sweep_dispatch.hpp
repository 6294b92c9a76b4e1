#pragma once
// softlab sweep under mpirun: the ranks share one sweep's runs (docs/distributed.md,
// "Distributed sweeps").
//
// Rank 0 is the dispatcher and a worker too: it alone decides which runs are still to do and
// hands out run indices, one per request, from its own loop (waitpid(WNOHANG), dist::poll,
// a short sleep), so two ranks never take the same run. Work goes out by messages only, no
// file locks, so the sweep's folder may be on a network file system. Every other rank asks
// for a run each time one of its --jobs slots is free; told "no more", it lets its children
// finish, says it is leaving and waits for rank 0's exit code. Both sides send a heartbeat
// while they wait for each other, and a side that hears nothing for dist::timeout() seconds
// ends the job, so no rank hangs on a dead or stuck partner.
#include <string>
#include <vector>

#include "softlab/sweep.hpp"

namespace softlab::cli::sweep {

// Every rank read the same sweep: the same runs in the same directories. Collective (all ranks
// call it); a rank that differs fails every rank with an error naming it.
void check_same_runs(const Sweep& s);

struct DispatchResult {
  size_t failed = 0;
  bool interrupted = false;  // this rank or any other
};

// Rank 0: runs `todo` (indices into s.runs) over all ranks; returns when its own children are
// done and every other rank has left. Call release_workers() afterwards.
DispatchResult dispatch(const std::string& self, const Sweep& s, const std::vector<size_t>& todo, int jobs,
                        int threads);
// Rank 0: tells every other rank the sweep's exit code, which ends their work().
void release_workers(int code);

// Ranks other than 0: runs what rank 0 hands out; returns the sweep's exit code (rank 0's).
int work(const std::string& self, const Sweep& s, int jobs, int threads);

}  // namespace softlab::cli::sweep
