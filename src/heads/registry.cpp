// The head table: one line per head. Each head's file defines its entry beside its code.
#include "softlab/head.hpp"

#include <cmath>

#include "heads/row_loss.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

HeadEntry softmax_head_entry();
HeadEntry svm_head_entry();
HeadEntry zloss_head_entry();
HeadEntry ebv_head_entry();
HeadEntry fourier_head_entry();
HeadEntry stablemax_head_entry();
HeadEntry cosine_head_entry();

namespace {
Registry<HeadEntry>& mutable_head_registry() {
  static Registry<HeadEntry> registry = [] {
    Registry<HeadEntry> r("head");
    for (HeadEntry e : {
             softmax_head_entry(),
             svm_head_entry(),
             zloss_head_entry(),
             ebv_head_entry(),
             fourier_head_entry(),
             stablemax_head_entry(),
             cosine_head_entry(),
         })
      r.add(std::move(e), /*builtin=*/true);
    return r;
  }();
  return registry;
}
}  // namespace

const Registry<HeadEntry>& head_registry() { return mutable_head_registry(); }

const HeadEntry& register_head(HeadEntry entry) { return mutable_head_registry().add(std::move(entry)); }

std::unique_ptr<Head> make_head(const json& cfg, const HeadContext& ctx, const std::string& path) {
  SOFTLAB_CHECK(cfg.is_object(), path, ": expected an object like {\"type\": \"softmax\"}, found ", cfg.dump());
  SOFTLAB_CHECK(cfg.contains("type") && cfg["type"].is_string(), path, ".type: expected the name of a head");
  const auto& entry = head_registry().get(cfg["type"].get<std::string>(), path + ".type");
  const json params = validate_params(entry.schema, cfg, path, {"type"});
  return entry.factory(params, ctx);
}

bool row_is_finite(const float* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(s[i])) return false;
  return true;
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
    out[static_cast<size_t>(n)] = row_is_finite(s + n * C, C) ? best : kNoClass;
  }
  return out;
}

int64_t topk_correct(const Tensor& scores, std::span<const int32_t> labels, int64_t k) {
  SOFTLAB_CHECK(scores.rank() == 2 && scores.shape()[0] == static_cast<int64_t>(labels.size()),
                "topk_correct: scores ", scores.shape(), " for ", labels.size(), " labels");
  const int64_t B = scores.shape()[0], C = scores.shape()[1];
  const float* s = scores.data();
  int64_t hits = 0;
  for (int64_t n = 0; n < B; ++n) {
    const int32_t y = labels[static_cast<size_t>(n)];
    SOFTLAB_CHECK(y >= 0 && y < C, "topk_correct: label ", y, " outside [0, ", C, ")");
    if (!row_is_finite(s + n * C, C)) continue;  // NaN compares false: it would rank first
    const float sy = s[n * C + y];
    int64_t rank = 0;
    for (int64_t c = 0; c < C; ++c) rank += s[n * C + c] > sy || (s[n * C + c] == sy && c < y);
    hits += rank < k;
  }
  return hits;
}

std::vector<int32_t> Head::predict(const Tensor& scores) const { return argmax_rows(scores); }

HeadOutput Head::forward_soft(const Tensor&, const Tensor&) {
  throw Error("this head does not train on soft targets (mixup, CutMix): its registry entry does not set soft_targets");
}

bool head_takes_soft_targets(const std::string& type) {
  const HeadEntry* e = head_registry().find(type);
  return e && e->soft_targets;
}

Tensor Head::probabilities(const Tensor& scores) const {
  NoGradGuard no_grad;
  return softmax(scores);
}

heads::LinearInit heads::linear_init(const HeadContext& ctx, int64_t rows, const char* head, float div) {
  SOFTLAB_CHECK(ctx.init, head, " head: no initialisation generator given");
  SOFTLAB_CHECK(ctx.in_dim > 0 && ctx.num_classes > 0, head, " head: need in_dim > 0 and num_classes > 0, got ",
                ctx.in_dim, " and ", ctx.num_classes);
  // PyTorch's nn.Linear default (docs/heads.md), weight first, then bias.
  const float bound = 1.0f / std::sqrt(static_cast<float>(ctx.in_dim));
  LinearInit l;
  l.weight = uniform({rows, ctx.in_dim}, *ctx.init, -bound, bound);
  l.bias = uniform({rows}, *ctx.init, -bound, bound);
  if (div != 1.0f) {
    for (Tensor* t : {&l.weight, &l.bias}) {
      float* p = t->mutable_data();
      for (int64_t i = 0; i < t->numel(); ++i) p[i] /= div;
    }
  }
  return l;
}

}  // namespace softlab
