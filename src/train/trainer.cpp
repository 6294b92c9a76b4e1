// The training loop: data, model, optimiser, schedule, evaluation, checkpoints, metrics.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <optional>
#include <vector>

#include <sys/resource.h>

#include "softlab/autograd.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"
#include "softlab/optim.hpp"
#include "softlab/parallel.hpp"
#include "softlab/precision.hpp"
#include "softlab/train.hpp"
#include "softlab/version.hpp"
#include "train/ema.hpp"
#include "train/progress.hpp"

namespace softlab {

namespace fs = std::filesystem;

namespace {
volatile std::sig_atomic_t g_stop = 0;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Derived seeds: one stream per purpose, independent of each other.
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ULL;
  return x ^ (x >> 29);
}
constexpr uint64_t kDataStream = 1, kDropoutStream = 2;

// The position of a run and the running statistics of the current epoch: everything a
// resumed run needs beyond weights and optimiser state.
struct Position {
  int64_t epoch = 0;       // current epoch (0-based)
  int64_t batch = 0;       // next batch within the epoch
  int64_t step = 0;        // global optimiser steps done
  double loss_sum = 0.0;   // over this epoch's examples
  int64_t correct = 0, seen = 0;
  double grad_norm_sum = 0.0;
  int64_t epoch_steps = 0;
  double best_accuracy = -1.0;
  int64_t best_epoch = -1;
  double train_seconds = 0.0;  // accumulated over sessions
  int64_t images = 0;          // trained images, all sessions
  bool done = false;

  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Position, epoch, batch, step, loss_sum, correct, seen, grad_norm_sum, epoch_steps,
                                 best_accuracy, best_epoch, train_seconds, images, done)
  // The macro speaks nlohmann::json; checkpoints keep softlab::json (ordered).
  json as_json() const { return json::parse(nlohmann::json(*this).dump()); }
  static Position parse(const json& j) { return nlohmann::json::parse(j.dump()).get<Position>(); }
};

// Keys that may differ between a checkpoint's config and the config of a resumed run.
bool resumable_difference(const std::string& path) {
  return path == "/train/epochs" || path == "/train/threads" || path == "/train/max_steps" ||
         path == "/train/precision" ||  // checkpoints are f32 whatever the precision of the products
         path.rfind("/output", 0) == 0 || path == "/train/eval_batch_size" || path == "/train/max_eval_batches";
}

