#pragma once
// The memory a run will need, estimated from the resolved config before anything is built,
// and the check that refuses a config this machine cannot hold: a model or batch too large
// would otherwise grow for minutes and die out of memory.
#include <cstdint>

#include "softlab/schema.hpp"

namespace softlab::config_detail {

struct MemoryEstimate {
  double parameters = 0;        // count
  double parameter_bytes = 0;   // weights, gradients, optimiser state and EMA copy
  double activation_bytes = 0;  // what a training step keeps for backward (or evaluation, if more)
  double data_bytes = 0;        // generated token sequences; image sets are a few hundred MB at most
  double total() const { return parameter_bytes + activation_bytes + data_bytes; }
};

MemoryEstimate estimate_memory(const json& resolved);

// Physical memory, or the cgroup's limit if lower (0 if neither can be read).
uint64_t machine_memory_bytes();

// Throws BadInput naming the size keys, the estimate and the machine's memory when the
// estimate exceeds it.
void check_memory(const json& resolved);

}  // namespace softlab::config_detail
