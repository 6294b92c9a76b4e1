#pragma once
// The training loop's pieces as a library: the state a run carries from step to step
// (TrainState: model, optimiser, weight EMA, the step plan, the position), one optimiser step
// (TrainState::step), evaluation, and checkpoints in one call. `softlab train` runs exactly
// these, so a program that writes its own loop around them gets softlab's results bit for
// bit (docs/embedding.md; examples/embed/train_loop.cpp does it).
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "softlab/checkpoint.hpp"
#include "softlab/config.hpp"
#include "softlab/data.hpp"
#include "softlab/ema.hpp"
#include "softlab/nn/model.hpp"
#include "softlab/optim.hpp"
#include "softlab/train.hpp"

namespace softlab {

namespace dist {
class GradientReducer;
}

// Where a run is: everything a resumed run needs besides the weights and the optimiser state.
// Checkpoints hold it as the metadata key "position" (RunPosition::from_json reads it).
struct RunPosition {
  int64_t epoch = 0;       // the current epoch (0-based)
  int64_t batch = 0;       // the next loader batch within the epoch
  int64_t step = 0;        // optimiser steps done (skipped steps included): the schedule's step
  // Running statistics of the current epoch.
  double loss_sum = 0.0;   // loss summed over its scored targets
  int64_t correct = 0, seen = 0;
  double grad_norm_sum = 0.0;
  int64_t epoch_steps = 0;  // steps applied this epoch
  // The best evaluation so far (softlab train keeps best.ckpt for it).
  double best_accuracy = -1.0;
  int64_t best_epoch = -1;
  int64_t best_step = -1;
  double train_seconds = 0.0;  // training time over all sessions, evaluation included
  int64_t images = 0;          // examples trained, all sessions
  bool done = false;           // the run is complete
  // Bytes of metrics.jsonl that the checkpoint commits (-1: from before the rule).
  int64_t metrics_bytes = -1;
  // Steps whose update was skipped for a non-finite loss or gradient norm
  // (train.on_nonfinite = skip_step): over the run, and in this epoch.
  int64_t skipped_steps = 0, epoch_skipped = 0;

  json to_json() const;
  // Keys missing from an older checkpoint take the defaults above; a key of the wrong type
  // is an Error naming it.
  static RunPosition from_json(const json& j);
};

// How a config's run splits into optimiser steps.
struct StepPlan {
  int64_t batches_per_epoch = 0;  // loader batches an epoch trains (train.max_batches_per_epoch caps them)
  int64_t accumulate = 1;         // loader batches per optimiser step (train.accumulate)
  int64_t steps_per_epoch = 0;    // ceil(batches_per_epoch / accumulate): the last step of an epoch may take fewer
  int64_t epochs = 0;             // train.epochs
  int64_t total_steps = 0;        // epochs * steps_per_epoch, capped by train.max_steps
};
// The plan of `softlab train` for a training set of `train_size` examples.
StepPlan plan_steps(const Config& cfg, int64_t train_size);

// The data a config trains on, as softlab train loads it: the data set (a synthetic task is
// generated from the seed), the class-balanced subset of data.subset, and the normalisation
// computed on the training split (none for sequences).
struct TrainingData {
  DataSplit data;
  Normalization norm;
};
TrainingData load_training_data(const Config& cfg);

// The options of softlab train's training loader: batch size, shuffling, augmentation and
// mixing, with its order and random draws derived from cfg.seed.
BatchLoader::Options train_loader_options(const Config& cfg, const Normalization& norm, int64_t num_classes);

// What one optimiser step did.
struct StepResult {
  double loss = 0.0;        // mean loss over the step's scored targets (NaN if a micro-batch's was not finite)
  double grad_norm = 0.0;   // global L2 norm of the gradients before clipping
  double clip_scale = 1.0;  // the factor the gradients were multiplied by: 1 when not clipped
  double lr = 0.0;          // the schedule's learning rate for this step (before any group's scale)
  int64_t correct = 0, seen = 0;  // scored targets and how many the head's decision got right
  int64_t images = 0, batches = 0;  // examples and loader batches the step took
  bool finite = true;   // false: the loss or the gradient norm is not finite
  bool applied = true;  // the optimiser moved the weights (false whenever !finite)
};

// The state of a training run between steps. A plain struct: every member is the one the
// step uses, so a loop may read (and, knowing what it does, change) any of them.
struct TrainState {
  Config cfg;
  std::unique_ptr<nn::Model> model;
  std::vector<nn::Parameter> params;     // model->parameters(), in the optimiser's order
  std::unique_ptr<Optimizer> optimizer;  // train.optimizer, with its parameter groups
  std::optional<WeightEma> ema;          // train.ema > 0: the averaged weights
  StepPlan plan;
  RunPosition pos;
  Normalization norm;  // the training split's, which evaluation uses too
  json data_meta;      // what checkpoints record of the data (metadata key "data")
  // Data parallelism (docs/distributed.md): with a reducer, each step sums the ranks'
  // gradients while backward runs, weighs each rank's loss by its share of the global step,
  // and draws this rank's own dropout stream. Null: a single process.
  dist::GradientReducer* reducer = nullptr;
  // Tests: the loss of this step (1-based) counts as NaN; 0: never.
  int64_t poison_step = 0;

