// cosine head: normalised softmax (NormFace; additive margin as CosFace) (docs/heads.md).
//   cos_nk = (h_n / ||h_n||) . (W_k / ||W_k||),  scores = scale * cos
//   l = CE(scale * (cos - margin [k = y]), y; label_smoothing)   (margin, smoothing: training only)
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
    const Tensor cos = matmul(l2_normalize(h), l2_normalize(w_), false, true);  // [B, C]
    HeadOutput out;
    out.scores = s_.defined() ? mul(cos, s_) : scale(cos, scale_);
    if (labels.empty()) return out;
    heads::check_labels("cosine", labels, cos.shape()[0], C_);
    const bool train = training();
    Tensor logits = out.scores;
    if (train && margin_ > 0.0f) {
      // scale * (cos - margin onehot): subtract the margin before scaling.
      Tensor shift = zeros(cos.shape());
      float* sp = shift.mutable_data();
      for (size_t n = 0; n < labels.size(); ++n) sp[static_cast<int64_t>(n) * C_ + labels[n]] = margin_;
      const Tensor shifted = sub(cos, shift);
      logits = s_.defined() ? mul(shifted, s_) : scale(shifted, scale_);
    }
    out.loss = cross_entropy(logits, labels, train ? smoothing_ : 0.0f);
    return out;
  }

 private:
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
  e.factory = [](const json& p, const HeadContext& ctx) -> std::unique_ptr<Head> {
    return std::make_unique<CosineHead>(ctx, p["scale"].get<float>(), p["learn_scale"].get<bool>(),
                                        p["margin"].get<float>(), p["label_smoothing"].get<float>());
  };
  return e;
}

}  // namespace softlab
