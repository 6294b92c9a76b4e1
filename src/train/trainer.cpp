// The training loop: data, model, optimiser, schedule, evaluation, checkpoints, metrics.
//
// train() at the bottom reads as the run goes: the run directory, the data, the model and its
// optimiser (fresh, or restored from last.ckpt), the batch plan, one call per epoch, the
// summary. The steps share one plain struct, TrainRun (train/run_state.hpp); what a run
// reports (metrics.jsonl, summary.json) is written by train/report.cpp.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <vector>

#include "softlab/autograd.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"
#include "softlab/optim.hpp"
#include "softlab/parallel.hpp"
#include "softlab/precision.hpp"
#include "softlab/train.hpp"
#include "softlab/version.hpp"
#include "softlab/distributed.hpp"
#include "train/data_parallel.hpp"
#include "train/report.hpp"
#include "train/run_state.hpp"

namespace softlab {

namespace fs = std::filesystem;

namespace {
volatile std::sig_atomic_t g_stop = 0;

using detail::Clock;
using detail::EpochEnd;
using detail::Position;
using detail::seconds_since;
using detail::train_seconds;
using detail::TrainRun;
using detail::cat;
// The run directory's crash safety (train/run_dir.hpp).
using detail::commit_pending_best;
using detail::crash_point;
using detail::drop_uncommitted_metrics;
using detail::file_size_or_zero;
using detail::pending_best_path;
using detail::recover_pending_best;
using detail::remove_stale_temporaries;
// Data parallelism under an MPI job (train/data_parallel.cpp).
using detail::broadcast_state;
using detail::check_batch_splits;
using detail::check_ranks_agree;
using detail::rank_fingerprint;
using detail::shard_batch;
using detail::share_cores_between_ranks;
// What the run reports (train/report.cpp).
using detail::append_metrics_line;
using detail::evaluate_model;
using detail::write_summary;

// Keys that may differ between a checkpoint's config and the config of a resumed run.
// (None of them changes what a step computes.)
bool resumable_difference(const std::string& path) {
  return path == "/train/epochs" || path == "/train/threads" || path == "/train/max_steps" ||
         path == "/train/precision" ||  // checkpoints are f32 whatever the precision of the products
         path.rfind("/output", 0) == 0 || path == "/train/eval_batch_size" || path == "/train/max_eval_batches" ||
         path.rfind("/train/checkpoint_every", 0) == 0 || path == "/train/on_nonfinite";
}

void check_resume_config(const json& saved, const json& now, const std::string& from) {
  // Resolved again, so keys added to softlab since the checkpoint was written take their
  // defaults: a newer softlab still resumes an older run.
  const json diff = json::diff(resolve_saved_config(saved), now);
  std::string bad;
  for (const auto& d : diff) {
    const std::string p = d.value("path", "");
    if (!resumable_difference(p)) bad += (bad.empty() ? "" : ", ") + dotted_key_path(p);
  }
  SOFTLAB_CHECK(bad.empty(), "--resume: the config differs from the one ", from, " was trained with, at: ", bad,
                " (only train.epochs, train.max_steps, train.threads, train.precision, train.checkpoint_every, "
                "train.on_nonfinite and output may change on resume)");
}

// ---- before the first step ----------------------------------------------------------------

// The files a run leaves in its directory (besides .lock and best.ckpt.pending-<step>).
constexpr const char* kRunFiles[] = {"config.json", "last.ckpt", "best.ckpt", "metrics.jsonl", "summary.json"};

// Never overwrite what a user already has: an existing run needs --resume, --overwrite or
// another --out. The directory is locked for the run, and what an earlier process left
// half-written is cleared away (train/run_dir.hpp).
void prepare_run_directory(TrainRun& r) {
  r.run_dir = r.opt.out_dir.empty() ? r.cfg.output.dir : r.opt.out_dir;
  SOFTLAB_CHECK(!r.run_dir.empty(), "output.dir is empty: say where the run directory goes (or pass --out DIR)");
  r.dir = fs::path(r.run_dir);
  r.last_path = r.dir / "last.ckpt";
  r.best_path = r.dir / "best.ckpt";
  r.metrics_path = r.dir / "metrics.jsonl";
  r.summary_path = r.dir / "summary.json";
  if (!dist::is_root()) return;  // rank 0 alone keeps the run directory
  SOFTLAB_CHECK(!r.opt.resume || fs::is_directory(r.dir), "--resume: there is no run directory ", r.run_dir);
  std::error_code ec;
  fs::create_directories(r.dir, ec);
  SOFTLAB_CHECK(!ec && fs::is_directory(r.dir), "cannot create the run directory ", r.run_dir, ": ",
                ec ? ec.message() : "a file of that name exists");
  r.lock.emplace(r.dir);
  if (const int n = remove_stale_temporaries(r.dir))
    r.progress.line(cat("removed ", n, " temporary file", n == 1 ? "" : "s", " an interrupted save left in ", r.run_dir));
  if (r.opt.resume) {
    if (fs::exists(r.last_path)) return;
    // Stopped before its first checkpoint: nothing was committed, so the run starts again,
    // provided it is the same run.
    SOFTLAB_CHECK(fs::exists(r.dir / "config.json"), "--resume: ", r.run_dir,
                  " holds no run (neither last.ckpt nor config.json)");
    check_resume_config(read_json_file((r.dir / "config.json").string()), r.cfg.resolved,
                        (r.dir / "config.json").string());
    r.from_scratch = true;
    r.progress.line(cat(r.run_dir, " has no checkpoint yet: the run starts from the beginning"));
    return;
  }
  for (const char* f : kRunFiles) {
    if (!fs::exists(r.dir / f)) continue;
    SOFTLAB_CHECK(r.opt.overwrite, "run directory ", r.run_dir, " already holds a run (", f,
                  "); pass --resume to continue it, --overwrite to replace it, or --out DIR for a new one");
  }
  if (r.opt.overwrite) {
    for (const char* f : kRunFiles) fs::remove(r.dir / f);
    recover_pending_best(r.dir, -1);  // removes any pending best
  }
}

// The data (a class-balanced subset with data.subset) and the normalisation computed on the
// training split, which the test split shares; then the model, initialised from the run's
// seed, its optimiser and the weight EMA. A resumed run overwrites the state from the
// checkpoint (or, under an MPI job, from rank 0), but builds it the same way first.
void load_training_data(TrainRun& r) {
  TrainingData td = softlab::load_training_data(r.cfg);
  r.data = std::move(td.data);
  r.norm = std::move(td.norm);
}
void build_train_state(TrainRun& r) {
  r.st.emplace(r.cfg, r.data, r.norm);
  r.st->poison_step = r.opt.nonfinite_at_step;
}

// --resume: weights, optimiser state, position and EMA from last.ckpt, once the config is
// known to differ from the checkpoint's only where a resumed run may. What the stopped
// process wrote after that checkpoint is undone: metrics lines it did not commit, a best
// checkpoint it did not record.
void resume_from_checkpoint(TrainRun& r) {
  const std::string path = r.last_path.string();
  Checkpoint ck = load_checkpoint(path);
  // A checkpoint whose header is sound but whose content does not fit this run (written by
  // other code, or edited) is bad input naming the file, never a library exception.
  try {
    check_resume_config(checkpoint_meta(ck, "config", path), r.cfg.resolved, path);
    r.st->restore(ck, path);
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(path, ": its header does not describe a run of this config (", e.what(), ")"));
  } catch (const Error& e) {
    if (std::string(e.what()).find(path) != std::string::npos) throw;
    throw Error(cat(path, ": ", e.what()), e.kind());
  }
  r.saved = r.st->pos;
  if (const int64_t n = drop_uncommitted_metrics(r.metrics_path, r.st->pos.metrics_bytes))
    r.progress.line(cat("dropped ", n, " line", n == 1 ? "" : "s", " of ", r.metrics_path.string(),
                        " written after last.ckpt (that training is done again)"));
  if (const std::string said = recover_pending_best(r.dir, r.st->pos.best_step); !said.empty()) r.progress.line(said);
}

// A new run (or one that never reached its first checkpoint): the resolved config and no
// metrics, in rank 0's run directory.
void start_new_run(TrainRun& r) {
  if (!dist::is_root()) return;
  write_file_atomic((r.dir / "config.json").string(), r.cfg.resolved.dump(2) + "\n");
  if (r.from_scratch) {
    drop_uncommitted_metrics(r.metrics_path, 0);
    recover_pending_best(r.dir, -1);
  }
}


// The loader (its order and augmentation derive from the run's seed) and the step plan.
// --overfit-batch trains one unshuffled, unaugmented batch, one per step.
void plan_batches(TrainRun& r) {
  BatchLoader::Options lo = train_loader_options(r.cfg, r.st->norm, r.data.train.num_classes);
  StepPlan& plan = r.st->plan;
  if (r.opt.overfit_batch) {
    lo.shuffle = false;
    lo.augment = Augment{};
    plan.batches_per_epoch = 1;
    plan.accumulate = 1;
    plan.steps_per_epoch = 1;
    plan.total_steps = plan.epochs;
    if (r.cfg.train.max_steps > 0) plan.total_steps = std::min(plan.total_steps, r.cfg.train.max_steps);
  }
  r.loader.emplace(r.data.train, lo);
}

// The evaluation set: the test split, or the one training batch when overfitting.
void choose_eval_set(TrainRun& r) {
  if (!r.opt.overfit_batch) {
    r.eval_set = &r.data.test;
    return;
  }
  const Dataset& full = r.data.train;
  Dataset& o = r.overfit;
  o = full;
  const int64_t n = std::min<int64_t>(r.cfg.train.batch_size, full.size);
  o.size = n;
  o.images.resize(static_cast<size_t>(n * full.image_bytes()));
  o.labels.resize(static_cast<size_t>(o.labels.empty() ? 0 : n));
  o.tokens.resize(static_cast<size_t>(n * full.seq_len));
  o.targets.resize(static_cast<size_t>(n * full.seq_len));
  if (!o.target_density.empty()) o.target_density.resize(static_cast<size_t>(n * full.num_classes));
  r.eval_set = &r.overfit;
}

// What runs on what: version, threads, precision, data, the model's parameters per module.
void print_run_header(TrainRun& r) {
  const Config& cfg = r.cfg;
  r.progress.line(detail::cat("softlab ", version(), " | ", cfg.name, " | threads ", num_threads(), " | ",
                              precision_name(cfg.train.precision),
                              r.opt.openmp_wait.empty() ? "" : " (OpenMP waiting: " + r.opt.openmp_wait + ")", " | ",
                              cfg.data.dataset, ": ", r.data.train.size, " train, ", r.data.test.size, " test (",
                              r.data.dir, ")"));
  std::string counts;
  for (const auto& [n, c] : r.st->model->parameter_counts()) counts += detail::cat(" ", n, " ", c, ";");
  r.progress.line(detail::cat("model ", cfg.model.type, " (attention ", cfg.model.attention.value("type", "?"),
                              ", head ", cfg.model.head.value("type", "?"), "): ", r.st->model->num_parameters(),
                              " parameters;", counts));
  if (const auto& groups = cfg.train.optimizer.groups; !groups.empty()) {
    // How many parameters each group got; softlab validate lists them by name.
    const auto settings = param_settings(cfg.train.optimizer, r.st->params);
    auto count = [&](int g) {
      return std::count_if(settings.begin(), settings.end(), [g](const ParamSettings& s) { return s.group == g; });
    };
    std::string line = "parameter groups:";
    for (size_t g = 0; g < groups.size(); ++g)
      line += detail::cat(" [", g, "] \"", groups[g].match, "\" ", count(static_cast<int>(g)), ";");
    r.progress.line(detail::cat(line, " default ", count(-1), " (parameters each)"));
  }
  const json head_info = r.st->model->head->info();
  if (!head_info.empty()) r.progress.line(detail::cat("head ", cfg.model.head.value("type", "?"), ": ", head_info.dump()));
  if (r.reducer)
    r.progress.line(detail::cat("data parallel over ", dist::size(), " MPI ranks: ", r.cfg.train.batch_size / dist::size(),
                                " of each batch of ", r.cfg.train.batch_size, " per rank, ", num_threads(),
                                num_threads() == 1 ? " thread" : " threads", " each; gradients of ", r.reducer->bytes(),
                                " bytes summed in ", r.reducer->buckets(), r.reducer->buckets() == 1 ? " bucket" : " buckets"));
  if (r.opt.resume)
    r.progress.line(detail::cat("resuming ", r.run_dir, " at epoch ", r.st->pos.epoch + 1, ", batch ", r.st->pos.batch,
                                ", step ", r.st->pos.step));
}

// This session's clocks; train_seconds() adds them to the time of earlier sessions.
void start_session_clock(TrainRun& r) {
  r.session_start = Clock::now();
  r.session_step_seconds = 0.0;
  r.session_first_step = r.st->pos.step;
  r.seconds_before = r.st->pos.train_seconds;
}

// Threads that share a core with another process wait for it at every parallel region; in
// a training step (with the loader's prefetch thread beside it) the cores left free are
// faster than all of them, on both reference models (docs/performance.md, "Threads and how
// they wait"). So with the default count, cores that were busy before the run started are
// left to whoever keeps them busy.
void leave_busy_cores_alone(TrainRun& r) {
  // Under an MPI job the busy cores are the other ranks', which mpirun's binding already parts.
  if (dist::active()) return;
  if (!(r.cfg.train.threads == 0 && r.opt.other_load_cores >= 0.5 && num_threads() > 1)) return;
  const int busy = static_cast<int>(std::lround(r.opt.other_load_cores));
  const int chosen = std::max(1, num_threads() - std::max(1, busy));
  r.progress.line(detail::cat("other processes keep ", r.opt.other_load_cores, " cores busy: training with ", chosen,
                              chosen == 1 ? " thread" : " threads", " (train.threads or --threads sets the count)"));
  set_num_threads(chosen);
}

// ---- one step -----------------------------------------------------------------------------

// The step's loader batches (micro-batches); under an MPI job, this rank's share of each.
// False when the loader has no batch left.
bool next_micro_batches(TrainRun& r) {
  const StepPlan& plan = r.st->plan;
  r.micro.assign(static_cast<size_t>(std::min(plan.accumulate, plan.batches_per_epoch - r.st->pos.batch)), Batch{});
  size_t got = 0;
  while (got < r.micro.size() && r.loader->next(r.micro[got])) {
    if (dist::active()) r.micro[got] = shard_batch(r.micro[got], dist::rank(), dist::size());
    ++got;
  }
  r.micro.resize(got);
  return got > 0;
}

// The last checkpoint a stopped run can fall back to, in words.
std::string last_good_checkpoint(const TrainRun& r) {
  if (!r.saved) return "no checkpoint was written yet";
  return cat("the last checkpoint, ", r.last_path.string(), " (epoch ", r.saved->epoch + 1, ", batch ", r.saved->batch,
             ", step ", r.saved->step, "), holds the last finite state");
}

// A run stops for non-finite values before anything non-finite is saved.
void mark_diverged(TrainRun& r, const std::string& what) {
  r.diverged = cat("training diverged: ", what, ". Nothing non-finite was saved: ", last_good_checkpoint(r),
                   ". Try a lower train.optimizer.lr, a longer warm-up or gradient clipping"
                   " (train.on_nonfinite=skip_step skips such steps instead).");
}

// One optimiser step over r.micro (TrainState::step: gradients, clipping, the update, the
// EMA). A non-finite loss or gradient norm stops the run before the optimiser spreads it into
// the weights (or, with train.on_nonfinite = skip_step, leaves the weights as they are).
void train_step(TrainRun& r) {
  TrainState& st = *r.st;
  const int64_t step = st.pos.step;
  const StepResult res = st.step(r.micro);
  if (!res.finite) {
    const std::string what = cat(std::isfinite(res.loss) ? "the gradient norm" : "the loss", " is ",
                                 std::isfinite(res.loss) ? res.grad_norm : res.loss, " at epoch ", st.pos.epoch + 1,
                                 ", step ", step + 1, " (lr ", res.lr, ")");
    if (!r.cfg.train.skip_nonfinite_steps)
      mark_diverged(r, what);
    else
      r.progress.line("skipped the update: " + what);
    return;
  }
  if (r.step_log)
    *r.step_log << json{{"step", step + 1}, {"loss", res.loss}, {"grad_norm", res.grad_norm}, {"lr", res.lr}}.dump()
                << std::endl;
}

// The live progress line: the epoch's running loss and accuracy, its rate, the time left.
void show_step(TrainRun& r) {
  const Position& pos = r.st->pos;
  const double es = seconds_since(r.epoch_start);
  const double ips = static_cast<double>(pos.images - r.epoch_images_before) / std::max(es, 1e-9);
  const double eta = static_cast<double>(r.st->plan.total_steps - pos.step) *
                     static_cast<double>(r.cfg.train.batch_size * r.st->plan.accumulate) / std::max(ips, 1e-9);
  const double seen = static_cast<double>(std::max<int64_t>(pos.seen, 1));
  r.progress.step(pos.epoch + 1, r.st->plan.epochs, pos.batch, r.st->plan.batches_per_epoch, pos.loss_sum / seen,
                  static_cast<double>(pos.correct) / seen, ips, eta);
}

// ---- checkpoints ---------------------------------------------------------------------------

// The first tensor holding NaN or infinity, empty if none: such a state is never saved.
std::string first_nonfinite(const Checkpoint& ck) {
  for (const auto& [name, t] : ck.tensors) {
    const float* x = t.data();
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
      if (!std::isfinite(x[i])) return name;
  }
  return {};
}

// last.ckpt with the current position, which commits the metrics.jsonl written so far. With
// `improved`, the same state becomes best.ckpt: written aside first, recorded by last.ckpt,
// then renamed into place, so that after a kill at any point best.ckpt and last.ckpt's
// best record agree once the run is resumed (train/run_dir.hpp). False, and nothing
// written, when the state is not finite.
bool save_state(TrainRun& r, bool improved) {
  r.st->pos.train_seconds = train_seconds(r);
  r.st->pos.metrics_bytes = file_size_or_zero(r.metrics_path);
  const Checkpoint ck = r.st->checkpoint();
  if (const std::string bad = first_nonfinite(ck); !bad.empty()) {
    mark_diverged(r, cat(bad, " holds non-finite values at epoch ", r.st->pos.epoch + 1, ", step ", r.st->pos.step));
    return false;
  }
  // Every rank holds the same state and checks it (so all agree on divergence); rank 0 writes.
  if (improved && dist::is_root()) {
    save_checkpoint(pending_best_path(r.dir, r.st->pos.step).string(), ck);
    crash_point("best_pending_saved");
  }
  if (dist::is_root()) save_checkpoint(r.last_path.string(), ck);
  crash_point("last_saved");
  if (improved && dist::is_root()) commit_pending_best(r.dir, r.st->pos.step);
  r.saved = r.st->pos;
  r.last_save = Clock::now();
  return true;
}

// train.checkpoint_every: a mid-epoch save is due after that many minutes or steps since the
// last save (epoch ends save anyway).
bool checkpoint_due(const TrainRun& r) {
  // The epoch end saves.
  if (r.st->pos.batch >= r.st->plan.batches_per_epoch || r.st->pos.step >= r.st->plan.total_steps) return false;
  const int64_t since_step = r.st->pos.step - (r.saved ? r.saved->step : r.session_first_step);
  const auto& t = r.cfg.train;
  return (t.checkpoint_steps > 0 && since_step >= t.checkpoint_steps) ||
         (t.checkpoint_minutes > 0 && seconds_since(r.last_save) >= 60.0 * t.checkpoint_minutes);
}

// ---- one epoch ----------------------------------------------------------------------------

// A stop request: a signal (request_stop), or TrainOptions::stop_after_step reached. Under an
// MPI job a signal to any rank stops them all, at the same step: the ranks agree on it.
bool stop_here(const TrainRun& r) { return r.stop_now || stop_requested(); }  // this rank's view
bool stopping(const TrainRun& r) {
  int64_t stop = stop_here(r);
  dist::allreduce_max(&stop, 1, "agreeing on a stop request");
  return stop != 0;
}

// After each step: stop, or save mid-epoch? Under an MPI job rank 0's clock decides the save
// and a stop request on any rank stops all; one collective agrees on both.
struct AfterStep {
  bool stop = false, save = false;
};
AfterStep after_step(const TrainRun& r) {
  int64_t v[2] = {stop_here(r), dist::is_root() && checkpoint_due(r)};
  dist::allreduce_max(v, 2, "agreeing on a stop or a save");
  return {v[0] != 0, v[1] != 0};
}

bool more_to_train(const TrainRun& r) {
  const Position& pos = r.st->pos;
  return !pos.done && pos.epoch < r.st->plan.epochs && pos.step < r.st->plan.total_steps;
}

// The current epoch from pos.batch on: steps until its batches are done, the step budget is
// spent, a stop is requested or the run diverges. The loader derives the epoch's order from
// (seed, epoch) and starts at pos.batch, so a resumed run sees the batches of an
// uninterrupted one.
void train_epoch(TrainRun& r) {
  r.loader->start_epoch(r.opt.overfit_batch ? 0 : r.st->pos.epoch, r.opt.overfit_batch ? 0 : r.st->pos.batch);
  r.epoch_start = Clock::now();
  r.epoch_images_before = r.st->pos.images;
  while (r.st->pos.batch < r.st->plan.batches_per_epoch && r.st->pos.step < r.st->plan.total_steps) {
    if (r.opt.overfit_batch) r.loader->start_epoch(0, 0);  // the same first batch, every step
    if (!next_micro_batches(r)) break;
    train_step(r);
    if (!r.diverged.empty()) return;
    show_step(r);
    if (r.opt.stop_after_step > 0 && r.st->pos.step == r.opt.stop_after_step) r.stop_now = true;
    const AfterStep next = after_step(r);
    if (next.stop) return;
    if (next.save && !save_state(r, false)) return;
  }
}

// The pass's time (it counts towards the session's step time) and what follows from where
// the pass stopped.
EpochEnd epoch_end(TrainRun& r) {
  EpochEnd e;
  e.seconds = seconds_since(r.epoch_start);
  r.session_step_seconds += e.seconds;
  e.epoch_done = r.st->pos.batch >= r.st->plan.batches_per_epoch;
  e.finished = r.st->pos.step >= r.st->plan.total_steps || (e.epoch_done && r.st->pos.epoch + 1 >= r.st->plan.epochs);
  e.eval_now = e.finished || (e.epoch_done && (r.st->pos.epoch + 1) % r.cfg.train.eval_every == 0);
  return e;
}

// An evaluation with a non-finite loss (raw or EMA weights) stops the run: its accuracy would
// be meaningless, and the weights behind it are not saved.
bool evaluation_finite(TrainRun& r) {
  const bool ema_ok = !r.st->ema || std::isfinite(r.last_ema_eval.loss);
  if (std::isfinite(r.last_eval.loss) && ema_ok) return true;
  mark_diverged(r, cat("the test loss of the ", std::isfinite(r.last_eval.loss) ? "EMA weights" : "weights", " is ",
                       std::isfinite(r.last_eval.loss) ? r.last_ema_eval.loss : r.last_eval.loss, " after epoch ",
                       r.st->pos.epoch + 1, ", step ", r.st->pos.step));
  return false;
}

// A finished epoch starts the next one with fresh running statistics; a finished run is
// marked done, so resuming it only reports.
void advance_position(TrainRun& r, const EpochEnd& e) {
  if (e.epoch_done) r.st->next_epoch();
  if (e.finished) r.st->pos.done = true;
}

// The epoch's commit: its metrics line (already appended) and last.ckpt, plus best.ckpt when
// this evaluation beats the best so far (the best is recorded first, so both files carry it).
bool commit_epoch(TrainRun& r, bool evaluated) {
  const bool improved = evaluated && r.last_eval.accuracy > r.st->pos.best_accuracy;
  if (improved) {
    r.st->pos.best_accuracy = r.last_eval.accuracy;
    r.st->pos.best_epoch = r.st->pos.epoch;  // epochs completed when it was reached
    r.st->pos.best_step = r.st->pos.step;
  }
  return save_state(r, improved);
}

// A stop request (SIGINT/SIGTERM, or TrainOptions::stop_after_step) ends the session with
// the position reached in last.ckpt, so that --resume continues from the next batch.
TrainResult save_interrupted(TrainRun& r) {
  const bool unsaved = !r.saved || r.saved->step != r.st->pos.step || r.saved->batch != r.st->pos.batch ||
                       r.saved->epoch != r.st->pos.epoch;
  TrainResult result;
  result.run_dir = r.run_dir;
  if (unsaved && !save_state(r, false)) {
    result.status = TrainStatus::Diverged;
    result.summary = {{"status", "diverged"}, {"message", r.diverged}};
    return result;
  }
  const std::string how = r.opt.resume_command.empty() ? "train with --resume --out " + r.run_dir : r.opt.resume_command;
  r.progress.line(cat("interrupted: saved ", r.last_path.string(), " at epoch ", r.st->pos.epoch + 1, ", batch ",
                      r.st->pos.batch, ", step ", r.st->pos.step, "; continue with: ", how));
  result.status = TrainStatus::Interrupted;
  result.summary = {{"status", "interrupted"}, {"resume_command", how}};
  return result;
}

// A run that diverged: the message names the step and the last finite checkpoint.
TrainResult stop_diverged(TrainRun& r) {
  TrainResult result;
  result.run_dir = r.run_dir;
  result.status = TrainStatus::Diverged;
  result.summary = {{"status", "diverged"}, {"message", r.diverged}, {"step", r.st->pos.step}};
  if (r.saved) result.summary["last_checkpoint"] = r.last_path.string();
  return result;
}

}  // namespace

