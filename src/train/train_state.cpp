// One training step and the state around it (softlab/train_state.hpp): what softlab train's
// loop (trainer.cpp) and an embedding program's loop both run.
#include "softlab/train_state.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "softlab/distributed.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"
#include "softlab/version.hpp"

namespace softlab {

namespace {
// Derived seeds: one stream per purpose, independent of each other.
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ULL;
  return x ^ (x >> 29);
}
constexpr uint64_t kDataStream = 1, kDropoutStream = 2;

json describe_data(const DataSplit& d, const Normalization& n, const std::string& name) {
  json m = {{"dataset", name}, {"num_classes", d.train.num_classes}, {"mean", n.mean}, {"std", n.std},
            {"class_names", d.train.class_names}, {"train_size", d.train.size}, {"channels", d.train.channels},
            {"height", d.train.height}, {"width", d.train.width}};
  if (d.train.is_sequence()) {
    m["seq_len"] = d.train.seq_len;
    m["vocab"] = d.train.vocab;
  }
  return m;
}

// RunPosition <-> JSON, through nlohmann::json (the macro's type); checkpoints keep
// softlab::json (ordered).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RunPosition, epoch, batch, step, loss_sum, correct, seen,
                                                grad_norm_sum, epoch_steps, best_accuracy, best_epoch, best_step,
                                                train_seconds, images, done, metrics_bytes, skipped_steps,
                                                epoch_skipped)
}  // namespace

json RunPosition::to_json() const {
  nlohmann::json j;
  softlab::to_json(j, *this);
  return json::parse(j.dump());
}

RunPosition RunPosition::from_json(const json& j) {
  try {
    RunPosition p;
    softlab::from_json(nlohmann::json::parse(j.dump()), p);
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw Error(detail::cat("metadata key 'position' is not a run position (", e.what(), ")"));
  }
}

StepPlan plan_steps(const Config& cfg, int64_t train_size) {
  const auto& t = cfg.train;
  StepPlan p;
  p.batches_per_epoch = (train_size + t.batch_size - 1) / t.batch_size;  // the loader keeps the short last batch
  if (t.max_batches_per_epoch > 0) p.batches_per_epoch = std::min(p.batches_per_epoch, t.max_batches_per_epoch);
  p.accumulate = t.accumulate;
  p.steps_per_epoch = (p.batches_per_epoch + p.accumulate - 1) / p.accumulate;
  p.epochs = t.epochs;
  p.total_steps = p.epochs * p.steps_per_epoch;
  if (t.max_steps > 0) p.total_steps = std::min(p.total_steps, t.max_steps);
  return p;
}

TrainingData load_training_data(const Config& cfg) {
  TrainingData td;
  if (is_synthetic(cfg.data.dataset)) {
    td.data = make_synthetic(synthetic_options(cfg), cfg.seed);
  } else {
    td.data = load_dataset(cfg.data.dataset, cfg.data.path);
    const Dataset& tr = td.data.train;
    SOFTLAB_CHECK(tr.channels == cfg.model.channels && tr.height == cfg.model.image_size &&
                      tr.width == cfg.model.image_size,
                  "the data set ", cfg.data.dataset, " holds ", tr.channels, "x", tr.height, "x", tr.width,
                  " images but model.channels = ", cfg.model.channels, " and model.image_size = ",
                  cfg.model.image_size);
  }
  if (cfg.data.subset > 0) td.data.train = class_balanced_subset(td.data.train, cfg.data.subset, cfg.seed);
  td.norm = td.data.train.is_sequence() ? Normalization{} : compute_normalization(td.data.train);
  return td;
}

BatchLoader::Options train_loader_options(const Config& cfg, const Normalization& norm, int64_t num_classes) {
  BatchLoader::Options lo;
  lo.batch_size = cfg.train.batch_size;
  lo.shuffle = true;
  lo.augment = cfg.data.augment;
  lo.norm = norm;
  lo.num_classes = num_classes;
  lo.seed = mix(cfg.seed, kDataStream);
  return lo;
}

