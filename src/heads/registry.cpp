// The head table: one line per head. Each head's file defines its entry beside its code.
#include "softlab/head.hpp"

#include "softlab/parallel.hpp"

namespace softlab {

HeadEntry softmax_head_entry();

const Registry<HeadFactory>& head_registry() {
  static const Registry<HeadFactory> registry("head", {
      softmax_head_entry(),
  });
  return registry;
}

std::unique_ptr<Head> make_head(const json& cfg, const HeadContext& ctx, const std::string& path) {
  SOFTLAB_CHECK(cfg.is_object(), path, ": expected an object like {\"type\": \"softmax\"}, found ", cfg.dump());
  SOFTLAB_CHECK(cfg.contains("type") && cfg["type"].is_string(), path, ".type: expected the name of a head");
  const auto& entry = head_registry().get(cfg["type"].get<std::string>(), path + ".type");
  const json params = validate_params(entry.schema, cfg, path, {"type"});
  return entry.factory(params, ctx);
}

std::vector<int32_t> argmax_rows(const Tensor& scores) {
  SOFTLAB_CHECK(scores.rank() == 2, "argmax_rows: scores must be [B, C], got ", scores.shape());
  const int64_t B = scores.shape()[0], C = scores.shape()[1];
  std::vector<int32_t> out(static_cast<size_t>(B));
  const float* s = scores.data();
  for (int64_t n = 0; n < B; ++n) {
    int32_t best = 0;
    for (int64_t c = 1; c < C; ++c)
      if (s[n * C + c] > s[n * C + best]) best = static_cast<int32_t>(c);
    out[static_cast<size_t>(n)] = best;
  }
  return out;
}

std::vector<int32_t> Head::predict(const Tensor& scores) const { return argmax_rows(scores); }

}  // namespace softlab
