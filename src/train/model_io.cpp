// Building models from configs, evaluation, and loading a trained model from a checkpoint.
#include <algorithm>
#include <cmath>

#include "softlab/autograd.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/error.hpp"
#include "softlab/train.hpp"

namespace softlab {

std::unique_ptr<nn::Model> build_model(const Config& cfg, int64_t num_classes, int64_t train_size) {
  const int64_t classes = cfg.model.num_classes > 0 ? cfg.model.num_classes : num_classes;
  SOFTLAB_CHECK(classes >= num_classes, "model.num_classes (", classes, ") is smaller than the data set's ",
                num_classes, " classes");
  if (cfg.model.type == "seq") {
    const SyntheticOptions so = synthetic_options(cfg);
    return std::make_unique<nn::SeqModel>(cfg.model, synthetic_vocab(so), classes, synthetic_train_length(so),
                                          synthetic_max_length(so), train_size, cfg.seed);
  }
  SOFTLAB_CHECK(cfg.model.type == "vit", "model.type: unknown model '", cfg.model.type, "' (vit, seq)");
  return std::make_unique<nn::ViT>(cfg.model, classes, train_size, cfg.seed);
}

namespace {
// KL, bin MAE and total variation of one batch's predictions against the known densities.
// Row i of the batch is example first + i of the data set (one target per sequence).
void density_metrics(const Tensor& probs, const Dataset& ds, int64_t first, std::span<const int32_t> pred,
                     std::span<const int32_t> labels, std::map<std::string, double>& acc) {
  const int64_t C = ds.num_classes;
  auto pos = [&](int32_t k) { return ds.class_position.empty() ? k : ds.class_position[static_cast<size_t>(k)]; };
  std::vector<double> by_pos(static_cast<size_t>(C));
  for (size_t i = 0; i < labels.size(); ++i) {
    const float* q = probs.data() + static_cast<int64_t>(i) * C;
    const float* p = ds.target_density.data() + (first + static_cast<int64_t>(i)) * C;
    double kl = 0.0;
    for (int64_t k = 0; k < C; ++k)
      if (p[k] > 0.0f) kl += double{p[k]} * (std::log(double{p[k]}) - std::log(std::max(double{q[k]}, 1e-30)));
    acc["kl"] += kl;
    acc["bin_mae"] += std::abs(pos(pred[i]) - pos(labels[i]));
    // Smoothness along the ordered axis: walk the classes in bin order.
    for (int64_t k = 0; k < C; ++k) by_pos[static_cast<size_t>(pos(static_cast<int32_t>(k)))] = q[k];
    double tv = 0.0;
    for (int64_t k = 0; k + 1 < C; ++k) tv += std::abs(by_pos[static_cast<size_t>(k + 1)] - by_pos[static_cast<size_t>(k)]);
    acc["tv"] += tv;
  }
}
}  // namespace

EvalResult evaluate(nn::Model& model, const Dataset& ds, const Normalization& norm, int64_t batch_size,
                    int64_t max_batches) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  BatchLoader::Options lo;
  lo.batch_size = batch_size;
  lo.shuffle = false;
  lo.norm = norm;
  lo.prefetch = true;
  BatchLoader loader(ds, lo);
  loader.start_epoch(0);
  EvalResult r;
  double loss_sum = 0.0;
  int64_t correct = 0, top3 = 0, top5 = 0, density_count = 0;
  // The density metrics need one target per sequence (the example index of each score row).
  const bool densities = !ds.target_density.empty();
  Batch b;
  int64_t first = 0, batches = 0;  // first: data-set index of the batch's first example
  while ((max_batches <= 0 || batches++ < max_batches) && loader.next(b)) {
    HeadOutput out = model.forward(b.images, b.labels);
    const std::vector<int32_t> labels = model.scored_labels(b.images, b.labels);
    const auto pred = model.head->predict(out.scores);
    const int64_t n = static_cast<int64_t>(labels.size());
    const int64_t examples = b.images.shape()[0];
    loss_sum += static_cast<double>(out.loss.item()) * static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) correct += pred[static_cast<size_t>(i)] == labels[static_cast<size_t>(i)];
    top3 += topk_correct(out.scores, labels, 3);
    top5 += topk_correct(out.scores, labels, 5);
    r.count += n;
    if (densities && n == examples) {
      const Tensor probs = model.head->probabilities(out.scores);
      if (probs.defined()) {
        density_metrics(probs, ds, first, pred, labels, r.extra);
        density_count += n;
      }
    }
    first += examples;
  }
  model.train(was_training);
  if (r.count) {
    r.loss = loss_sum / static_cast<double>(r.count);
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.count);
    r.top3 = static_cast<double>(top3) / static_cast<double>(r.count);
    r.top5 = static_cast<double>(top5) / static_cast<double>(r.count);
  }
  if (density_count)
    for (auto& [k, v] : r.extra) v /= static_cast<double>(density_count);
  else
    r.extra.clear();
  return r;
}

json evaluate_by_length(nn::Model& model, const DataSplit& data, const EvalResult& at_train_length,
                        int64_t batch_size, int64_t max_batches) {
  json by = json::object();
  if (data.test_at_length.empty()) return by;
  std::vector<std::pair<int64_t, json>> rows;
  rows.emplace_back(data.test.seq_len,
                    json{{"accuracy", at_train_length.accuracy}, {"loss", at_train_length.loss}});
  for (const auto& [len, ds] : data.test_at_length) {
    const EvalResult e = evaluate(model, ds, {}, batch_size, max_batches);
    rows.emplace_back(len, json{{"accuracy", e.accuracy}, {"loss", e.loss}});
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [len, v] : rows) by[std::to_string(len)] = v;
  return by;
}

LoadedModel load_model(const std::string& path, bool ema) {
  Checkpoint ck = load_checkpoint(path);
  LoadedModel m;
  SOFTLAB_CHECK(ck.meta.contains("config") && ck.meta.contains("data"), "checkpoint ", path,
                ": no config or data description in its metadata");
  m.config = parse_config(resolve_saved_config(ck.meta["config"]));
  const json& d = ck.meta["data"];
  m.num_classes = d.at("num_classes").get<int64_t>();
  m.norm.mean = d.value("mean", std::vector<float>{});
  m.norm.std = d.value("std", std::vector<float>{});
  m.class_names = d.value("class_names", std::vector<std::string>{});
  m.model = build_model(m.config, m.num_classes, d.value("train_size", int64_t{0}));
  m.model->load_state(model_state(ck, path, ema));
  m.model->eval();
  return m;
}

}  // namespace softlab
