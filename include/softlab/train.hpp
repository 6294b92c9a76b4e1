#pragma once
// The training loop behind `softlab train`, evaluation, and the run directory:
// config.json (resolved config), metrics.jsonl (one line per evaluation, append-only),
// summary.json, last.ckpt and best.ckpt (atomic). A run resumed from last.ckpt continues
// exactly where it stopped (same batches, same dropout masks, same optimiser state).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "softlab/checkpoint.hpp"
#include "softlab/config.hpp"
#include "softlab/data.hpp"
#include "softlab/nn/seq.hpp"
#include "softlab/nn/vit.hpp"

namespace softlab {

struct TrainOptions {
  std::string out_dir;         // overrides output.dir when not empty
  bool resume = false;         // continue from out_dir/last.ckpt (from the start if it has none yet)
  bool overwrite = false;      // replace a run already in the directory (its files are deleted)
  bool quiet = false;          // no progress output
  bool overfit_batch = false;  // train and evaluate on the first training batch only (debugging)
  int progress = -1;           // -1: live line on a terminal, plain lines otherwise; 0: plain; 1: live
  int64_t stop_after_step = 0; // > 0: behave as if interrupted once this global step is done (tests)
  int64_t nonfinite_at_step = 0;  // > 0: the loss of this global step (1-based) counts as NaN (tests)
  std::string openmp_wait;     // how OpenMP threads wait (printed and kept in summary.json)
  // Cores kept busy by processes that were running before this one, as the softlab
  // command's start-up probe measured them (0: not measured). With train.threads = 0 and
  // half a core or more, the trainer leaves those cores out (docs/performance.md).
  double other_load_cores = 0.0;
  // How to continue this run, printed when it is interrupted ("softlab train CONFIG ...
  // --resume"); empty: the message names the run directory only.
  std::string resume_command;
  // A file that gets one JSON line per optimiser step (step, loss, grad_norm, lr), appended
  // and flushed as the run goes; empty: none. Not part of the run directory's commit:
  // a resumed run appends from where it resumes.
  std::string step_log;
  // Data parallelism under an MPI job (docs/distributed.md): the size of the gradient
  // buckets that are summed across ranks while backward runs.
  int64_t bucket_bytes = int64_t{2} << 20;
  // Under an MPI job, ranks other than 0 print progress too (prefixed by nothing: for debugging).
  bool log_all_ranks = false;
};

// Finished: the run is complete. Interrupted: a stop request saved last.ckpt; --resume
// continues. Diverged: a non-finite loss, gradient norm, evaluation or weight stopped the
// run before anything non-finite was saved; summary["message"] says where, and which
// checkpoint holds the last finite state.
enum class TrainStatus { Finished, Interrupted, Diverged };

struct TrainResult {
  TrainStatus status = TrainStatus::Finished;
  json summary;
  std::string run_dir;
};

TrainResult train(const Config& cfg, const TrainOptions& opt);

struct EvalResult {
  double loss = 0.0, accuracy = 0.0;  // accuracy: the head's own decision rule
  double top3 = 0.0, top5 = 0.0;      // label among the 3 / 5 highest scores (1 when C <= k)
  int64_t count = 0;                  // scored targets (images, or sequence positions)
  // Data sets with a known target distribution (synthetic:bins), for heads with probabilities:
  // "kl" = mean KL(true || predicted) over the bins, "bin_mae" = mean |predicted bin - true bin|
  // on the ordered axis, "tv" = mean total variation sum_k |p_k+1 - p_k| of the prediction.
  std::map<std::string, double> extra;
};
// max_batches > 0: only the first max_batches batches (in order) are evaluated. Under an MPI
// job (dist::active()) every rank must call it: each evaluates every size()-th batch and the
// sums are combined, so every rank returns the same result.
EvalResult evaluate(nn::Model& model, const Dataset& ds, const Normalization& norm, int64_t batch_size,
                    int64_t max_batches = 0);

// Accuracy and loss at every evaluation length of a synthetic task (data.eval_lengths), the
// training length (`at_train_length`, already evaluated on data.test) included, keyed by
// length; an empty object when the task has no further lengths.
json evaluate_by_length(nn::Model& model, const DataSplit& data, const EvalResult& at_train_length,
                        int64_t batch_size, int64_t max_batches = 0);

// The model a config describes (the number of classes and training-set size come from the
// data; a sequence model's vocabulary and lengths from the config's synthetic task).
std::unique_ptr<nn::Model> build_model(const Config& cfg, int64_t num_classes, int64_t train_size);

// A model restored from a checkpoint, with its config and the normalisation it was trained with.
struct LoadedModel {
  Config config;
  std::unique_ptr<nn::Model> model;
  Normalization norm;
  int64_t num_classes = 0;
  int64_t train_size = 0;  // metadata key data.train_size (0 when absent)
  std::vector<std::string> class_names;
};
// With `ema`, the weights are the checkpoint's weight EMA (train.ema, tensors "ema.*"); a
// checkpoint without one is an Error naming the file.
// `inference_sets`: apply_inference_overrides to the saved config before the model is built
// (e.g. {"model.attention.p=4"}); LoadedModel::config is the config with them.
LoadedModel load_model(const std::string& checkpoint_path, bool ema = false,
                       const std::vector<std::string>& inference_sets = {});
// The same from a checkpoint already read (`path` names it in errors); TrainState::load
// (softlab/train_state.hpp) restores the optimiser state and position from the same read.
LoadedModel load_model(const Checkpoint& ckpt, const std::string& path, bool ema = false,
                       const std::vector<std::string>& inference_sets = {});

// Stop requests (SIGINT/SIGTERM): async-signal-safe; the loop saves a checkpoint and returns
// at the next point where it can (data loading included). A request stays until
// clear_stop_request(): train() never clears it, so none is lost.
void request_stop();
bool stop_requested();
void clear_stop_request();

}  // namespace softlab
