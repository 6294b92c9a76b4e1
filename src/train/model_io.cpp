// Building models from configs, evaluation, and loading a trained model from a checkpoint.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "softlab/autograd.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/distributed.hpp"
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
                                          synthetic_max_length(so), train_size, cfg.seed, synthetic_pad_token(so));
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
// The data description a checkpoint of softlab train holds (metadata key "data"): each value
// checked for its JSON type, so a checkpoint written by other code fails with its key.
template <class Bad>
int64_t data_int(const json& d, const char* key, bool required, const Bad& bad) {
  const auto it = d.find(key);
  if (it == d.end()) {
    if (required) throw bad(detail::cat("metadata key 'data.", key, "' is missing"));
    return 0;
  }
  if (!it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX) ||
      it->get<int64_t>() < 0)
    throw bad(detail::cat("metadata key 'data.", key, "' is ", it->dump(), ", expected a non-negative integer"));
  return it->get<int64_t>();
}

template <class Bad>
std::vector<float> data_floats(const json& d, const char* key, const Bad& bad) {
  std::vector<float> out;
  const auto it = d.find(key);
  if (it == d.end()) return out;
  if (!it->is_array()) throw bad(detail::cat("metadata key 'data.", key, "' is not an array of numbers"));
  for (const json& v : *it) {
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      throw bad(detail::cat("metadata key 'data.", key, "' holds ", v.dump(), ", expected finite numbers"));
    out.push_back(v.get<float>());
  }
  return out;
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
  // Under an MPI job each rank evaluates every size()-th batch and the sums are combined.
  const int64_t ranks = dist::size(), my_rank = dist::rank();
  if (densities)
    for (const char* k : {"kl", "bin_mae", "tv"}) r.extra[k] = 0.0;  // the same keys on every rank
  Batch b;
  int64_t first = 0, batches = 0;  // first: data-set index of the batch's first example
  for (int64_t i = 0; (max_batches <= 0 || batches++ < max_batches) && loader.next(b); ++i) {
    if (i % ranks != my_rank) {
      first += b.images.shape()[0];
      continue;
    }
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
  if (ranks > 1) {
    double sums[7] = {loss_sum, static_cast<double>(correct), static_cast<double>(top3), static_cast<double>(top5),
                      static_cast<double>(r.count), static_cast<double>(density_count), 0.0};
    dist::allreduce_sum(sums, 6, "the evaluation's sums");
    loss_sum = sums[0];
    correct = static_cast<int64_t>(sums[1]);
    top3 = static_cast<int64_t>(sums[2]);
    top5 = static_cast<int64_t>(sums[3]);
    r.count = static_cast<int64_t>(sums[4]);
    density_count = static_cast<int64_t>(sums[5]);
    for (auto& [k, v] : r.extra) dist::allreduce_sum(&v, 1, "the evaluation's density sums");
  }
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

LoadedModel load_model(const std::string& path, bool ema, const std::vector<std::string>& inference_sets) {
  return load_model(load_checkpoint(path), path, ema, inference_sets);
}

LoadedModel load_model(const Checkpoint& ck, const std::string& path, bool ema,
                       const std::vector<std::string>& inference_sets) {
  LoadedModel m;
  const json& saved = checkpoint_meta(ck, "config", path);
  const json& d = checkpoint_meta(ck, "data", path);
  auto bad = [&](const std::string& what) { return Error(detail::cat("checkpoint ", path, ": ", what)); };
  if (!d.is_object()) throw bad(detail::cat("metadata key 'data' is a JSON ", d.type_name(), ", not an object"));
  // The saved config goes through the same checks as a config file; what they report is
  // about this file, so the message says so.
  try {
    m.config = parse_config(resolve_saved_config(saved));
  } catch (const Error& e) {
    if (e.kind() != Error::Kind::BadInput) throw;
    throw bad(detail::cat("its saved config (metadata key 'config') is not valid: ", e.what()));
  } catch (const json::exception& e) {
    throw bad(detail::cat("its saved config (metadata key 'config') is malformed (", e.what(), ")"));
  }
  // Evaluation-only changes (inference-safe keys): errors are about the --set, not the file.
  if (!inference_sets.empty()) m.config = parse_config(apply_inference_overrides(m.config.resolved, inference_sets));
  const int64_t classes = data_int(d, "num_classes", true, bad);
  if (classes < 1 || classes > std::numeric_limits<int>::max())
    throw bad(detail::cat("metadata key 'data.num_classes' is ", classes, ", expected 1 or more"));
  m.num_classes = classes;
  m.norm.mean = data_floats(d, "mean", bad);
  m.norm.std = data_floats(d, "std", bad);
  const size_t channels = m.config.model.type == "vit" ? static_cast<size_t>(m.config.model.channels) : 0;
  if (!(m.norm.mean.empty() && m.norm.std.empty()) && (m.norm.mean.size() != channels || m.norm.std.size() != channels))
    throw bad(detail::cat("metadata keys 'data.mean' and 'data.std' hold ", m.norm.mean.size(), " and ",
                          m.norm.std.size(), " values, expected none or one per channel (", channels, ") each"));
  for (const float s : m.norm.std)
    if (!(s > 0.0f)) throw bad(detail::cat("metadata key 'data.std' holds ", s, ", expected positive values"));
  if (const auto it = d.find("class_names"); it != d.end()) {
    if (!it->is_array()) throw bad("metadata key 'data.class_names' is not an array of strings");
    for (const json& n : *it) {
      if (!n.is_string()) throw bad("metadata key 'data.class_names' is not an array of strings");
      m.class_names.push_back(n.get<std::string>());
    }
  }
  m.train_size = data_int(d, "train_size", false, bad);
  const nn::NamedTensors state = model_state(ck, path, ema);
  // Model and weights must agree with the saved config; a mismatch is about this file.
  try {
    m.model = build_model(m.config, m.num_classes, m.train_size);
    m.model->load_state(state);
  } catch (const Error& e) {
    if (e.kind() != Error::Kind::BadInput) throw;
    throw bad(e.what());
  }
  m.model->eval();
  return m;
}

}  // namespace softlab
