// svm head: linear SVM output layers (docs/heads.md; Tang 2013, Agarap 2017).
//   s = h W^T + b, scores = s
//   ovr: l = C_pen * A_k max(0, m - t_k s_k)^p,  t_k = +1 for the label, -1 otherwise
//   ww:  l = C_pen * (1/C) sum_{k != y} max(0, m - s_y + s_k)^p   (= torch MultiMarginLoss)
//   cs:  l = C_pen * max(0, m + max_{k != y} s_k - s_y)^p          (Crammer-Singer)
//   L = (1/B) sum_n l_n + lambda * P(W)   (P: sum or mean of W^2; training loss only)
// p = 1 is the hinge (subgradient 0 at the kink), p = 2 the squared hinge.
#include <cmath>
#include <optional>

#include "heads/row_loss.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

enum class Variant { Ovr, WestonWatkins, CrammerSinger };

struct SvmOptions {
  Variant variant = Variant::Ovr;
  int p = 2;
  double margin = 1.0;
  double c_pen = 1.0;
  double weight_penalty = 0.0;
  bool penalty_mean = false;
  bool class_mean = false;
  bool sign_argmax = false;
};

struct SvmRule {
  SvmOptions o;
  int64_t C = 0;
  int64_t scratch() const { return 0; }
  // The hinge's value v^p and its derivative w.r.t. v (subgradient 0 at v = 0 for p = 1).
  double power(double v) const { return o.p == 1 ? v : v * v; }
  double slope(double v) const { return o.p == 1 ? (v > 0.0 ? 1.0 : 0.0) : 2.0 * v; }

  // Labels only: a hinge against a distribution has no meaning, so the svm head has no
  // soft loss (docs/heads.md, "Soft targets").
  double row(const float* s, const heads::OneHot* t, float* scores, float* g, double*) const {
    for (int64_t k = 0; k < C; ++k) scores[k] = s[k];
    if (!t) return 0.0;
    const int32_t y = t->y;
    if (g)
      for (int64_t k = 0; k < C; ++k) g[k] = 0.0f;
    double l = 0.0;
    switch (o.variant) {
      case Variant::Ovr: {
        const double a = o.c_pen * (o.class_mean ? 1.0 / static_cast<double>(C) : 1.0);
        for (int64_t k = 0; k < C; ++k) {
          const double t = k == y ? 1.0 : -1.0;
          const double v = std::max(0.0, o.margin - t * s[k]);
          l += a * power(v);
          if (g) g[k] = static_cast<float>(-a * t * slope(v));
        }
        break;
      }
      case Variant::WestonWatkins: {
        const double a = o.c_pen / static_cast<double>(C);
        double gy = 0.0;
        for (int64_t k = 0; k < C; ++k) {
          if (k == y) continue;
          const double v = std::max(0.0, o.margin - s[y] + s[k]);
          l += a * power(v);
          const double gk = a * slope(v);
          if (g) g[k] = static_cast<float>(gk);
          gy -= gk;
        }
        if (g) g[y] = static_cast<float>(gy);
        break;
      }
      case Variant::CrammerSinger: {
        int64_t worst = -1;  // the highest-scoring wrong class, ties to the lowest index
        for (int64_t k = 0; k < C; ++k)
          if (k != y && (worst < 0 || s[k] > s[worst])) worst = k;
        if (worst < 0) break;  // C = 1: no wrong class
        const double v = std::max(0.0, o.margin + s[worst] - s[y]);
        l = o.c_pen * power(v);
        if (g) {
          g[worst] = static_cast<float>(o.c_pen * slope(v));
          g[y] = -g[worst];
        }
        break;
      }
    }
    return l;
  }
};

class SvmHead final : public Head {
 public:
  SvmHead(const HeadContext& ctx, const SvmOptions& o) : o_(o), C_(ctx.num_classes) {
    auto init = heads::linear_init(ctx, ctx.num_classes, "svm");
    // With an explicit penalty on W, optimizer weight decay on W would count it twice.
    w_ = register_parameter("weight", init.weight, o.weight_penalty == 0.0);
    b_ = register_parameter("bias", init.bias, false);
  }
  HeadOutput forward(const Tensor& h, std::span<const int32_t> labels) override {
    Tensor s = linear(h, w_, b_);
    HeadOutput out = heads::row_loss("svm", s, C_, labels, SvmRule{o_, C_});
    out.scores = s;  // the raw SVM scores, with their autograd history
    if (out.loss.defined() && training() && o_.weight_penalty > 0.0) {
      const double coef = o_.weight_penalty / (o_.penalty_mean ? static_cast<double>(w_.numel()) : 1.0);
      out.loss = add(out.loss, scale(sum(mul(w_, w_)), static_cast<float>(coef)));
    }
    return out;
  }
  std::vector<int32_t> predict(const Tensor& scores) const override {
    if (!o_.sign_argmax) return argmax_rows(scores);
    SOFTLAB_CHECK(scores.rank() == 2 && scores.shape()[1] == C_, "svm head: predict expects scores [B, ", C_,
                  "], got ", scores.shape());
    // Agarap's argmax(sign(s)): the first class with a positive score, else the first with
    // score 0, else class 0.
    const int64_t B = scores.shape()[0];
    std::vector<int32_t> out(static_cast<size_t>(B), 0);
    const float* s = scores.data();
    for (int64_t n = 0; n < B; ++n) {
      int32_t zero = -1, pos = -1;
      for (int64_t k = 0; k < C_ && pos < 0; ++k) {
        if (s[n * C_ + k] > 0.0f) pos = static_cast<int32_t>(k);
        else if (s[n * C_ + k] == 0.0f && zero < 0) zero = static_cast<int32_t>(k);
      }
      out[static_cast<size_t>(n)] = !row_is_finite(s + n * C_, C_) ? kNoClass : pos >= 0 ? pos : std::max(zero, 0);
    }
    return out;
  }
  Tensor probabilities(const Tensor&) const override { return Tensor(); }

