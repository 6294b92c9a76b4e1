// Building models from configs, evaluation, and loading a trained model from a checkpoint.
#include <cmath>

#include "softlab/autograd.hpp"
#include "softlab/checkpoint.hpp"
#include "softlab/error.hpp"
#include "softlab/train.hpp"

namespace softlab {

std::unique_ptr<nn::ViT> build_model(const Config& cfg, int64_t num_classes, int64_t train_size) {
  SOFTLAB_CHECK(cfg.model.type == "vit", "model.type: '", cfg.model.type,
                "' is not implemented yet (only \"vit\" is available in this version)");
  const int64_t classes = cfg.model.num_classes > 0 ? cfg.model.num_classes : num_classes;
  SOFTLAB_CHECK(classes >= num_classes, "model.num_classes (", classes, ") is smaller than the data set's ",
                num_classes, " classes");
  return std::make_unique<nn::ViT>(cfg.model, classes, train_size, cfg.seed);
}

EvalResult evaluate(nn::ViT& model, const Dataset& ds, const Normalization& norm, int64_t batch_size) {
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
  int64_t correct = 0, top3 = 0, top5 = 0;
  Batch b;
  while (loader.next(b)) {
    HeadOutput out = model.forward(b.images, b.labels);
    const auto pred = model.head->predict(out.scores);
    const int64_t n = static_cast<int64_t>(b.labels.size());
    loss_sum += static_cast<double>(out.loss.item()) * static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) correct += pred[static_cast<size_t>(i)] == b.labels[static_cast<size_t>(i)];
    top3 += topk_correct(out.scores, b.labels, 3);
    top5 += topk_correct(out.scores, b.labels, 5);
    r.count += n;
  }
  model.train(was_training);
  if (r.count) {
    r.loss = loss_sum / static_cast<double>(r.count);
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.count);
    r.top3 = static_cast<double>(top3) / static_cast<double>(r.count);
    r.top5 = static_cast<double>(top5) / static_cast<double>(r.count);
  }
  return r;
}

LoadedModel load_model(const std::string& path) {
  Checkpoint ck = load_checkpoint(path);
  LoadedModel m;
  SOFTLAB_CHECK(ck.meta.contains("config") && ck.meta.contains("data"), "checkpoint ", path,
                ": no config or data description in its metadata");
  m.config = parse_config(resolve_config(ck.meta["config"]));
  const json& d = ck.meta["data"];
  m.num_classes = d.at("num_classes").get<int64_t>();
  m.norm.mean = d.at("mean").get<std::vector<float>>();
  m.norm.std = d.at("std").get<std::vector<float>>();
  m.class_names = d.value("class_names", std::vector<std::string>{});
  m.model = build_model(m.config, m.num_classes, d.value("train_size", int64_t{0}));
  m.model->load_state(with_prefix(ck.tensors, "model."));
  m.model->eval();
  return m;
}

}  // namespace softlab
