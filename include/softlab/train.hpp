#pragma once
// The training loop behind `softlab train`, evaluation, and the run directory:
// config.json (resolved config), metrics.jsonl (one line per evaluation, append-only),
// summary.json, last.ckpt and best.ckpt (atomic). A run resumed from last.ckpt continues
// exactly where it stopped (same batches, same dropout masks, same optimiser state).
#include <memory>
#include <string>
#include <vector>

#include "softlab/config.hpp"
#include "softlab/data.hpp"
#include "softlab/nn/vit.hpp"

namespace softlab {

struct TrainOptions {
  std::string out_dir;         // overrides output.dir when not empty
  bool resume = false;         // continue from out_dir/last.ckpt
  bool quiet = false;          // no progress output
  bool overfit_batch = false;  // train and evaluate on the first training batch only (debugging)
  int progress = -1;           // -1: live line on a terminal, plain lines otherwise; 0: plain; 1: live
  int64_t stop_after_step = 0; // > 0: behave as if interrupted once this global step is done (tests)
  std::string openmp_wait;     // how OpenMP threads wait (printed and kept in summary.json)
};

enum class TrainStatus { Finished, Interrupted };

struct TrainResult {
  TrainStatus status = TrainStatus::Finished;
  json summary;
  std::string run_dir;
};

TrainResult train(const Config& cfg, const TrainOptions& opt);

struct EvalResult {
  double loss = 0.0, accuracy = 0.0;  // accuracy: the head's own decision rule
  double top3 = 0.0, top5 = 0.0;      // label among the 3 / 5 highest scores (1 when C <= k)
  int64_t count = 0;
};
EvalResult evaluate(nn::ViT& model, const Dataset& ds, const Normalization& norm, int64_t batch_size);

// The model a config describes (the number of classes and training-set size come from the data).
std::unique_ptr<nn::ViT> build_model(const Config& cfg, int64_t num_classes, int64_t train_size);

// A model restored from a checkpoint, with its config and the normalisation it was trained with.
struct LoadedModel {
  Config config;
  std::unique_ptr<nn::ViT> model;
  Normalization norm;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
};
LoadedModel load_model(const std::string& checkpoint_path);

// Stop requests (SIGINT/SIGTERM): async-signal-safe; the loop saves a checkpoint and returns.
void request_stop();
bool stop_requested();
void clear_stop_request();

}  // namespace softlab