 private:
  SvmOptions o_;
  int64_t C_;
  Tensor w_, b_;
};

// A key's value: the explicit one, else the preset's, else the default.
template <class T>
T pick(const json& p, const char* key, std::optional<T> preset, T fallback) {
  if (!p[key].is_null()) return p[key].get<T>();
  return preset ? *preset : fallback;
}

}  // namespace

HeadEntry svm_head_entry() {
  HeadEntry e;
  e.name = "svm";
  e.help = "linear SVM output layer: one-vs-rest (L1/L2 hinge), Weston-Watkins or Crammer-Singer";
  e.schema = {
      {.name = "variant", .type = ParamType::String, .default_value = nullptr,
       .choices = {"ovr", "ww", "cs"},
       .help = "ovr: one-vs-rest (Tang, Agarap); ww: Weston-Watkins (= torch MultiMarginLoss); cs: Crammer-Singer "
               "(default ovr)", .nullable = true},
      {.name = "p", .type = ParamType::Int, .default_value = nullptr, .min = 1.0, .max = 2.0,
       .help = "1: hinge (L1-SVM), 2: squared hinge (L2-SVM) (default 2)", .nullable = true},
      {.name = "margin", .type = ParamType::Float, .default_value = nullptr, .min = 0.0,
       .min_exclusive = true, .help = "hinge margin m (default 1)", .nullable = true},
      {.name = "C", .type = ParamType::Float, .default_value = nullptr, .min = 0.0,
       .min_exclusive = true, .help = "C_pen, multiplies the hinge term (not the class count) (default 1)", .nullable = true},
      {.name = "weight_penalty", .type = ParamType::Float, .default_value = nullptr, .min = 0.0,
       .help = "lambda on W^2 in the training loss; W is then excluded from weight decay (default 0)", .nullable = true},
      {.name = "penalty_form", .type = ParamType::String, .default_value = nullptr,
       .choices = {"sum", "mean"}, .help = "sum or mean of W^2 (default sum)", .nullable = true},
      {.name = "class_reduction", .type = ParamType::String, .default_value = nullptr,
       .choices = {"sum", "mean"}, .help = "sum or mean of the C binary hinges (ovr only) (default sum)", .nullable = true},
      {.name = "predict", .type = ParamType::String, .default_value = nullptr,
       .choices = {"argmax", "sign_argmax"},
       .help = "decision rule: argmax s, or Agarap's argmax sign(s) (ovr only) (default argmax)", .nullable = true},
      {.name = "preset", .type = ParamType::String, .default_value = nullptr,
       .choices = {"tang2013", "agarap2017"},
       .help = "fill the other keys with a paper's objective (explicit keys win)", .nullable = true},
  };
  e.factory = [](const json& p, const HeadContext& ctx) -> std::unique_ptr<Head> {
    // The presets (docs/heads.md): Tang's dataset objective per minibatch, and Agarap's code.
    const std::string preset = p["preset"].is_null() ? "" : p["preset"].get<std::string>();
    const bool tang = preset == "tang2013", agarap = preset == "agarap2017";
    std::optional<std::string> pv, pf, cr, pr;
    std::optional<int> pp;
    std::optional<double> pm, pc, pw;
    if (tang || agarap) {
      pv = "ovr";
      pp = 2;
      pm = 1.0;
    }
    if (tang) {
      SOFTLAB_CHECK(ctx.train_size > 0, "model.head.preset: tang2013 scales the weight penalty by 1/(2 N_train), "
                                        "but the training set size is unknown here");
      pw = 1.0 / (2.0 * static_cast<double>(ctx.train_size));
      pf = "sum";
      cr = "sum";
    }
    if (agarap) {
      pc = 1.0;
      pw = 1.0;
      pf = "mean";
      cr = "mean";
      pr = "sign_argmax";
    }
    SvmOptions o;
    const std::string variant = pick<std::string>(p, "variant", pv, "ovr");
    o.variant = variant == "ww" ? Variant::WestonWatkins : variant == "cs" ? Variant::CrammerSinger : Variant::Ovr;
    o.p = pick<int>(p, "p", pp, 2);
    o.margin = pick<double>(p, "margin", pm, 1.0);
    o.c_pen = pick<double>(p, "C", pc, 1.0);
    o.weight_penalty = pick<double>(p, "weight_penalty", pw, 0.0);
    o.penalty_mean = pick<std::string>(p, "penalty_form", pf, "sum") == "mean";
    o.class_mean = pick<std::string>(p, "class_reduction", cr, "sum") == "mean";
    o.sign_argmax = pick<std::string>(p, "predict", pr, "argmax") == "sign_argmax";
    SOFTLAB_CHECK(o.variant == Variant::Ovr || (!o.class_mean && !o.sign_argmax), "model.head: class_reduction "
                  "'mean' and predict 'sign_argmax' apply to variant 'ovr' only, not '", variant, "'");
    return std::make_unique<SvmHead>(ctx, o);
  };
  e.golden = {
      "svm_agarap2017",
      "svm_agarap2017_predict_argmax",
      "svm_cs_p1",
      "svm_cs_p2",
      "svm_cs_p2_m0.5_C2_wp0.01",
      "svm_ovr_p1_m0.5_C2_mean_wp0.01",
      "svm_ovr_p2_default",
      "svm_ovr_p2_wp0.05_penalty_mean",
      "svm_tang2013_C0.5_n100",
      "svm_ww_p1",
      "svm_ww_p2",
  };
  return e;
}

}  // namespace softlab
