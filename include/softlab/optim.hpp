#pragma once
// Optimisers (AdamW with decoupled weight decay, SGD with momentum / Nesterov), learning-
// rate schedules (constant, cosine, step; each with linear warm-up) and gradient clipping
// by global norm. Optimiser state is a list of named tensors, saved in checkpoints.
#include <memory>
#include <vector>

#include "softlab/config.hpp"
#include "softlab/module.hpp"

namespace softlab {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update with learning rate lr from each parameter's .grad() (parameters without a
  // gradient are skipped). Parameters with decay == false get no weight decay.
  virtual void step(double lr) = 0;
  void zero_grad();
  int64_t steps() const { return steps_; }
  virtual nn::NamedTensors state() const = 0;  // everything needed to resume exactly
  virtual void load_state(const nn::NamedTensors& st) = 0;

 protected:
  explicit Optimizer(std::vector<nn::Parameter> params) : params_(std::move(params)) {}
  std::vector<nn::Parameter> params_;
  int64_t steps_ = 0;
};

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& cfg, std::vector<nn::Parameter> params);

// The learning rate at `step` (0-based) of a run of `total_steps` steps with
// `steps_per_epoch` steps per epoch. Warm-up rises linearly to base_lr over warmup_epochs.
double schedule_lr(const ScheduleConfig& s, double base_lr, int64_t step, int64_t steps_per_epoch,
                   int64_t total_steps);

// Global L2 norm of all gradients (computed in double, in parameter order); if max_norm > 0
// and the norm exceeds it, scales every gradient by max_norm / norm. Returns the norm
// before clipping (may be inf or nan: the caller checks).
double clip_grad_norm(const std::vector<nn::Parameter>& params, double max_norm);

}  // namespace softlab