void check_resume_config(const json& saved, const json& now, const std::string& ckpt) {
  // Resolved again, so keys added to softlab since the checkpoint was written take their
  // defaults: a newer softlab still resumes an older run.
  const json diff = json::diff(resolve_config(saved), now);
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

void request_stop() { g_stop = 1; }
bool stop_requested() { return g_stop != 0; }
void clear_stop_request() { g_stop = 0; }

TrainResult train(const Config& cfg, const TrainOptions& opt) {
  const auto wall_start = Clock::now();
  set_num_threads(cfg.train.threads);
  const PrecisionGuard precision(cfg.train.precision);  // exit 2 before anything is written if the CPU lacks bf16
  const std::string run_dir = opt.out_dir.empty() ? cfg.output.dir : opt.out_dir;
  SOFTLAB_CHECK(!run_dir.empty(), "output.dir is empty: say where the run directory goes (or pass --out DIR)");
  const fs::path dir(run_dir);
  const fs::path last_path = dir / "last.ckpt", best_path = dir / "best.ckpt";
  const fs::path metrics_path = dir / "metrics.jsonl", summary_path = dir / "summary.json";

  // Never overwrite what a user already has: an existing run needs --resume or another --out.
  if (!opt.resume) {
    for (const auto& f : {"config.json", "last.ckpt", "metrics.jsonl", "summary.json"})
      SOFTLAB_CHECK(!fs::exists(dir / f), "run directory ", run_dir, " already holds a run (", f,
                    "); pass --resume to continue it, or --out DIR for a new one");
  } else {
    SOFTLAB_CHECK(fs::exists(last_path), "--resume: no checkpoint ", last_path.string(), " to resume from");
  }

  detail::Progress progress(opt.progress, opt.quiet);
  DataSplit data = load_data(cfg);
  if (cfg.data.subset > 0) data.train = class_balanced_subset(data.train, cfg.data.subset, cfg.seed);
  const Normalization norm = data.train.is_sequence() ? Normalization{} : compute_normalization(data.train);
  auto model = build_model(cfg, data.train.num_classes, data.train.size);
  const auto params = model->parameters();
  auto optimizer = make_optimizer(cfg.train.optimizer, params);
  std::optional<detail::WeightEma> ema;  // train.ema > 0: the averaged weights beside the raw ones

  Position pos;
  if (opt.resume) {
    Checkpoint ck = load_checkpoint(last_path.string());
    check_resume_config(ck.meta.at("config"), cfg.resolved, last_path.string());
    model->load_state(with_prefix(ck.tensors, "model."));
    optimizer->load_state(with_prefix(ck.tensors, "optim."));
    pos = Position::parse(ck.meta.at("position"));
    if (cfg.train.ema > 0.0) {
      ema.emplace(*model, cfg.train.ema);
      ema->load_state(with_prefix(ck.tensors, "ema."));
    }
  } else {
    fs::create_directories(dir);
    write_file_atomic((dir / "config.json").string(), cfg.resolved.dump(2) + "\n");
    if (cfg.train.ema > 0.0) ema.emplace(*model, cfg.train.ema);
  }

  BatchLoader::Options lo;
  lo.batch_size = cfg.train.batch_size;
  lo.shuffle = !opt.overfit_batch;
  lo.augment = opt.overfit_batch ? Augment{} : cfg.data.augment;
  lo.norm = norm;
  lo.num_classes = data.train.num_classes;
  lo.seed = mix(cfg.seed, kDataStream);
  BatchLoader loader(data.train, lo);
  int64_t batches = loader.batches_per_epoch();
  if (cfg.train.max_batches_per_epoch > 0) batches = std::min(batches, cfg.train.max_batches_per_epoch);
  if (opt.overfit_batch) batches = 1;
  // An optimiser step takes `accumulate` loader batches (fewer at the end of an epoch).
  const int64_t accumulate = opt.overfit_batch ? 1 : cfg.train.accumulate;
  const int64_t steps_per_epoch = (batches + accumulate - 1) / accumulate;
  const int64_t epochs = cfg.train.epochs;
  int64_t total_steps = epochs * steps_per_epoch;
  if (cfg.train.max_steps > 0) total_steps = std::min(total_steps, cfg.train.max_steps);

  // The evaluation set: the test split, or the one training batch when overfitting.
  Dataset overfit;
  if (opt.overfit_batch) {
    overfit = data.train;
    const int64_t n = std::min<int64_t>(cfg.train.batch_size, data.train.size);
    overfit.size = n;
    overfit.images.resize(static_cast<size_t>(n * data.train.image_bytes()));
    overfit.labels.resize(static_cast<size_t>(overfit.labels.empty() ? 0 : n));
    overfit.tokens.resize(static_cast<size_t>(n * data.train.seq_len));
    overfit.targets.resize(static_cast<size_t>(n * data.train.seq_len));
    if (!overfit.target_density.empty())
      overfit.target_density.resize(static_cast<size_t>(n * data.train.num_classes));
  }
  const Dataset& eval_set = opt.overfit_batch ? overfit : data.test;

  const json meta_data = data_meta(data, norm, cfg.data.dataset);
  auto save = [&](const fs::path& path) {
    Checkpoint ck;
    ck.meta = {{"config", cfg.resolved}, {"position", pos.as_json()}, {"data", meta_data},
               {"softlab_version", version()}};
    for (auto& [n, t] : model->state()) ck.tensors.emplace_back("model." + n, t);
    for (auto& [n, t] : optimizer->state()) ck.tensors.emplace_back("optim." + n, t);
    if (ema)
      for (auto& [n, t] : ema->state()) ck.tensors.emplace_back("ema." + n, t);
    save_checkpoint(path.string(), ck);
  };

  progress.line(detail::cat("softlab ", version(), " | ", cfg.name, " | threads ", num_threads(), " | ",
                            precision_name(cfg.train.precision),
                            opt.openmp_wait.empty() ? "" : " (OpenMP waiting: " + opt.openmp_wait + ")", " | ",
                            cfg.data.dataset, ": ", data.train.size, " train, ", data.test.size, " test (", data.dir,
                            ")"));
  {
    std::string counts;
    for (const auto& [n, c] : model->parameter_counts()) counts += detail::cat(" ", n, " ", c, ";");
    progress.line(detail::cat("model ", cfg.model.type, " (attention ", cfg.model.attention.value("type", "?"),
                              ", head ", cfg.model.head.value("type", "?"), "): ", model->num_parameters(),
                              " parameters;", counts));
    const json head_info = model->head->info();
    if (!head_info.empty()) progress.line(detail::cat("head ", cfg.model.head.value("type", "?"), ": ", head_info.dump()));
  }
  if (opt.resume)
    progress.line(detail::cat("resuming ", run_dir, " at epoch ", pos.epoch + 1, ", batch ", pos.batch, ", step ",
                              pos.step));

  TrainResult result;
  result.run_dir = run_dir;
  EvalResult last_eval{}, last_ema_eval{};
  json last_by_length = json::object();
  bool have_eval = false;
  auto run_eval = [&] {
    last_eval = evaluate(*model, eval_set, norm, cfg.train.eval_batch_size, cfg.train.max_eval_batches);
    if (!opt.overfit_batch)
      last_by_length = evaluate_by_length(*model, data, last_eval, cfg.train.eval_batch_size, cfg.train.max_eval_batches);
    if (ema) {
      detail::WeightEma::Swap averaged(*ema);
      last_ema_eval = evaluate(*model, eval_set, norm, cfg.train.eval_batch_size, cfg.train.max_eval_batches);
    }
  };
  auto session_start = Clock::now();
  // Training time without evaluation, this session: the honest cost of a step.
  double session_step_seconds = 0.0;
  const int64_t session_first_step = pos.step;
  const double seconds_before = pos.train_seconds;
  auto train_seconds = [&] { return seconds_before + seconds_since(session_start); };
  // Threads that share a core with another process wait for it at every parallel region;
  // in a training step (with the loader's prefetch thread beside it) the cores left free
  // are faster than all of them, on both reference models (docs/performance.md, "Threads
  // and how they wait"). So with the default count, cores that were busy before the run
  // started are left to whoever keeps them busy.
  if (cfg.train.threads == 0 && opt.other_load_cores >= 0.5 && num_threads() > 1) {
    const int busy = static_cast<int>(std::lround(opt.other_load_cores));
    const int chosen = std::max(1, num_threads() - std::max(1, busy));
    progress.line(detail::cat("other processes keep ", opt.other_load_cores, " cores busy: training with ", chosen,
                              chosen == 1 ? " thread" : " threads", " (train.threads or --threads sets the count)"));
    set_num_threads(chosen);
  }

  model->train();
  clear_stop_request();
  while (!pos.done && pos.epoch < epochs && pos.step < total_steps) {
    loader.start_epoch(opt.overfit_batch ? 0 : pos.epoch, opt.overfit_batch ? 0 : pos.batch);
    const auto epoch_start = Clock::now();
    const int64_t epoch_images_before = pos.images;  // examples (images or sequences), for the rate
    std::vector<Batch> micro;
    while (pos.batch < batches && pos.step < total_steps) {
      if (opt.overfit_batch) loader.start_epoch(0, 0);
      // The step's batches, then each one's share of the step's scored examples: the mean
      // loss of a micro-batch is weighted by its share, so the gradient is that of the mean
      // over all of them, as one batch of that size would give.
      micro.assign(static_cast<size_t>(std::min(accumulate, batches - pos.batch)), Batch{});
      size_t got = 0;
      while (got < micro.size() && loader.next(micro[got])) ++got;
      if (got == 0) break;
      micro.resize(got);
      std::vector<std::vector<int32_t>> scored;
      int64_t step_examples = 0;
      for (const Batch& b : micro) {
        scored.push_back(model->scored_labels(b.images, b.labels));
        step_examples += static_cast<int64_t>(scored.back().size());
      }
      const double lr = schedule_lr(cfg.train.schedule, cfg.train.optimizer.lr, pos.step, steps_per_epoch, total_steps);
      // One dropout stream per step, drawn on through its micro-batches.
      model->dropout_generator().seed(mix(mix(cfg.seed, kDropoutStream), static_cast<uint64_t>(pos.step)));
      float loss = 0.0f;  // the step's first non-finite micro-batch loss, else the last
      for (size_t j = 0; j < micro.size(); ++j) {
        const Batch& b = micro[j];
        HeadOutput out = b.targets.defined() ? model->forward_soft(b.images, b.targets) : model->forward(b.images, b.labels);
        const float micro_loss = out.loss.item();
        if (std::isfinite(loss)) loss = micro_loss;
        const auto n = static_cast<int64_t>(scored[j].size());
        if (micro.size() == 1)
          out.loss.backward();
        else
          scale(out.loss, static_cast<float>(static_cast<double>(n) / static_cast<double>(step_examples))).backward();
        const auto pred = model->head->predict(out.scores);
        for (int64_t i = 0; i < n; ++i)
          pos.correct += pred[static_cast<size_t>(i)] == scored[j][static_cast<size_t>(i)];
        pos.loss_sum += static_cast<double>(micro_loss) * static_cast<double>(n);
        pos.seen += n;  // scored targets: one per image, one per target position of a sequence
        pos.images += b.images.shape()[0];
        ++pos.batch;
      }
      const double gnorm = clip_grad_norm(params, cfg.train.grad_clip);
      if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
        throw Error(detail::cat("training diverged: ", std::isfinite(loss) ? "gradient norm" : "loss", " is ",
                                std::isfinite(loss) ? gnorm : loss, " at epoch ", pos.epoch + 1, ", step ",
                                pos.step + 1, " (lr ", lr, "). ",
                                fs::exists(last_path) ? "The last good checkpoint is " + last_path.string() +
                                                            " (untouched)."
                                                      : "No checkpoint was written yet.",
                                " Try a lower train.optimizer.lr, warm-up, or gradient clipping."),
                    Error::Kind::Internal);
      }
      optimizer->step(lr);
      optimizer->zero_grad();
      if (ema) ema->update(pos.step + 1);
      pos.grad_norm_sum += gnorm;
      ++pos.epoch_steps;
      ++pos.step;
      const double es = seconds_since(epoch_start);
      const double ips = static_cast<double>(pos.images - epoch_images_before) / std::max(es, 1e-9);
      const double eta = static_cast<double>(total_steps - pos.step) *
                         static_cast<double>(cfg.train.batch_size * accumulate) / std::max(ips, 1e-9);
      progress.step(pos.epoch + 1, epochs, pos.batch, batches, pos.loss_sum / static_cast<double>(pos.seen),
                    static_cast<double>(pos.correct) / static_cast<double>(pos.seen), ips, eta);
      if (opt.stop_after_step > 0 && pos.step == opt.stop_after_step) request_stop();
      if (stop_requested()) break;
    }
    if (stop_requested()) {
      pos.train_seconds = train_seconds();
      save(last_path);
      progress.line(detail::cat("interrupted: saved ", last_path.string(), " at epoch ", pos.epoch + 1, ", batch ",
                                pos.batch, "; continue with --resume"));
      result.status = TrainStatus::Interrupted;
      result.summary = {{"status", "interrupted"}};
      return result;
    }
    const double epoch_seconds = seconds_since(epoch_start);
    session_step_seconds += epoch_seconds;
    const bool epoch_done = pos.batch >= batches;
    const bool finished = pos.step >= total_steps || (epoch_done && pos.epoch + 1 >= epochs);
    const bool eval_now = finished || (epoch_done && (pos.epoch + 1) % cfg.train.eval_every == 0);
    if (eval_now) {
      run_eval();
      have_eval = true;
      json m = {{"epoch", pos.epoch + 1},
                {"step", pos.step},
                {"lr", schedule_lr(cfg.train.schedule, cfg.train.optimizer.lr, std::max<int64_t>(pos.step - 1, 0),
                                   steps_per_epoch, total_steps)},
                {"train_loss", pos.seen ? pos.loss_sum / static_cast<double>(pos.seen) : 0.0},
                {"train_accuracy", pos.seen ? static_cast<double>(pos.correct) / static_cast<double>(pos.seen) : 0.0},
                {"test_loss", last_eval.loss},
                {"test_accuracy", last_eval.accuracy},
                {"test_top3_accuracy", last_eval.top3},
                {"test_top5_accuracy", last_eval.top5},
                {"grad_norm", pos.epoch_steps ? pos.grad_norm_sum / static_cast<double>(pos.epoch_steps) : 0.0},
                {"images_per_sec", static_cast<double>(pos.images - epoch_images_before) / std::max(epoch_seconds, 1e-9)},
                {"epoch_seconds", epoch_seconds},
                {"seconds", train_seconds()},
                {"wall_time", seconds_since(wall_start)}};
      for (const auto& [k, v] : last_eval.extra) m["test_" + k] = v;
      if (!last_by_length.empty()) m["by_length"] = last_by_length;
      if (ema) {
        m["ema_test_loss"] = last_ema_eval.loss;
        m["ema_test_accuracy"] = last_ema_eval.accuracy;
      }
      {
        std::ofstream mf(metrics_path, std::ios::app);
        mf << m.dump() << "\n";
        SOFTLAB_CHECK(mf.good(), "cannot append to ", metrics_path.string());
      }
      progress.line(detail::cat("epoch ", pos.epoch + 1, "/", epochs, "  train loss ",
                                fmt("%.4f", m["train_loss"].get<double>()), " acc ",
                                fmt("%.2f%%", 100.0 * m["train_accuracy"].get<double>()), "  test loss ",
                                fmt("%.4f", last_eval.loss), " acc ", fmt("%.2f%%", 100.0 * last_eval.accuracy),
                                ema ? "  ema acc " + fmt("%.2f%%", 100.0 * last_ema_eval.accuracy) : std::string(), "  ",
                                fmt("%.0f img/s", m["images_per_sec"].get<double>()), "  ",
                                detail::format_duration(epoch_seconds)));
    }
    if (epoch_done) {
      ++pos.epoch;
      pos.batch = 0;
      pos.loss_sum = 0.0;
      pos.correct = pos.seen = pos.epoch_steps = 0;
      pos.grad_norm_sum = 0.0;
    }
    if (finished) pos.done = true;
    pos.train_seconds = train_seconds();
    const bool improved = eval_now && last_eval.accuracy > pos.best_accuracy;
    if (improved) {
      pos.best_accuracy = last_eval.accuracy;
      pos.best_epoch = pos.epoch;  // epochs completed when it was reached
    }
    save(last_path);
    if (improved) save(best_path);
  }

  if (!have_eval) {  // resumed a finished run, or nothing to train: report the current model
    run_eval();
  }
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
                  {"params", model->num_parameters()},
                  {"tokens", model->tokens()},
                  {"train_seconds", secs},
                  {"seconds_per_step", pos.step > session_first_step
                                           ? session_step_seconds / static_cast<double>(pos.step - session_first_step)
                                           : 0.0},
                  {"peak_rss_mb", peak_rss_mb()},
                  {"train_images_per_sec", secs > 0 ? static_cast<double>(pos.images) / secs : 0.0},
                  {"attention", cfg.model.attention},
                  {"head", cfg.model.head},
                  {"seed", cfg.seed},
                  {"threads", num_threads()},
                  {"precision", precision_name(cfg.train.precision)},
                  {"openmp_wait", opt.openmp_wait},
                  {"version", version()},
                  {"build", build_info()}};
  for (const auto& [k, v] : last_eval.extra) summary["test_" + k] = v;
  if (!last_by_length.empty()) summary["test_by_length"] = last_by_length;
  if (ema) {
    summary["ema_test_accuracy"] = last_ema_eval.accuracy;
    summary["ema_test_loss"] = last_ema_eval.loss;
  }
  json per_module = json::object();
  for (const auto& [n, c] : model->parameter_counts()) per_module[n] = c;
  summary["params_per_module"] = per_module;
  if (const json head_info = model->head->info(); !head_info.empty()) summary["head_info"] = head_info;
  write_file_atomic(summary_path.string(), summary.dump(2) + "\n");
  progress.line(detail::cat("test accuracy ", fmt("%.2f%%", 100.0 * last_eval.accuracy), " (best ",
                            fmt("%.2f%%", 100.0 * summary["best_test_accuracy"].get<double>()), "), ",
                            detail::format_duration(secs), " of training; run directory ", run_dir));
  result.summary = summary;
  return result;
}

}  // namespace softlab
