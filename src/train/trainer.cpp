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
// What the run reports (train/report.cpp).
using detail::append_metrics_line;
using detail::evaluate_model;
using detail::write_summary;

// Derived seeds: one stream per purpose, independent of each other.
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ULL;
  return x ^ (x >> 29);
}
constexpr uint64_t kDataStream = 1, kDropoutStream = 2;

// Keys that may differ between a checkpoint's config and the config of a resumed run.
bool resumable_difference(const std::string& path) {
  return path == "/train/epochs" || path == "/train/threads" || path == "/train/max_steps" ||
         path == "/train/precision" ||  // checkpoints are f32 whatever the precision of the products
         path.rfind("/output", 0) == 0 || path == "/train/eval_batch_size" || path == "/train/max_eval_batches";
}

void check_resume_config(const json& saved, const json& now, const std::string& ckpt) {
  // Resolved again, so keys added to softlab since the checkpoint was written take their
  // defaults: a newer softlab still resumes an older run.
  const json diff = json::diff(resolve_saved_config(saved), now);
  std::string bad;
  for (const auto& d : diff) {
    const std::string p = d.value("path", "");
    if (!resumable_difference(p)) bad += (bad.empty() ? "" : ", ") + p.substr(1);
  }
  SOFTLAB_CHECK(bad.empty(), "--resume: the config differs from the one ", ckpt, " was trained with, at: ", bad,
                " (only train.epochs, train.max_steps, train.threads, train.precision and output may change on resume)");
}

json data_meta(const DataSplit& d, const Normalization& n, const std::string& name) {
  json m = {{"dataset", name}, {"num_classes", d.train.num_classes}, {"mean", n.mean}, {"std", n.std},
            {"class_names", d.train.class_names}, {"train_size", d.train.size}, {"channels", d.train.channels},
            {"height", d.train.height}, {"width", d.train.width}};
  if (d.train.is_sequence()) {
    m["seq_len"] = d.train.seq_len;
    m["vocab"] = d.train.vocab;
  }
  return m;
}

// Images from files, or a synthetic task generated from the run's seed.
DataSplit load_data(const Config& cfg) {
  if (is_synthetic(cfg.data.dataset)) return make_synthetic(synthetic_options(cfg), cfg.seed);
  DataSplit data = load_dataset(cfg.data.dataset, cfg.data.path);
  SOFTLAB_CHECK(data.train.channels == cfg.model.channels && data.train.height == cfg.model.image_size &&
                    data.train.width == cfg.model.image_size,
                "the data set ", cfg.data.dataset, " holds ", data.train.channels, "x", data.train.height, "x",
                data.train.width, " images but model.channels = ", cfg.model.channels, " and model.image_size = ",
                cfg.model.image_size);
  return data;
}

// ---- before the first step ----------------------------------------------------------------

// Never overwrite what a user already has: an existing run needs --resume or another --out.
void prepare_run_directory(TrainRun& r) {
  r.run_dir = r.opt.out_dir.empty() ? r.cfg.output.dir : r.opt.out_dir;
  SOFTLAB_CHECK(!r.run_dir.empty(), "output.dir is empty: say where the run directory goes (or pass --out DIR)");
  r.dir = fs::path(r.run_dir);
  r.last_path = r.dir / "last.ckpt";
  r.best_path = r.dir / "best.ckpt";
  r.metrics_path = r.dir / "metrics.jsonl";
  r.summary_path = r.dir / "summary.json";
  if (!r.opt.resume) {
    for (const auto& f : {"config.json", "last.ckpt", "metrics.jsonl", "summary.json"})
      SOFTLAB_CHECK(!fs::exists(r.dir / f), "run directory ", r.run_dir, " already holds a run (", f,
                    "); pass --resume to continue it, or --out DIR for a new one");
  } else {
    SOFTLAB_CHECK(fs::exists(r.last_path), "--resume: no checkpoint ", r.last_path.string(), " to resume from");
  }
}

