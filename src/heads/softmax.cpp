// softmax head: a linear layer and cross-entropy (docs/heads.md).
//   S = (h W^T + b) / T,  l = CE(S, y; label_smoothing)
// In eval mode the loss is plain cross-entropy (no smoothing): the data term.
// Soft targets t (forward_soft): l = -sum_k t'_k log softmax(S)_k, t' = (1-eps) t + eps/C.
#include <cmath>

#include "heads/row_loss.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {
class SoftmaxHead final : public Head {
 public:
  SoftmaxHead(const HeadContext& ctx, float smoothing, float temperature)
      : smoothing_(smoothing), inv_t_(1.0f / temperature) {
    auto init = heads::linear_init(ctx, ctx.num_classes, "softmax");
    w_ = register_parameter("weight", init.weight);
    b_ = register_parameter("bias", init.bias, false);
  }
  HeadOutput forward(const Tensor& h, std::span<const int32_t> labels) override {
    HeadOutput out;
    out.scores = logits(h);
    if (!labels.empty()) out.loss = cross_entropy(out.scores, labels, training() ? smoothing_ : 0.0f);
    return out;
  }
  // The same loss against a distribution: the fused row rule of heads::soft_cross_entropy
  // (the hard path above keeps the float op, which reads a label instead of a [B, C] row).
  HeadOutput forward_soft(const Tensor& h, const Tensor& targets) override {
    HeadOutput out;
    out.scores = logits(h);
    out.loss = heads::soft_cross_entropy("softmax", out.scores, targets, training() ? smoothing_ : 0.0f);
    return out;
  }

 private:
  Tensor logits(const Tensor& h) const {
    const Tensor o = linear(h, w_, b_);
    return inv_t_ != 1.0f ? scale(o, inv_t_) : o;
  }

  float smoothing_, inv_t_;
  Tensor w_, b_;
};
}  // namespace

HeadEntry softmax_head_entry() {
  HeadEntry e;
  e.name = "softmax";
  e.help = "linear layer + softmax cross-entropy, with label smoothing and temperature";
  e.schema = {
      {.name = "label_smoothing", .type = ParamType::Float, .default_value = 0.0, .min = 0.0, .max = 1.0,
       .max_exclusive = true, .help = "target = (1-eps) one-hot + eps/C (training loss only)"},
      {.name = "temperature", .type = ParamType::Float, .default_value = 1.0, .min = 0.0, .min_exclusive = true,
       .help = "scores = logits / T"},
  };
  e.soft_targets = true;
  e.factory = [](const json& p, const HeadContext& ctx) -> std::unique_ptr<Head> {
    return std::make_unique<SoftmaxHead>(ctx, p["label_smoothing"].get<float>(), p["temperature"].get<float>());
  };
  e.golden = {
      "softmax_default",
      "softmax_ls0.1_t2",
  };
  return e;
}

}  // namespace softlab
