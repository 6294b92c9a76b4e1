// The training recipe in one block of text: every key that changes what the model sees or
// how its weights move beyond the architecture (augmentation, mixing, subset, dropout,
// stochastic depth, label smoothing, accumulation, EMA), as resolved.
#include <sstream>

#include "nn/trunk.hpp"
#include "softlab/config.hpp"
#include "softlab/sweep.hpp"  // value_text

namespace softlab {

std::string recipe_summary(const Config& cfg) {
  const json& r = cfg.resolved;
  std::ostringstream o;
  o << "recipe:\n  data.augment:";
  for (const auto& [k, v] : r["data"]["augment"].items()) o << " " << k << "=" << value_text(v);
  o << "\n  data.subset=" << value_text(r["data"].value("subset", json(0)));
  o << "\n  model.dropout=" << cfg.model.dropout << " model.drop_path=" << cfg.model.drop_path;
  if (cfg.model.drop_path > 0.0) {
    o << " (per block:";
    for (int64_t i = 0; i < cfg.model.depth; ++i)
      o << " " << nn::detail::drop_path_rate(cfg.model, i);
    o << ")";
  }
  if (cfg.model.head.contains("label_smoothing"))
    o << " model.head.label_smoothing=" << value_text(cfg.model.head["label_smoothing"]);
  o << "\n  train.batch_size=" << cfg.train.batch_size << " train.accumulate=" << cfg.train.accumulate << " ("
    << cfg.train.batch_size * cfg.train.accumulate << " examples per optimiser step) train.ema=" << cfg.train.ema
    << "\n";
  return o.str();
}

}  // namespace softlab