TrainState::TrainState(const Config& c, const DataSplit& data, const Normalization& n)
    : TrainState(c, data.train.num_classes, data.train.size, n, describe_data(data, n, c.data.dataset)) {}

TrainState::TrainState(const Config& c, int64_t num_classes, int64_t train_size, Normalization n, json meta)
    : cfg(c), norm(std::move(n)), data_meta(std::move(meta)) {
  model = build_model(cfg, num_classes, train_size);
  params = model->parameters();
  optimizer = make_optimizer(cfg.train.optimizer, params);
  if (cfg.train.ema > 0.0) ema.emplace(*model, cfg.train.ema);
  plan = plan_steps(cfg, train_size);
  model->train();
}

TrainState TrainState::load(const std::string& path) {
  const Checkpoint ck = load_checkpoint(path);
  // load_model checks the saved config and the data description, and names the file.
  const LoadedModel m = load_model(ck, path);
  TrainState st(m.config, m.num_classes, m.train_size, m.norm, checkpoint_meta(ck, "data", path));
  st.restore(ck, path);
  return st;
}

void TrainState::restore(const Checkpoint& ck, const std::string& path) {
  try {
    model->load_state(with_prefix(ck.tensors, "model."));
    optimizer->load_state(with_prefix(ck.tensors, "optim."));
    pos = RunPosition::from_json(checkpoint_meta(ck, "position", path));
    if (ema) ema->load_state(with_prefix(ck.tensors, "ema."));
  } catch (const Error& e) {
    if (std::string(e.what()).find(path) != std::string::npos) throw;
    throw Error(detail::cat(path, ": ", e.what()), e.kind());
  }
}

Checkpoint TrainState::checkpoint() const {
  Checkpoint ck;
  ck.meta = {{"config", cfg.resolved}, {"position", pos.to_json()}, {"data", data_meta},
             {"softlab_version", version()}};
  for (auto& [n, t] : model->state()) ck.tensors.emplace_back("model." + n, t);
  for (auto& [n, t] : optimizer->state()) ck.tensors.emplace_back("optim." + n, t);
  if (ema)
    for (auto& [n, t] : ema->state()) ck.tensors.emplace_back("ema." + n, t);
  return ck;
}

void TrainState::save(const std::string& path) const { save_checkpoint(path, checkpoint()); }

double TrainState::lr_at(int64_t step) const {
  return schedule_lr(cfg.train.schedule, cfg.train.optimizer.lr, step, plan.steps_per_epoch, plan.total_steps);
}

uint64_t TrainState::dropout_seed(int64_t step) const {
  uint64_t s = mix(mix(cfg.seed, kDropoutStream), static_cast<uint64_t>(step));
  // Under a data-parallel job each rank draws its own masks: with dropout or drop path the
  // masks, unlike the data, depend on the number of ranks.
  if (reducer) s = mix(s, static_cast<uint64_t>(dist::rank()));
  return s;
}

