// What a run reports: evaluations, metrics.jsonl lines, summary.json (train/report.hpp).
#include "train/report.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include <sys/resource.h>

#include "softlab/checkpoint.hpp"
#include "softlab/distributed.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/precision.hpp"
#include "softlab/version.hpp"

namespace softlab::detail {

namespace {

// The process's peak resident memory so far (Linux reports ru_maxrss in KiB).
double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

void evaluate_model(TrainRun& r) {
  const Config& cfg = r.cfg;
  r.last_eval = r.st->evaluate(*r.eval_set);
  if (!r.opt.overfit_batch)
    r.last_by_length =
        evaluate_by_length(*r.st->model, r.data, r.last_eval, cfg.train.eval_batch_size, cfg.train.max_eval_batches);
  if (r.st->ema) r.last_ema_eval = r.st->evaluate(*r.eval_set, /*averaged=*/true);
  r.have_eval = true;
}

void append_metrics_line(TrainRun& r, const EpochEnd& e) {
  const Config& cfg = r.cfg;
  const Position& pos = r.st->pos;
  json m = {{"epoch", pos.epoch + 1},
            {"step", pos.step},
            // The rate of the last step taken.
            {"lr", r.st->lr_at(std::max<int64_t>(pos.step - 1, 0))},
            {"train_loss", pos.seen ? pos.loss_sum / static_cast<double>(pos.seen) : 0.0},
            {"train_accuracy", pos.seen ? static_cast<double>(pos.correct) / static_cast<double>(pos.seen) : 0.0},
            {"test_loss", r.last_eval.loss},
            {"test_accuracy", r.last_eval.accuracy},
            {"test_top3_accuracy", r.last_eval.top3},
            {"test_top5_accuracy", r.last_eval.top5},
            {"grad_norm", pos.epoch_steps ? pos.grad_norm_sum / static_cast<double>(pos.epoch_steps) : 0.0},
            {"images_per_sec", static_cast<double>(pos.images - r.epoch_images_before) / std::max(e.seconds, 1e-9)},
            {"epoch_seconds", e.seconds},
            {"seconds", train_seconds(r)},
            {"wall_time", seconds_since(r.wall_start)}};
  for (const auto& [k, v] : r.last_eval.extra) m["test_" + k] = v;
  if (!r.last_by_length.empty()) m["by_length"] = r.last_by_length;
  if (cfg.train.skip_nonfinite_steps) m["skipped_steps"] = pos.epoch_skipped;
  if (r.st->ema) {
    m["ema_test_loss"] = r.last_ema_eval.loss;
    m["ema_test_accuracy"] = r.last_ema_eval.accuracy;
  }
  if (dist::is_root()) {  // under an MPI job, rank 0 alone keeps the run directory
    std::ofstream mf(r.metrics_path, std::ios::app);
    mf << m.dump() << "\n";
    SOFTLAB_CHECK(mf.good(), "cannot append to ", r.metrics_path.string());
  }
  r.progress.line(cat("epoch ", pos.epoch + 1, "/", r.st->plan.epochs, "  train loss ",
                      fmt("%.4f", m["train_loss"].get<double>()),
                      " acc ", fmt("%.2f%%", 100.0 * m["train_accuracy"].get<double>()), "  test loss ",
                      fmt("%.4f", r.last_eval.loss), " acc ", fmt("%.2f%%", 100.0 * r.last_eval.accuracy),
                      r.st->ema ? "  ema acc " + fmt("%.2f%%", 100.0 * r.last_ema_eval.accuracy) : std::string(), "  ",
                      fmt("%.0f img/s", m["images_per_sec"].get<double>()), "  ", format_duration(e.seconds)));
}

TrainResult write_summary(TrainRun& r) {
  const Config& cfg = r.cfg;
  const Position& pos = r.st->pos;
  const EvalResult& last_eval = r.last_eval;
  const double secs = pos.train_seconds;
  json summary = {{"name", cfg.name},
                  {"status", "finished"},
                  {"dataset", cfg.data.dataset},
                  {"test_accuracy", last_eval.accuracy},
                  {"best_test_accuracy", std::max(pos.best_accuracy, last_eval.accuracy)},
                  {"test_top3_accuracy", last_eval.top3},
                  {"test_top5_accuracy", last_eval.top5},
                  {"best_epoch", pos.best_epoch},
                  {"test_loss", last_eval.loss},
                  {"epochs", pos.epoch},
                  {"steps", pos.step},
                  {"params", r.st->model->num_parameters()},
                  {"tokens", r.st->model->tokens()},
                  {"train_seconds", secs},
                  // This session's steps only: earlier sessions' step time is not kept.
                  {"seconds_per_step", pos.step > r.session_first_step
                                           ? r.session_step_seconds / static_cast<double>(pos.step - r.session_first_step)
                                           : 0.0},
                  {"peak_rss_mb", peak_rss_mb()},
                  {"train_images_per_sec", secs > 0 ? static_cast<double>(pos.images) / secs : 0.0},
                  {"attention", cfg.model.attention},
                  {"head", cfg.model.head},
                  {"seed", cfg.seed},
                  {"threads", num_threads()},
                  {"precision", precision_name(cfg.train.precision)},
                  {"openmp_wait", r.opt.openmp_wait},
                  {"version", version()},
                  {"build", build_info()}};
  for (const auto& [k, v] : last_eval.extra) summary["test_" + k] = v;
  if (cfg.train.skip_nonfinite_steps) summary["skipped_steps"] = pos.skipped_steps;
  if (!r.last_by_length.empty()) summary["test_by_length"] = r.last_by_length;
  if (r.st->ema) {
    summary["ema_test_accuracy"] = r.last_ema_eval.accuracy;
    summary["ema_test_loss"] = r.last_ema_eval.loss;
  }
  json per_module = json::object();
  for (const auto& [n, c] : r.st->model->parameter_counts()) per_module[n] = c;
  summary["params_per_module"] = per_module;
  if (const json head_info = r.st->model->head->info(); !head_info.empty()) summary["head_info"] = head_info;
  if (dist::active()) summary["ranks"] = dist::size();
  if (dist::is_root()) write_file_atomic(r.summary_path.string(), summary.dump(2) + "\n");
  r.progress.line(cat("test accuracy ", fmt("%.2f%%", 100.0 * last_eval.accuracy), " (best ",
                      fmt("%.2f%%", 100.0 * summary["best_test_accuracy"].get<double>()), "), ",
                      format_duration(secs), " of training; run directory ", r.run_dir));
  TrainResult result;
  result.run_dir = r.run_dir;
  result.summary = summary;
  return result;
}

}  // namespace softlab::detail
