// ebv head: Equiangular Basis Vectors (Shen, Sun, Wei, CVPR 2023; docs/heads.md).
//   v = h P^T + beta,  u = v / max(||v||, 1e-12),  cos_k = u . E_k   (E: fixed unit rows)
//   l = CE(cos / tau, y; label_smoothing),  scores = cos,  prediction: the nearest E_k
//   soft targets t: l = -sum_k t'_k log softmax(cos / tau)_k,  t' = (1-eps) t + eps/C
// E is generated once from gen_seed when the head is built (generate_ebv_basis), saved in
// checkpoints as the buffer "basis" and restored from them exactly; its rows are
// re-normalised on every forward, so a basis loaded from anywhere is used as unit rows.
#include <cmath>

#include "heads/row_loss.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

class EbvHead final : public Head {
 public:
  EbvHead(const HeadContext& ctx, int64_t dim, double tau, double smoothing, const EbvBasis& basis)
      : C_(ctx.num_classes), d_(dim), tau_(tau), smoothing_(smoothing), steps_(basis.steps) {
    auto init = heads::linear_init(ctx, dim, "ebv");
    w_ = register_parameter("weight", init.weight);
    b_ = register_parameter("bias", init.bias, false);
    basis_ = register_buffer("basis", basis.basis);
  }
  HeadOutput forward(const Tensor& h, std::span<const int32_t> labels) override {
    const Tensor cos = cosines(h);
    HeadOutput out;
    out.scores = cos;
    if (!labels.empty()) {
      heads::check_labels("ebv", labels, cos.shape()[0], C_);
      out.loss = cross_entropy(logits(cos), labels, training() ? static_cast<float>(smoothing_) : 0.0f);
    }
    return out;
  }
  // The same logits against a distribution, through the soft row rule (the hard path keeps
  // the float cross_entropy op, which needs no [B, C] target).
  HeadOutput forward_soft(const Tensor& h, const Tensor& targets) override {
    HeadOutput out;
    out.scores = cosines(h);
    out.loss = heads::soft_cross_entropy("ebv", logits(out.scores), targets,
                                         training() ? static_cast<float>(smoothing_) : 0.0f);
    return out;
  }
  Tensor probabilities(const Tensor& scores) const override {
    return softmax(scale(scores, static_cast<float>(1.0 / tau_)));
  }
  json info() const override {
    return {{"basis_max_cos", max_pairwise_cos(basis_)}, {"basis_dim", d_}, {"generator_steps", steps_}};
  }

 private:
  // Fused pieces with hand-written backwards: l2_normalize, a oneDNN matmul against the
  // unit rows of the stored basis (a loaded basis need not be exactly normalised; it needs
  // no gradient). A GEMM, so the cost stays that of a linear layer at any C.
  Tensor cosines(const Tensor& h) const {
    return matmul(l2_normalize(linear(h, w_, b_)), l2_normalize(basis_), false, true);
  }
  Tensor logits(const Tensor& cos) const { return scale(cos, static_cast<float>(1.0 / tau_)); }

  int64_t C_, d_;
  double tau_;
  double smoothing_;
  int64_t steps_;
  Tensor w_, b_, basis_;
};

}  // namespace

HeadEntry ebv_head_entry() {
  HeadEntry e;
  e.name = "ebv";
  e.help = "Equiangular Basis Vectors (Shen et al.): cosine to a fixed, generated basis, with temperature";
  e.schema = {
      {.name = "dim", .type = ParamType::Int, .default_value = nullptr, .min = 2.0,
       .help = "basis dimension d; null means the number of classes", .nullable = true},
      {.name = "tau", .type = ParamType::Float, .default_value = 0.07, .min = 0.0, .min_exclusive = true,
       .help = "temperature: logits = cos / tau"},
      {.name = "label_smoothing", .type = ParamType::Float, .default_value = 0.0, .min = 0.0, .max = 1.0,
       .max_exclusive = true, .help = "target = (1-eps) one-hot + eps/C (training loss only)"},
      {.name = "threshold", .type = ParamType::Float, .default_value = 0.002, .min = 0.0, .min_exclusive = true,
       .help = "generator target for max pairwise |cos|; must exceed the Welch bound when dim < C"},
      {.name = "gen_lr", .type = ParamType::Float, .default_value = 1e-3, .min = 0.0, .min_exclusive = true,
       .help = "generator step size (plain gradient descent)"},
      {.name = "gen_max_steps", .type = ParamType::Int, .default_value = 100000, .min = 1.0,
       .help = "generator step limit"},
      {.name = "gen_seed", .type = ParamType::Int, .default_value = 42, .min = 0.0,
       .help = "seed of the generator's Gaussian start"},
  };
  e.soft_targets = true;
  e.factory = [](const json& p, const HeadContext& ctx) -> std::unique_ptr<Head> {
    const int64_t C = ctx.num_classes;
    const int64_t dim = p["dim"].is_null() ? C : p["dim"].get<int64_t>();
    const double threshold = p["threshold"].get<double>(), welch = welch_bound(C, dim);
    SOFTLAB_CHECK(threshold > welch, "model.head.threshold: ", threshold, " cannot be reached by ", C,
                  " unit vectors in ", dim, " dimensions (the Welch bound is ", welch,
                  "); raise it or model.head.dim");
    const EbvBasis basis = generate_ebv_basis(C, dim, threshold, p["gen_lr"].get<double>(),
                                              p["gen_max_steps"].get<int64_t>(), p["gen_seed"].get<uint64_t>());
    return std::make_unique<EbvHead>(ctx, dim, p["tau"].get<double>(), p["label_smoothing"].get<double>(), basis);
  };
  e.golden = {
      "ebv_default",
      "ebv_dim3_c4_tau0.2_ls0.1",
      "ebv_dim7_c4_tau0.1",
  };
  return e;
}

}  // namespace softlab