// The data (a class-balanced subset with data.subset), and the normalisation computed on
// the training split, which the test split shares.
void load_training_data(TrainRun& r) {
  r.data = load_data(r.cfg);
  if (r.cfg.data.subset > 0) r.data.train = class_balanced_subset(r.data.train, r.cfg.data.subset, r.cfg.seed);
  r.norm = r.data.train.is_sequence() ? Normalization{} : compute_normalization(r.data.train);
  r.meta_data = data_meta(r.data, r.norm, r.cfg.data.dataset);
}

// The model, initialised from the run's seed, and its optimiser. A resumed run overwrites
// both from the checkpoint, but builds them the same way first.
void build_model_and_optimizer(TrainRun& r) {
  r.model = build_model(r.cfg, r.data.train.num_classes, r.data.train.size);
  r.params = r.model->parameters();
  r.optimizer = make_optimizer(r.cfg.train.optimizer, r.params);
}

// --resume: weights, optimiser state, position and EMA from last.ckpt, once the config is
// known to differ from the checkpoint's only where a resumed run may.
void resume_from_checkpoint(TrainRun& r) {
  Checkpoint ck = load_checkpoint(r.last_path.string());
  check_resume_config(ck.meta.at("config"), r.cfg.resolved, r.last_path.string());
  r.model->load_state(with_prefix(ck.tensors, "model."));
  r.optimizer->load_state(with_prefix(ck.tensors, "optim."));
  r.pos = Position::parse(ck.meta.at("position"));
  if (r.cfg.train.ema > 0.0) {
    r.ema.emplace(*r.model, r.cfg.train.ema);
    r.ema->load_state(with_prefix(ck.tensors, "ema."));
  }
}

// A new run: its directory with the resolved config, and an EMA that starts as a copy of
// the initial weights.
void start_new_run(TrainRun& r) {
  fs::create_directories(r.dir);
  write_file_atomic((r.dir / "config.json").string(), r.cfg.resolved.dump(2) + "\n");
  if (r.cfg.train.ema > 0.0) r.ema.emplace(*r.model, r.cfg.train.ema);
}

// The loader (its order and augmentation derive from the run's seed), the batches per
// epoch and the steps of the run. --overfit-batch trains one unshuffled, unaugmented batch.
void plan_batches(TrainRun& r) {
  const Config& cfg = r.cfg;
  BatchLoader::Options lo;
  lo.batch_size = cfg.train.batch_size;
  lo.shuffle = !r.opt.overfit_batch;
  lo.augment = r.opt.overfit_batch ? Augment{} : cfg.data.augment;
  lo.norm = r.norm;
  lo.num_classes = r.data.train.num_classes;
  lo.seed = mix(cfg.seed, kDataStream);
  r.loader.emplace(r.data.train, lo);
  r.batches = r.loader->batches_per_epoch();
  if (cfg.train.max_batches_per_epoch > 0) r.batches = std::min(r.batches, cfg.train.max_batches_per_epoch);
  if (r.opt.overfit_batch) r.batches = 1;
  r.accumulate = r.opt.overfit_batch ? 1 : cfg.train.accumulate;
  r.steps_per_epoch = (r.batches + r.accumulate - 1) / r.accumulate;
  r.epochs = cfg.train.epochs;
  r.total_steps = r.epochs * r.steps_per_epoch;
  if (cfg.train.max_steps > 0) r.total_steps = std::min(r.total_steps, cfg.train.max_steps);
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
  for (const auto& [n, c] : r.model->parameter_counts()) counts += detail::cat(" ", n, " ", c, ";");
  r.progress.line(detail::cat("model ", cfg.model.type, " (attention ", cfg.model.attention.value("type", "?"),
                              ", head ", cfg.model.head.value("type", "?"), "): ", r.model->num_parameters(),
                              " parameters;", counts));
  const json head_info = r.model->head->info();
  if (!head_info.empty()) r.progress.line(detail::cat("head ", cfg.model.head.value("type", "?"), ": ", head_info.dump()));
  if (r.opt.resume)
    r.progress.line(detail::cat("resuming ", r.run_dir, " at epoch ", r.pos.epoch + 1, ", batch ", r.pos.batch,
                                ", step ", r.pos.step));
}

