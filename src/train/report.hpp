#pragma once
// What a run reports: its evaluations, a line of metrics.jsonl per evaluation and
// summary.json, whose keys are a contract (docs/design.md, "The command line"), with the log
// lines that go with them.
#include "softlab/train.hpp"
#include "train/run_state.hpp"

namespace softlab::detail {

// Evaluates the raw weights (a synthetic task: at every evaluation length too) and, with
// train.ema, the averaged weights; the results go into r.last_eval, r.last_by_length and
// r.last_ema_eval.
void evaluate_model(TrainRun& r);

// Appends the epoch's line to metrics.jsonl and logs it. Called before the position moves
// on, so it reports the epoch just trained.
void append_metrics_line(TrainRun& r, const EpochEnd& e);

// Writes summary.json (atomically) and logs the last line; the result train() returns.
TrainResult write_summary(TrainRun& r);

}  // namespace softlab::detail
