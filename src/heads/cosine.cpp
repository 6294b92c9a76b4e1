// cosine head: normalised softmax (NormFace; additive margin as CosFace) (docs/heads.md).
//   cos_nk = (h_n / ||h_n||) . (W_k / ||W_k||),  scores = scale * cos
//   l = CE(scale * (cos - margin [k = y]), y; label_smoothing)   (margin, smoothing: training only)
//   soft targets t: l = -sum_k t'_k log softmax(scale * (cos - margin t))_k,  t' = (1-eps) t + eps/C
//   (the margin follows the unsmoothed target, as the hard margin follows the label)
// Built from fused pieces with hand-written backwards: l2_normalize (features and class
// vectors), a matmul, cross_entropy; a learnable scale is one more scalar parameter.
#include <cmath>

#include "heads/row_loss.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

class CosineHead final : public Head {
 public:
  CosineHead(const HeadContext& ctx, float scale, bool learn_scale, float margin, float smoothing)
      : C_(ctx.num_classes), scale_(scale), margin_(margin), smoothing_(smoothing) {
    w_ = register_parameter("weight", heads::linear_init(ctx, ctx.num_classes, "cosine").weight);
    // A learned scale is not decayed: decay would pull the logits' range towards 0.
    if (learn_scale) s_ = register_parameter("scale", full({1}, scale), false);
  }
  HeadOutput forward(const Tensor& h, std::span<const int32_t> labels) override {
    const Tensor cos = cosines(h);
    HeadOutput out;
    out.scores = scaled(cos);
    if (labels.empty()) return out;
    heads::check_labels("cosine", labels, cos.shape()[0], C_);
    const bool train = training();
    Tensor logits = out.scores;
    if (train && margin_ > 0.0f) {
      Tensor shift = zeros(cos.shape());  // margin * onehot(y)
      float* sp = shift.mutable_data();
      for (size_t n = 0; n < labels.size(); ++n) sp[static_cast<int64_t>(n) * C_ + labels[n]] = margin_;
      logits = scaled(sub(cos, shift));
    }
    out.loss = cross_entropy(logits, labels, train ? smoothing_ : 0.0f);
    return out;
  }
  // The same with a distribution: the margin is margin * t (a one-hot t gives the label's
  // margin), and the loss is the soft row rule (the hard path keeps the float
  // cross_entropy op, which needs no [B, C] target).
  HeadOutput forward_soft(const Tensor& h, const Tensor& targets) override {
    const Tensor cos = cosines(h);
    HeadOutput out;
    out.scores = scaled(cos);
    const bool train = training();
    heads::check_targets("cosine", targets, cos.shape());
    Tensor logits = out.scores;
    if (train && margin_ > 0.0f)  // detached: the targets are data, never a gradient path
      logits = scaled(sub(cos, scale(targets.detach(), margin_)));
    out.loss = heads::soft_cross_entropy("cosine", logits, targets, train ? smoothing_ : 0.0f);
    return out;
  }

 private:
  Tensor cosines(const Tensor& h) const { return matmul(l2_normalize(h), l2_normalize(w_), false, true); }  // [B, C]
  // scale * x; the margin is subtracted from cos before this, so it is a cosine margin.
  Tensor scaled(const Tensor& x) const { return s_.defined() ? mul(x, s_) : scale(x, scale_); }

  int64_t C_;
  float scale_, margin_, smoothing_;
  Tensor w_, s_;
};

}  // namespace

HeadEntry cosine_head_entry() {
  HeadEntry e;
  e.name = "cosine";
  e.help = "normalised softmax (NormFace/CosFace): scale * cosine to learned class vectors";
  e.schema = {
      {.name = "scale", .type = ParamType::Float, .default_value = 16.0, .min = 0.0, .min_exclusive = true,
       .help = "logits = scale * cos (the initial value when learned)"},
      {.name = "learn_scale", .type = ParamType::Bool, .default_value = false,
       .help = "make the scale a trainable parameter (no weight decay)"},
      {.name = "margin", .type = ParamType::Float, .default_value = 0.0, .min = 0.0, .max = 1.0,
       .max_exclusive = true, .help = "additive cosine margin on the true class (training loss only)"},
      {.name = "label_smoothing", .type = ParamType::Float, .default_value = 0.0, .min = 0.0, .max = 1.0,
       .max_exclusive = true, .help = "target = (1-eps) one-hot + eps/C (training loss only)"},
  };
  e.soft_targets = true;
  e.factory = [](const json& p, const HeadContext& ctx) -> std::unique_ptr<Head> {
    return std::make_unique<CosineHead>(ctx, p["scale"].get<float>(), p["learn_scale"].get<bool>(),
                                        p["margin"].get<float>(), p["label_smoothing"].get<float>());
  };
  e.golden = {
      "cosine_default",
      "cosine_learn_scale_m0.2_ls0.1_s8",
  };
  return e;
}

}  // namespace softlab