// This session's clocks; train_seconds() adds them to the time of earlier sessions.
void start_session_clock(TrainRun& r) {
  r.session_start = Clock::now();
  r.session_step_seconds = 0.0;
  r.session_first_step = r.pos.step;
  r.seconds_before = r.pos.train_seconds;
}

// Threads that share a core with another process wait for it at every parallel region; in
// a training step (with the loader's prefetch thread beside it) the cores left free are
// faster than all of them, on both reference models (docs/performance.md, "Threads and how
// they wait"). So with the default count, cores that were busy before the run started are
// left to whoever keeps them busy.
void leave_busy_cores_alone(TrainRun& r) {
  if (!(r.cfg.train.threads == 0 && r.opt.other_load_cores >= 0.5 && num_threads() > 1)) return;
  const int busy = static_cast<int>(std::lround(r.opt.other_load_cores));
  const int chosen = std::max(1, num_threads() - std::max(1, busy));
  r.progress.line(detail::cat("other processes keep ", r.opt.other_load_cores, " cores busy: training with ", chosen,
                              chosen == 1 ? " thread" : " threads", " (train.threads or --threads sets the count)"));
  set_num_threads(chosen);
}

// ---- one step -----------------------------------------------------------------------------

// The step's loader batches (micro-batches), then each one's share of the step's scored
// examples: the mean loss of a micro-batch is weighted by its share, so the gradient is that
// of the mean over all of them, as one batch of that size would give. False when the loader
// has no batch left.
bool next_micro_batches(TrainRun& r) {
  r.micro.assign(static_cast<size_t>(std::min(r.accumulate, r.batches - r.pos.batch)), Batch{});
  size_t got = 0;
  while (got < r.micro.size() && r.loader->next(r.micro[got])) ++got;
  if (got == 0) return false;
  r.micro.resize(got);
  r.scored.clear();
  r.step_examples = 0;
  for (const Batch& b : r.micro) {
    r.scored.push_back(r.model->scored_labels(b.images, b.labels));
    r.step_examples += static_cast<int64_t>(r.scored.back().size());
  }
  return true;
}

// Forward and backward of every micro-batch, gradients summed into the parameters, and the
// epoch's running loss and accuracy. Returns the step's first non-finite micro-batch loss,
// else the last, for the divergence check.
float accumulate_gradients(TrainRun& r) {
  Position& pos = r.pos;
  float loss = 0.0f;
  for (size_t j = 0; j < r.micro.size(); ++j) {
    const Batch& b = r.micro[j];
    HeadOutput out = b.targets.defined() ? r.model->forward_soft(b.images, b.targets) : r.model->forward(b.images, b.labels);
    const float micro_loss = out.loss.item();
    if (std::isfinite(loss)) loss = micro_loss;
    const auto n = static_cast<int64_t>(r.scored[j].size());
    if (r.micro.size() == 1)
      out.loss.backward();
    else
      scale(out.loss, static_cast<float>(static_cast<double>(n) / static_cast<double>(r.step_examples))).backward();
    const auto pred = r.model->head->predict(out.scores);
    for (int64_t i = 0; i < n; ++i) pos.correct += pred[static_cast<size_t>(i)] == r.scored[j][static_cast<size_t>(i)];
    pos.loss_sum += static_cast<double>(micro_loss) * static_cast<double>(n);
    pos.seen += n;  // scored targets: one per image, one per target position of a sequence
    pos.images += b.images.shape()[0];
    ++pos.batch;
  }
  return loss;
}

