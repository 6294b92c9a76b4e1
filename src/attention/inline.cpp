// inline: InLine attention, "Bridging the Divide: Reconsidering Softmax and Linear Attention"
// (Han et al., NeurIPS 2024, arXiv 2412.06590), in the form of the released code
// (LeapLabTHU/InLine, docs/attention.md). Linear attention whose rows are made to sum to 1
// by subtracting their mean excess instead of dividing by their sum. With a kernel phi
// (default identity), s = Dh^-1/2 (or "scale") and n = N:
//
//   kbar = (1/n) sum_j phi(k_j),  vbar = (1/n) sum_j v_j,  c = s/n
//   a_ij = c phi(q_i).phi(k_j) - c phi(q_i).kbar + 1/n               (sum_j a_ij = 1)
//   o_i  = c phi(q_i)^T (sum_j phi(k_j) v_j^T) + (1 - s phi(q_i).kbar) vbar
//
// Causal: every sum runs over j <= i and n -> n_i = i + 1 (prefix means).
//
// A composed module: every step is a primitive differentiable op of softlab/ops.hpp, so
// autograd supplies the backward and there is no hand-written kernel to keep in step with
// the maths. That is also why the entry has no `reference`: the module is its own composed
// form. The costs follow from the ops:
//
//   bidirectional: phi(K)^T V first (Dh x Dv per head), O(N Dh Dv) time, O(N Dh + Dh Dv)
//                  memory, nothing N x N.
//   causal:        the N x N matrix a (masked, row-scaled by 1/n_i) and one product a V:
//                  O(N^2 Dh) time and O(N^2) memory per head. The O(N Dh Dv) prefix-sum form
//                  needs a cumulative sum that ops.hpp does not have; a chunked kernel like
//                  linear attention's would be the way to add it.
//
// The paper's block also adds a dynamic 3x3 depthwise convolution of V to the output (its
// "local" residual); that is a block change, not part of the attention function, and is not
// implemented here.
#include <map>
#include <memory>
#include <string>

#include "attention/kernels.hpp"
#include "attention/reference_ops.hpp"
#include "softlab/autograd.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

// The kernels of the released code (its kernel_func): identity (the default), ReLU,
// LeakyReLU with PyTorch's default slope 0.01, and exp(t x) with t = 0.2 (its exp_kernel).
enum class Kernel { Identity, Relu, LeakyRelu, Exp };
constexpr float kLeakySlope = 0.01f;
constexpr float kExpTemperature = 0.2f;

Kernel parse_kernel(const std::string& name) {
  if (name == "relu") return Kernel::Relu;
  if (name == "leaky_relu") return Kernel::LeakyRelu;
  if (name == "exp") return Kernel::Exp;
  return Kernel::Identity;  // the schema admits only these four names
}

Tensor phi(const Tensor& x, Kernel kernel) {
  switch (kernel) {
    case Kernel::Identity:
      return x;
    case Kernel::Relu:
      return relu(x);
    case Kernel::LeakyRelu:
      // x + (1 - slope) relu(-x): exactly x for x >= 0 (no rounding of the positive side),
      // slope x below; the derivative is 1 or slope, as torch's LeakyReLU.
      return add(x, scale(relu(neg(x)), 1.0f - kLeakySlope));
    case Kernel::Exp:
      return exp(scale(x, kExpTemperature));
  }
  return x;
}