StepResult TrainState::step(std::span<const Batch> micro) {
  SOFTLAB_CHECK(!micro.empty(), "TrainState::step: no batch");
  StepResult st;
  st.lr = lr_at(pos.step);
  // One dropout stream per step, drawn on through its micro-batches.
  model->dropout_generator().seed(dropout_seed(pos.step));

  // Each micro-batch's mean loss is weighted by its share of the step's scored targets, so the
  // gradient is that of the mean over all of them, as one batch of that size would give.
  // Under a data-parallel job the share is of the global step, over every rank.
  std::vector<std::vector<int32_t>> scored;
  int64_t examples = 0;
  for (const Batch& b : micro) {
    scored.push_back(model->scored_labels(b.images, b.labels));
    examples += static_cast<int64_t>(scored.back().size());
  }
  if (reducer) dist::allreduce_sum(&examples, 1, "the step's example count");

  float loss = 0.0f;  // the first non-finite micro-batch loss, else the last
  double loss_sum = 0.0;
  for (size_t j = 0; j < micro.size(); ++j) {
    const Batch& b = micro[j];
    const auto n = static_cast<int64_t>(scored[j].size());
    // The last micro-batch's backward runs inside the reducer, which sums the ranks'
    // gradients while it goes.
    const bool reduce = reducer && j + 1 == micro.size();
    if (reduce) reducer->begin();
    if (b.images.shape()[0] > 0) {  // a rank's share of a short last batch may be empty
      HeadOutput out = b.targets.defined() ? model->forward_soft(b.images, b.targets) : model->forward(b.images, b.labels);
      const float micro_loss = out.loss.item();
      if (std::isfinite(loss)) loss = micro_loss;
      if (micro.size() == 1 && !reducer)
        out.loss.backward();
      else
        scale(out.loss, static_cast<float>(static_cast<double>(n) / static_cast<double>(examples))).backward();
      const auto pred = model->head->predict(out.scores);
      for (int64_t i = 0; i < n; ++i) st.correct += pred[static_cast<size_t>(i)] == scored[j][static_cast<size_t>(i)];
      loss_sum += static_cast<double>(micro_loss) * static_cast<double>(n);
    }
    if (reduce) reducer->finish();
    st.seen += n;  // scored targets: one per image, one per target position of a sequence
    st.images += b.images.shape()[0];
    ++st.batches;
  }
  if (reducer) {
    double sums[5] = {loss_sum, static_cast<double>(st.correct), static_cast<double>(st.seen),
                      static_cast<double>(st.images), std::isfinite(loss) ? 0.0 : 1.0};
    dist::allreduce_sum(sums, 5, "the step's loss and accuracy");
    loss_sum = sums[0];
    st.correct = static_cast<int64_t>(sums[1]);
    st.seen = static_cast<int64_t>(sums[2]);
    st.images = static_cast<int64_t>(sums[3]);
    loss = sums[4] > 0.0 ? std::numeric_limits<float>::quiet_NaN()
                         : static_cast<float>(loss_sum / static_cast<double>(std::max<int64_t>(st.seen, 1)));
  }
  if (poison_step == pos.step + 1) loss = std::numeric_limits<float>::quiet_NaN();
  st.loss = std::isfinite(loss) ? loss_sum / static_cast<double>(std::max<int64_t>(st.seen, 1)) : double{loss};

  const ClipResult clip = clip_gradients(params, cfg.train.grad_clip);
  st.grad_norm = clip.norm;
  st.clip_scale = clip.scale;
  pos.batch += st.batches;
  pos.images += st.images;
  st.finite = std::isfinite(st.loss) && std::isfinite(st.grad_norm);
  if (!st.finite) {
    // Nothing non-finite reaches the weights; the run either skips the step or stops.
    st.applied = false;
    optimizer->zero_grad();
    if (cfg.train.skip_nonfinite_steps) {
      ++pos.skipped_steps;
      ++pos.epoch_skipped;
      ++pos.step;
    }
    return st;
  }
  optimizer->step(st.lr);
  optimizer->zero_grad();
  if (ema) ema->update(pos.step + 1);
  pos.loss_sum += loss_sum;
  pos.correct += st.correct;
  pos.seen += st.seen;
  pos.grad_norm_sum += st.grad_norm;
  ++pos.epoch_steps;
  ++pos.step;
  return st;
}

void TrainState::next_epoch() {
  ++pos.epoch;
  pos.batch = 0;
  pos.loss_sum = 0.0;
  pos.correct = pos.seen = pos.epoch_steps = pos.epoch_skipped = 0;
  pos.grad_norm_sum = 0.0;
}

EvalResult TrainState::evaluate(const Dataset& ds, bool averaged) {
  const int64_t bs = cfg.train.eval_batch_size, maxb = cfg.train.max_eval_batches;
  if (!averaged) return softlab::evaluate(*model, ds, norm, bs, maxb);
  SOFTLAB_CHECK(ema.has_value(), "TrainState::evaluate: averaged weights asked for, but train.ema is 0");
  // The averaged weights are in the model for the time of their evaluation only.
  WeightEma::Swap swap(*ema);
  return softlab::evaluate(*model, ds, norm, bs, maxb);
}

}  // namespace softlab
