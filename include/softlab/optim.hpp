#pragma once
// Optimisers (AdamW with decoupled weight decay, SGD with momentum / Nesterov), parameter
// groups (per-parameter learning-rate scale and weight decay), learning-rate schedules
// (constant, cosine, step; each with linear warm-up) and gradient clipping by global norm.
// Optimiser state is a list of named tensors, saved in checkpoints.
#include <memory>
#include <string>
#include <vector>

#include "softlab/config.hpp"
#include "softlab/module.hpp"

namespace softlab {

// ---- parameter groups (train.optimizer.groups; docs/training.md, "Parameter groups")

// Whether a group's `pattern` selects the parameter `name` (a dotted name, as in checkpoints):
// a glob in which `*` matches any run of characters, dots included, `?` one character and
// everything else itself, matched against the whole name or against the name of a module
// that holds the parameter (the name up to one of its dots). So "blocks.0" selects
// "blocks.0.attn.qkv.weight" but not "blocks.01.x", and "*.attn.attn.*" every parameter of
// every attention module.
bool group_pattern_matches(const std::string& pattern, const std::string& name);

// What the optimiser applies to one parameter.
struct ParamSettings {
  int group = -1;             // index in OptimizerConfig::groups; -1: the optimiser's defaults
  double lr_scale = 1.0;      // multiplies the scheduled learning rate
  double weight_decay = 0.0;  // 0 for parameters with decay == false, whatever the group says
};

// The settings of each parameter, in order: those of the first group whose pattern selects
// it (lr_scale, else lr / cfg.lr, else 1; its weight_decay, else cfg.weight_decay), or the
// defaults. A group that gets no parameter (its pattern selects none, or earlier groups took
// them all) is an Error naming train.optimizer.groups[i].match, the pattern and some names.
std::vector<ParamSettings> param_settings(const OptimizerConfig& cfg, const std::vector<nn::Parameter>& params);

// The groups as `softlab validate` prints them: for each group its settings and the names of
// its parameters (cut short when there are many), then the parameters left to the defaults.
std::string param_groups_summary(const OptimizerConfig& cfg, const std::vector<nn::Parameter>& params);

// ---- optimisers

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update with learning rate lr from each parameter's .grad() (parameters without a
  // gradient are skipped): parameter i moves with lr times its lr_scale and decays with its
  // weight_decay (param_settings).
  virtual void step(double lr) = 0;
  void zero_grad();
  int64_t steps() const { return steps_; }
  virtual nn::NamedTensors state() const = 0;  // everything needed to resume exactly
  virtual void load_state(const nn::NamedTensors& st) = 0;

 protected:
  Optimizer(const OptimizerConfig& cfg, std::vector<nn::Parameter> params)
      : params_(std::move(params)), settings_(param_settings(cfg, params_)) {}
  std::vector<nn::Parameter> params_;
  std::vector<ParamSettings> settings_;  // one per parameter
  int64_t steps_ = 0;
};

// Throws what param_settings throws when a group of cfg.groups gets no parameter.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& cfg, std::vector<nn::Parameter> params);

// The learning rate at `step` (0-based) of a run of `total_steps` steps with
// `steps_per_epoch` steps per epoch. Warm-up rises linearly to base_lr over warmup_epochs.
double schedule_lr(const ScheduleConfig& s, double base_lr, int64_t step, int64_t steps_per_epoch,
                   int64_t total_steps);

// Gradient clipping by global norm. norm = sqrt(sum of g^2 over every gradient), summed in
// double in parameter order; if max_norm > 0 and norm > max_norm (and norm is finite), every
// gradient is multiplied by s = float(max_norm / (norm + 1e-6)), as torch's clip_grad_norm_
// does. The norm may be inf or nan: the caller checks.
struct ClipResult {
  double norm = 0.0;   // before clipping
  double scale = 1.0;  // the factor applied (exactly, as a float): 1 when not clipped
};
ClipResult clip_gradients(const std::vector<nn::Parameter>& params, double max_norm);
// clip_gradients(params, max_norm).norm.
double clip_grad_norm(const std::vector<nn::Parameter>& params, double max_norm);

}  // namespace softlab
