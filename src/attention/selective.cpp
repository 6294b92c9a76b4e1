// selective: softmax attention with query- and value-dependent temperatures (Zhang et al.
// 2024, "Selective Attention: Enhancing Transformer through Principled Context Control",
// docs/attention.md):
//   τ_q(i) = 1 + exp(−exp(β)) log n_i  [pos]  +  tanh(q_i·w_q[h] + b_q[h])  [tok_q]
//   τ_v(j) = 1 + tanh(v_j·w_v[h] + b_v[h])                                  [tok_v]
//   O = softmax(s τ_q(i) q_i·k_j + M) (τ_v ∘ V)
// Since s τ_q(i) q_i·k_j = s (τ_q(i) q_i)·k_j, this is the fused softmax kernel applied to
// q̃ = τ_q ∘ q and ṽ = τ_v ∘ v: the temperatures are O(N·Dh) element-wise ops (autograd
// composes their gradients), the O(N²) part keeps its fused kernel and hand-written
// backward. The positional part is the authors' released code (β init 1.5, their GPT-2
// model); the token parts are softlab's choice (docs/attention.md) (zero init, so the layer starts as
// softmax attention with the positional factor). In a bidirectional ViT n_i = N for every
// query and the positional factor is one constant per layer.
#include <cmath>

#include "attention/kernels.hpp"
#include "attention/reference_ops.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

class SelectiveAttention final : public Attention {
 public:
  SelectiveAttention(const json& p, const AttentionContext& ctx)
      : scale_(configured_scale(p)), causal_(p["causal"].get<bool>()) {
    const int64_t H = ctx.heads, Dh = ctx.head_dim;
    SOFTLAB_CHECK(H > 0 && Dh > 0, "selective attention needs the head count and head size, got heads ", H,
                  ", head_dim ", Dh);
    // None of these decay: they are temperatures, not weights (the authors train β with
    // its own optimizer and no weight decay).
    if (p["pos"].get<bool>()) beta_ = register_parameter("beta", full({1}, p["beta_init"].get<float>()), false);
    if (p["tok_q"].get<bool>()) {
      w_q_ = register_parameter("w_q", zeros({H, Dh}), false);
      b_q_ = register_parameter("b_q", zeros({H}), false);
    }
    if (p["tok_v"].get<bool>()) {
      w_v_ = register_parameter("w_v", zeros({H, Dh}), false);
      b_v_ = register_parameter("b_v", zeros({H}), false);
    }
  }

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) override {
    const detail::HeadDims dims = detail::check_qkv("selective attention", q, k, v);
    const int64_t H = dims.H, N = dims.N, Dh = dims.Dh;
    if (w_q_.defined() || w_v_.defined()) check_heads(H, Dh);
    Tensor qt = q, vt = v;
    Tensor tau;  // the query temperature τ_q, [N, 1] or [B, H, N, 1], built up below
    if (beta_.defined()) {
      // τ_pos(i) = 1 + c log n_i with c = exp(−exp(β)): [N, 1]
      Tensor log_n = empty({N, 1});
      for (int64_t i = 0; i < N; ++i) log_n.mutable_data()[i] = std::log(static_cast<float>(causal_ ? i + 1 : N));
      tau = add_scalar(mul(exp(neg(exp(beta_))), log_n), 1.0f);
    }
    if (w_q_.defined()) {
      Tensor tok = tanh(token_logit(q, w_q_, b_q_, H, Dh));  // [B, H, N, 1]
      tau = tau.defined() ? add(tok, tau) : add_scalar(tok, 1.0f);
    }
    if (tau.defined()) qt = mul(q, tau);
    if (w_v_.defined()) vt = mul(v, add_scalar(tanh(token_logit(v, w_v_, b_v_, H, Dh)), 1.0f));
    return softmax_attention(qt, k, vt, scale_for(scale_, q), causal_);
  }

 private:
  void check_heads(int64_t H, int64_t Dh) const {
    const Tensor& w = w_q_.defined() ? w_q_ : w_v_;
    SOFTLAB_CHECK(w.shape()[0] == H && w.shape()[1] == Dh, "selective attention was built for ", w.shape()[0],
                  " heads of size ", w.shape()[1], ", got inputs with ", H, " heads of size ", Dh);
  }
  // x_i·w[h] + b[h] for x [B, H, N, Dh]: [B, H, N, 1].
  static Tensor token_logit(const Tensor& x, const Tensor& w, const Tensor& b, int64_t H, int64_t Dh) {
    return add(sum(mul(x, reshape(w, {1, H, 1, Dh})), -1, true), reshape(b, {1, H, 1, 1}));
  }
  float scale_;
  bool causal_;
  Tensor beta_, w_q_, b_q_, w_v_, b_v_;
};

}  // namespace

AttentionEntry selective_attention_entry() {
  AttentionEntry e;
  e.name = "selective";
  e.help = "selective attention: softmax with query- and value-dependent temperatures (Zhang et al. 2024)";
  e.caps = {.causal = true, .learnable = true, .padding = true};
  e.schema = {
      scale_param(),
      causal_param(),
      {.name = "beta_init", .type = ParamType::Float, .default_value = 1.5,
       .help = "initial β of the positional temperature 1 + exp(-exp(β)) log n_i"},
      {.name = "pos", .type = ParamType::Bool, .default_value = true,
       .help = "position-aware query temperature (learnable β)"},
      {.name = "tok_q", .type = ParamType::Bool, .default_value = true,
       .help = "token-aware query temperature tanh(q·w_q + b_q)"},
      {.name = "tok_v", .type = ParamType::Bool, .default_value = true,
       .help = "value temperature 1 + tanh(v·w_v + b_v)"},
  };
  e.factory = [](const json& p, const AttentionContext& ctx) -> std::unique_ptr<Attention> {
    return std::make_unique<SelectiveAttention>(p, ctx);
  };
  // Composed the other way round from the module: the query temperature multiplies the
  // logit rows (not q), and the token logits are batched products instead of sums.
  e.reference = [](Attention& m, const json& p, const AttentionContext&, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const int64_t H = q.shape()[1], n = q.shape()[2], Dh = q.shape()[3];
    const bool causal = p["causal"].get<bool>();
    // x_i·w[h] + b[h] with w broadcast over the batch: [B, H, N, 1].
    auto token_logit = [&](const Tensor& x, const char* w, const char* b) {
      const Tensor wb = add(zeros({x.shape()[0], H, Dh, 1}), reshape(attention_ref::parameter(m, w), {1, H, Dh, 1}));
      return add(matmul(x, wb), reshape(attention_ref::parameter(m, b), {1, H, 1, 1}));
    };
    Tensor tau = ones({n, 1});
    if (p["pos"].get<bool>()) {
      const Tensor c = exp(neg(exp(attention_ref::parameter(m, "beta"))));
      tau = add(tau, mul(c, log(attention_ref::visible_counts(n, causal))));
    }
    if (p["tok_q"].get<bool>()) tau = add(tau, tanh(token_logit(q, "w_q", "b_q")));
    const Tensor tv = p["tok_v"].get<bool>() ? mul(v, add_scalar(tanh(token_logit(v, "w_v", "b_v")), 1.0f)) : v;
    const Tensor s = add(mul(attention_ref::logits(p, q, k), tau), attention_ref::causal_mask(n, causal));
    return matmul(softmax(s), tv);
  };
  e.golden = {
      "selective_bidir_n7",
      "selective_causal_n13_d8",
      "selective_causal_n7",
      "selective_causal_n7_pos_only",
  };
  return e;
}

}  // namespace softlab