// A non-finite loss or gradient norm stops the run before the optimiser spreads it into
// the weights, so last.ckpt still holds the last good state.
void check_not_diverged(const TrainRun& r, float loss, double gnorm, double lr) {
  if (std::isfinite(loss) && std::isfinite(gnorm)) return;
  throw Error(detail::cat("training diverged: ", std::isfinite(loss) ? "gradient norm" : "loss", " is ",
                          std::isfinite(loss) ? gnorm : loss, " at epoch ", r.pos.epoch + 1, ", step ",
                          r.pos.step + 1, " (lr ", lr, "). ",
                          fs::exists(r.last_path) ? "The last good checkpoint is " + r.last_path.string() +
                                                        " (untouched)."
                                                  : "No checkpoint was written yet.",
                          " Try a lower train.optimizer.lr, warm-up, or gradient clipping."),
              Error::Kind::Internal);
}

// One optimiser step over r.micro: gradients, clipping, the update, the EMA.
void train_step(TrainRun& r) {
  const Config& cfg = r.cfg;
  const double lr = schedule_lr(cfg.train.schedule, cfg.train.optimizer.lr, r.pos.step, r.steps_per_epoch, r.total_steps);
  // One dropout stream per step, drawn on through its micro-batches: the masks of step s
  // depend on (seed, s) only, so a resumed run draws those of an uninterrupted one.
  r.model->dropout_generator().seed(mix(mix(cfg.seed, kDropoutStream), static_cast<uint64_t>(r.pos.step)));
  const float loss = accumulate_gradients(r);
  const double gnorm = clip_grad_norm(r.params, cfg.train.grad_clip);
  check_not_diverged(r, loss, gnorm, lr);
  r.optimizer->step(lr);
  r.optimizer->zero_grad();
  if (r.ema) r.ema->update(r.pos.step + 1);
  r.pos.grad_norm_sum += gnorm;
  ++r.pos.epoch_steps;
  ++r.pos.step;
}

// The live progress line: the epoch's running loss and accuracy, its rate, the time left.
void show_step(TrainRun& r) {
  const Position& pos = r.pos;
  const double es = seconds_since(r.epoch_start);
  const double ips = static_cast<double>(pos.images - r.epoch_images_before) / std::max(es, 1e-9);
  const double eta = static_cast<double>(r.total_steps - pos.step) *
                     static_cast<double>(r.cfg.train.batch_size * r.accumulate) / std::max(ips, 1e-9);
  r.progress.step(pos.epoch + 1, r.epochs, pos.batch, r.batches, pos.loss_sum / static_cast<double>(pos.seen),
                  static_cast<double>(pos.correct) / static_cast<double>(pos.seen), ips, eta);
}

// ---- one epoch ----------------------------------------------------------------------------

bool more_to_train(const TrainRun& r) { return !r.pos.done && r.pos.epoch < r.epochs && r.pos.step < r.total_steps; }

// The current epoch from pos.batch on: steps until its batches are done, the step budget is
// spent or a stop is requested. The loader derives the epoch's order from (seed, epoch) and
// starts at pos.batch, so a resumed run sees the batches of an uninterrupted one.
void train_epoch(TrainRun& r) {
  r.loader->start_epoch(r.opt.overfit_batch ? 0 : r.pos.epoch, r.opt.overfit_batch ? 0 : r.pos.batch);
  r.epoch_start = Clock::now();
  r.epoch_images_before = r.pos.images;
  while (r.pos.batch < r.batches && r.pos.step < r.total_steps) {
    if (r.opt.overfit_batch) r.loader->start_epoch(0, 0);  // the same first batch, every step
    if (!next_micro_batches(r)) break;
    train_step(r);
    show_step(r);
    if (r.opt.stop_after_step > 0 && r.pos.step == r.opt.stop_after_step) request_stop();
    if (stop_requested()) break;
  }
}

// The pass's time (it counts towards the session's step time) and what follows from where
// the pass stopped.
EpochEnd epoch_end(TrainRun& r) {
  EpochEnd e;
  e.seconds = seconds_since(r.epoch_start);
  r.session_step_seconds += e.seconds;
  e.epoch_done = r.pos.batch >= r.batches;
  e.finished = r.pos.step >= r.total_steps || (e.epoch_done && r.pos.epoch + 1 >= r.epochs);
  e.eval_now = e.finished || (e.epoch_done && (r.pos.epoch + 1) % r.cfg.train.eval_every == 0);
  return e;
}

