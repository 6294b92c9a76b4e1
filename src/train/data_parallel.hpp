#pragma once
// Data parallelism under an MPI job: what train() does differently when dist::active()
// (docs/distributed.md, "Data-parallel training"). With one process every function here
// returns at once or does the obvious.
//
// Each rank trains on its share of every global batch (train.batch_size examples, split in
// rank order), with its loss scaled by its share, so that the sum of the ranks' gradients
// (dist::GradientReducer) is the global batch's gradient. The loader draws the whole global
// batch on every rank, so the order and augmentation of the data depend on the seed alone,
// never on the number of ranks. Every decision that changes the control flow (stop, save,
// diverged, best) is either computed from values every rank shares or agreed by a collective,
// so the ranks never take different paths.
#include <cstdint>
#include <string>

#include "softlab/data.hpp"
#include "train/run_state.hpp"

namespace softlab::detail {

// train.batch_size must split evenly over the ranks: Error naming both numbers otherwise.
void check_batch_splits(const Config& cfg);

// What must be the same on every rank: the config (train.threads aside), the build, the
// data and the initial weights, hashed. Taken before anything is loaded from a checkpoint.
std::string rank_fingerprint(const TrainRun& r);
// Compares every rank's fingerprint with rank 0's; Error naming what differs on which rank.
void check_ranks_agree(const std::string& fingerprint);

// Rank 0's weights, buffers, optimiser state, EMA and position, on every rank.
void broadcast_state(TrainRun& r);

// With the default thread count (train.threads = 0, no OMP_NUM_THREADS), ranks on one
// machine whose CPU affinity masks are the same (mpirun --bind-to none, or a socket shared
// by several ranks) split the mask's cores between them instead of each taking them all.
void share_cores_between_ranks(TrainRun& r);

// This rank's share of a global batch: examples [rank*n/size, (rank+1)*n/size).
Batch shard_batch(const Batch& b, int rank, int size);

}  // namespace softlab::detail