  // A fresh run of `cfg` on `data`: the model initialised from cfg.seed, its optimiser, and the
  // weight EMA as a copy of the initial weights.
  TrainState(const Config& cfg, const DataSplit& data, const Normalization& norm);
  // The same from what a checkpoint records of the data (load() uses it).
  TrainState(const Config& cfg, int64_t num_classes, int64_t train_size, Normalization norm, json data_meta);

  // A run from a checkpoint that softlab train or save() wrote: its config, weights, optimiser
  // state, EMA and position, read from the file once. Errors name the file.
  static TrainState load(const std::string& path);
  // Weights, optimiser state, EMA and position from `ck` into this state, whose config must
  // describe the same model. Errors name `path`.
  void restore(const Checkpoint& ck, const std::string& path);
  // Everything load() needs, as softlab train writes it (config, position, data, version).
  Checkpoint checkpoint() const;
  void save(const std::string& path) const;  // checkpoint(), written atomically

  // The schedule's learning rate at `step` (0-based):
  //   warm-up (step < W = warmup_epochs * steps_per_epoch): lr * (step + 1) / W;
  //   then constant, step (lr * gamma^floor(step / (step_epochs * steps_per_epoch))) or
  //   cosine: min_lr + (lr - min_lr) (1 + cos(pi f)) / 2, f = clamp((step - W) / max(1, total - W), 0, 1).
  double lr_at(int64_t step) const;
  // The seed of the dropout and drop-path masks of `step`: a function of (cfg.seed, step) only
  // (and of the rank under a data-parallel job), so a resumed run draws an uninterrupted one's.
  uint64_t dropout_seed(int64_t step) const;

  // One optimiser step on `micro` (1 to plan.accumulate loader batches; the mean loss over all
  // their scored targets is what is minimised): seed the masks, forward and backward, clip the
  // gradient norm to train.grad_clip, update, average into the EMA, and advance pos (step,
  // batch, images and the epoch's statistics). A non-finite loss or gradient norm leaves the
  // weights as they are: with train.on_nonfinite = skip_step the step still counts
  // (pos.step and pos.skipped_steps advance), otherwise pos.step stays (the run has diverged).
  StepResult step(std::span<const Batch> micro);
  StepResult step(const Batch& batch) { return step(std::span<const Batch>(&batch, 1)); }

  // The next epoch: pos.epoch + 1, batch 0, the running statistics cleared.
  void next_epoch();

  // Loss and accuracy on `ds` (normalised with `norm`) with train.eval_batch_size and
  // train.max_eval_batches; `averaged`: with the EMA weights (an Error without train.ema).
  // The model is left in training mode with its raw weights.
  EvalResult evaluate(const Dataset& ds, bool averaged = false);
};

}  // namespace softlab