class InLineAttention final : public Attention {
 public:
  explicit InLineAttention(const json& p)
      : kernel_(parse_kernel(p["kernel"].get<std::string>())),
        scale_(configured_scale(p)),
        causal_(p["causal"].get<bool>()) {}

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) override {
    const detail::HeadDims dims = detail::check_qkv("inline attention", q, k, v);
    const float s = scale_for(scale_, q);
    const Tensor fq = phi(q, kernel_), fk = phi(k, kernel_);
    return causal_ ? causal_form(fq, fk, v, s, causal_weights(dims.N)) : bidirectional_form(fq, fk, v, s, dims.N);
  }

 private:
  // o = c phi(Q) (phi(K)^T V) + (1 - s phi(Q) kbar^T) vbar, the state phi(K)^T V formed first.
  static Tensor bidirectional_form(const Tensor& fq, const Tensor& fk, const Tensor& v, float s, int64_t N) {
    const Tensor state = matmul(fk, v, /*trans_a=*/true);                        // [B, H, Dh, Dv]
    const Tensor kbar = mean(fk, 2, /*keepdim=*/true);                            // [B, H, 1, Dh]
    const Tensor vbar = mean(v, 2, /*keepdim=*/true);                             // [B, H, 1, Dv]
    const Tensor z = matmul(fq, kbar, false, /*trans_b=*/true);                   // [B, H, N, 1]
    const Tensor linear_part = scale(matmul(fq, state), s / static_cast<float>(N));
    return add(linear_part, mul(add_scalar(scale(z, -s), 1.0f), vbar));
  }

  // With W_ij = 1/n_i for j <= i and 0 above the diagonal, P = s (phi(Q) phi(K)^T) o W holds
  // c_i phi(q_i).phi(k_j) on the visible pairs, its row sum r_i is s phi(q_i).kbar_i, and
  // a = P + (1 - r) W is the attention matrix above (masked entries are exactly 0: 0 times
  // a finite product). Its rows sum to r_i + (1 - r_i) = 1.
  static Tensor causal_form(const Tensor& fq, const Tensor& fk, const Tensor& v, float s, const Tensor& W) {
    const Tensor P = scale(mul(matmul(fq, fk, false, /*trans_b=*/true), W), s);  // [B, H, N, N]
    const Tensor r = sum(P, -1, /*keepdim=*/true);                               // [B, H, N, 1]
    const Tensor a = add(P, mul(add_scalar(neg(r), 1.0f), W));
    return matmul(a, v);
  }

  // W for N tokens: a constant (no gradient), made once per sequence length rather than per
  // call; a model sees one length in training and a few in evaluation.
  const Tensor& causal_weights(int64_t N) {
    auto it = causal_weights_.find(N);
    if (it == causal_weights_.end()) {
      NoGradGuard no_grad;
      const Tensor W = div(attention_ref::visibility(N, true), attention_ref::visible_counts(N, true));
      it = causal_weights_.emplace(N, W).first;
    }
    return it->second;
  }

  Kernel kernel_;
  float scale_;  // 0: Dh^-1/2, resolved per call from q's shape
  bool causal_;
  std::map<int64_t, Tensor> causal_weights_;
};

}  // namespace

AttentionEntry inline_attention_entry() {
  AttentionEntry e;
  e.name = "inline";
  e.help = "InLine attention, linear attention with rows summing to 1 by subtraction: "
           "c phi(q)^T sum phi(k)v^T + (1 - s phi(q).kbar) vbar, c = s/N (Han et al. 2024)";
  e.caps = {.causal = true, .padding = true};
  e.schema = {
      {.name = "kernel", .type = ParamType::String, .default_value = "identity",
       .choices = {"identity", "relu", "leaky_relu", "exp"},
       .help = "the kernel phi on q and k: identity, relu, leaky_relu (slope 0.01) or exp (exp(0.2 x))"},
      {.name = "scale", .type = ParamType::Float, .default_value = nullptr, .min = 0.0, .min_exclusive = true,
       .help = "s in c = s/N and 1 - s phi(q).kbar; null means Dh^-1/2", .nullable = true},
      {.name = "causal", .type = ParamType::Bool, .default_value = false,
       .help = "query i sees keys 0..i only (prefix means with n_i = i + 1; O(N^2) form)"},
  };
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    return std::make_unique<InLineAttention>(p);
  };
  // No e.reference: the module is composed from primitive ops already (see the top of this
  // file); the golden cases and tests/test_attention_inline.cpp check it against float64.
  e.golden = {
      "inline_bidir_n13_d8_relu",
      "inline_bidir_n7",
      "inline_bidir_n7_exp",
      "inline_causal_n7",
      "inline_causal_n7_leaky_relu",
      "inline_causal_n7_scale",
  };
  return e;
}

}  // namespace softlab
