#pragma once
// The state that the steps of train() share (trainer.cpp runs the steps, report.cpp writes
// what a run reports): one plain struct, TrainRun, so every buffer and counter a step touches
// is in sight. What a resumed run needs beyond weights and optimiser state is in
// TrainRun::st->pos, which goes into every checkpoint.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "softlab/distributed.hpp"
#include "softlab/optim.hpp"
#include "softlab/train.hpp"
#include "softlab/train_state.hpp"
#include "train/progress.hpp"
#include "train/run_dir.hpp"

namespace softlab::detail {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The position of a run (softlab/train_state.hpp): everything a resumed run needs beyond
// weights and optimiser state.
using Position = RunPosition;

// Filled in the order train() calls its steps. Members point into each other (the loader
// into `data`, the EMA into `model`, `eval_set` into `data` or `overfit`), so a TrainRun is
// built in place and never copied or moved; members are destroyed in reverse order, the
// loader (and its prefetch thread) before the data it reads.
struct TrainRun {
  const Config& cfg;
  const TrainOptions& opt;
  Progress progress;
  Clock::time_point wall_start;  // when train() was called: the metrics' wall_time

  // The run directory, its files, and the lock that keeps other processes out of it.
  std::string run_dir;
  std::filesystem::path dir, last_path, best_path, metrics_path, summary_path;
  std::optional<RunDirLock> lock;
  bool from_scratch = false;  // --resume on a directory without a checkpoint yet

  // The last save of last.ckpt (its position: what a stopped run falls back to), and when
  // it was, for train.checkpoint_every.
  std::optional<Position> saved;
  Clock::time_point last_save;
  // Why the run stopped for non-finite values; empty while it has not.
  std::string diverged;
  bool stop_now = false;  // TrainOptions::stop_after_step reached

  // The data, the training split's normalisation (none for sequences), and what is
  // evaluated: data.test, or `overfit` with --overfit-batch.
  DataSplit data;
  Normalization norm;
  Dataset overfit;
  const Dataset* eval_set = nullptr;

  // The model, its optimiser, the weight EMA, the step plan and the position: the state one
  // step takes to the next (softlab/train_state.hpp), the same that an embedding program's
  // loop drives.
  std::optional<TrainState> st;
  // Under an MPI job: sums the ranks' gradients while backward runs (train/data_parallel.hpp).
  std::optional<dist::GradientReducer> reducer;
  // TrainOptions::step_log, open for appending (rank 0 only).
  std::unique_ptr<std::ofstream> step_log;

  // The loader, which draws the batches of st->plan.
  std::optional<BatchLoader> loader;

  // The current step's loader batches (micro-batches).
  std::vector<Batch> micro;

  // The current epoch's clock, and the examples (images or sequences) trained before it,
  // for its rate.
  Clock::time_point epoch_start;
  int64_t epoch_images_before = 0;

  // The latest evaluation: raw weights, EMA weights, and by length for synthetic tasks.
  EvalResult last_eval{}, last_ema_eval{};
  json last_by_length = json::object();
  bool have_eval = false;

  // This session (one call of train(), resumed or not). Training time without evaluation
  // is the honest cost of a step, hence session_step_seconds.
  Clock::time_point session_start;
  double session_step_seconds = 0.0;
  int64_t session_first_step = 0;
  double seconds_before = 0.0;  // pos.train_seconds when the session started
};

// Training time over all sessions, evaluation included.
inline double train_seconds(const TrainRun& r) { return r.seconds_before + seconds_since(r.session_start); }

// How an epoch's pass ended (the whole epoch, or cut short by the step budget), and what
// follows from it.
struct EpochEnd {
  double seconds = 0.0;     // the pass, evaluation excluded
  bool epoch_done = false;  // all its batches trained (not cut short by the step budget)
  bool finished = false;    // the run is complete
  bool eval_now = false;    // at the end of the run, and every train.eval_every epochs
};

}  // namespace softlab::detail