void request_stop() { g_stop = 1; }
bool stop_requested() { return g_stop != 0; }
void clear_stop_request() { g_stop = 0; }

TrainResult train(const Config& cfg, const TrainOptions& opt) {
  const auto wall_start = Clock::now();
  set_num_threads(cfg.train.threads);
  // Exit 2 before anything is written if the CPU lacks bf16. Declared before the run, so
  // the precision stays set until everything the run holds is gone.
  const PrecisionGuard precision(cfg.train.precision);
  // Under an MPI job the other ranks print nothing unless asked (TrainOptions::log_all_ranks).
  TrainRun run{.cfg = cfg,
               .opt = opt,
               .progress = detail::Progress(opt.progress, opt.quiet || (!dist::is_root() && !opt.log_all_ranks)),
               .wall_start = wall_start};

  // A stop request is not cleared here: one that came while the data loaded (or before)
  // ends the session at the first point where it can save. Under an MPI job each phase that
  // can fail on one rank alone (rank 0's run directory, a rank's data files) is agreed on,
  // so every rank stops with the error instead of waiting for the one that failed.
  dist::agree("checking the batch split", [&] { check_batch_splits(cfg); });
  dist::agree("preparing the run directory", [&] { prepare_run_directory(run); });
  if (dist::active()) {
    int64_t fresh = run.from_scratch;
    dist::allreduce_max(&fresh, 1, "sharing the run directory's state");
    run.from_scratch = fresh != 0;
  }
  dist::agree("loading the data", [&] { load_training_data(run); });
  build_train_state(run);
  if (dist::active()) check_ranks_agree(rank_fingerprint(run));
  const bool resumed = opt.resume && !run.from_scratch;
  dist::agree(resumed ? "resuming from last.ckpt" : "starting the run", [&] {
    // Under an MPI job rank 0 reads last.ckpt and broadcast_state() hands it to the others,
    // which need not see the run directory at all.
    if (!resumed)
      start_new_run(run);
    else if (dist::is_root())
      resume_from_checkpoint(run);
  });
  if (dist::active()) {
    broadcast_state(run);
    if (resumed) run.saved = run.st->pos;
    std::vector<Tensor> tensors;
    for (const auto& p : run.st->params) tensors.push_back(p.tensor);
    run.reducer.emplace(std::move(tensors), opt.bucket_bytes);
    run.st->reducer = &*run.reducer;
  }
  if (!opt.step_log.empty() && dist::is_root()) {
    run.step_log = std::make_unique<std::ofstream>(opt.step_log, std::ios::app);
    SOFTLAB_CHECK(run.step_log->good(), "cannot open the step log ", opt.step_log, " for appending");
  }
  share_cores_between_ranks(run);
  plan_batches(run);
  choose_eval_set(run);
  print_run_header(run);
  start_session_clock(run);
  run.last_save = Clock::now();
  leave_busy_cores_alone(run);

  run.st->model->train();
  while (more_to_train(run)) {
    if (stopping(run)) return save_interrupted(run);
    train_epoch(run);
    if (!run.diverged.empty()) return stop_diverged(run);
    if (stopping(run)) return save_interrupted(run);
    const EpochEnd end = epoch_end(run);
    if (end.eval_now) {
      evaluate_model(run);
      if (!evaluation_finite(run)) return stop_diverged(run);
      append_metrics_line(run, end);
      crash_point("metrics_appended");
    }
    advance_position(run, end);
    if (!commit_epoch(run, end.eval_now)) return stop_diverged(run);
  }
  if (!run.have_eval) evaluate_model(run);  // resumed a finished run, or nothing to train: report the current model
  return write_summary(run);
}

}  // namespace softlab