// ---- position and checkpoints -------------------------------------------------------------

// A finished epoch starts the next one with fresh running statistics; a finished run is
// marked done, so resuming it only reports.
void advance_position(TrainRun& r, const EpochEnd& e) {
  Position& pos = r.pos;
  if (e.epoch_done) {
    ++pos.epoch;
    pos.batch = 0;
    pos.loss_sum = 0.0;
    pos.correct = pos.seen = pos.epoch_steps = 0;
    pos.grad_norm_sum = 0.0;
  }
  if (e.finished) pos.done = true;
  pos.train_seconds = train_seconds(r);
}

// Weights, optimiser state, EMA, position, resolved config and data description in one
// file, written atomically (save_checkpoint: temporary file, fsync, rename).
void write_checkpoint(const TrainRun& r, const fs::path& path) {
  Checkpoint ck;
  ck.meta = {{"config", r.cfg.resolved}, {"position", r.pos.as_json()}, {"data", r.meta_data},
             {"softlab_version", version()}};
  for (auto& [n, t] : r.model->state()) ck.tensors.emplace_back("model." + n, t);
  for (auto& [n, t] : r.optimizer->state()) ck.tensors.emplace_back("optim." + n, t);
  if (r.ema)
    for (auto& [n, t] : r.ema->state()) ck.tensors.emplace_back("ema." + n, t);
  save_checkpoint(path.string(), ck);
}

// last.ckpt after every pass; best.ckpt when this evaluation beats the best so far (the
// best is recorded first, so both files carry it).
void save_checkpoints(TrainRun& r, bool evaluated) {
  const bool improved = evaluated && r.last_eval.accuracy > r.pos.best_accuracy;
  if (improved) {
    r.pos.best_accuracy = r.last_eval.accuracy;
    r.pos.best_epoch = r.pos.epoch;  // epochs completed when it was reached
  }
  write_checkpoint(r, r.last_path);
  if (improved) write_checkpoint(r, r.best_path);
}

// A stop request (SIGINT/SIGTERM, or TrainOptions::stop_after_step) ends the session with
// the position reached in last.ckpt, so that --resume continues from the next batch.
TrainResult save_interrupted(TrainRun& r) {
  r.pos.train_seconds = train_seconds(r);
  write_checkpoint(r, r.last_path);
  r.progress.line(detail::cat("interrupted: saved ", r.last_path.string(), " at epoch ", r.pos.epoch + 1, ", batch ",
                              r.pos.batch, "; continue with --resume"));
  TrainResult result;
  result.run_dir = r.run_dir;
  result.status = TrainStatus::Interrupted;
  result.summary = {{"status", "interrupted"}};
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
  TrainRun run{.cfg = cfg, .opt = opt, .progress = detail::Progress(opt.progress, opt.quiet), .wall_start = wall_start};

  prepare_run_directory(run);
  load_training_data(run);
  build_model_and_optimizer(run);
  if (opt.resume)
    resume_from_checkpoint(run);
  else
    start_new_run(run);
  plan_batches(run);
  choose_eval_set(run);
  print_run_header(run);
  start_session_clock(run);
  leave_busy_cores_alone(run);

  run.model->train();
  clear_stop_request();
  while (more_to_train(run)) {
    train_epoch(run);
    if (stop_requested()) return save_interrupted(run);
    const EpochEnd end = epoch_end(run);
    if (end.eval_now) {
      evaluate_model(run);
      append_metrics_line(run, end);
    }
    advance_position(run, end);
    save_checkpoints(run, end.eval_now);
  }
  if (!run.have_eval) evaluate_model(run);  // resumed a finished run, or nothing to train: report the current model
  return write_summary(run);
}

}  // namespace softlab
