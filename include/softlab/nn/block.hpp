#pragma once
// Multi-head self-attention (qkv projection, optional QK-norm, a registered Attention
// module per head, the optional block extras, output projection) and the pre-norm
// transformer block
//   x <- x + drop(γ1 ∘ attn(LN(x))),  x <- x + drop(γ2 ∘ mlp(LN(x))),
// with the LayerScale gains γ only when BlockOptions::layer_scale > 0.
#include <memory>
#include <span>

#include "softlab/attention.hpp"
#include "softlab/nn/layers.hpp"

namespace softlab::nn {

struct BlockOptions {
  int64_t dim = 64, heads = 4, mlp_hidden = 128;
  float dropout = 0.0f;
  bool qk_norm = false;
  float layer_scale = 0.0f;  // initial γ of LayerScale (Touvron et al. 2021); 0: off
  float rope_theta = 0.0f;   // RoPE base for q and k; 0: off (the ViT's learned positions)
  float drop_path = 0.0f;    // probability of dropping each residual branch per example (training only)
  bool causal = false;       // the attention is causal (model.causal): right padding needs no masking
  // The attention branch's extras (docs/attention.md, "Block extras"); all off by default.
  bool attn_gate = false;            // MALA's output gate: (attention + value conv) ∘ (x W_g + b_g) before proj
  int64_t value_conv = 0;            // k of the depthwise k x k conv of V over the image grid; 0: off
  bool value_conv_per_head = false;  // one kernel per head (SOFT) instead of per channel (MALA's LePE)
  bool attn_out_norm = false;        // hybrid norm: LayerNorm on the attention branch before the residual add
  // The image grid of the tokens (the value conv needs it): tokens [prefix_tokens,
  // prefix_tokens + grid_h*grid_w) are the patches, row-major. 0: no grid.
  int64_t grid_h = 0, grid_w = 0, prefix_tokens = 0;
};

// The attention branch: y = x W_qkv + b, split into per-head q, k, v; optional QK-norm and
// RoPE on q and k; o = attn(q, k, v) merged over heads; then the optional extras
//   o <- o + conv_grid(V)   (value_conv)     o <- o ∘ gate(x)   (attn_gate)
//   out = proj(o)           out <- LayerNorm(out)   (attn_out_norm)
class SelfAttention : public Module {
 public:
  SelfAttention(const BlockOptions& opt, std::unique_ptr<Attention> attn, Generator& init);
  // x [B, N, D] -> [B, N, D]. `lengths` (empty, or one per sequence): sequence b's tokens
  // are [0, lengths[b]) and the rest is right padding, which no valid position sees; the
  // outputs at padded positions are unspecified (finite) and must not be used.
  Tensor forward(const Tensor& x, std::span<const int64_t> lengths = {});
  Linear* qkv;
  // QK-norm (sigmoid attention's released configs, docs/attention.md): LayerNorm over Dh,
  // eps 1e-6, one learnable affine for q and one for k shared by the heads. Null when off.
  LayerNorm* q_norm = nullptr;
  LayerNorm* k_norm = nullptr;
  Attention* attn;
  GridConv* value_conv = nullptr;  // null when off
  Linear* gate = nullptr;          // null when off
  Linear* proj;
  LayerNorm* out_norm = nullptr;   // null when off

 private:
  int64_t dim_, heads_;
  // The attention function on per-head q, k, v [B, H, N, Dh], honouring right padding.
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, std::span<const int64_t> lengths);
  float rope_theta_;
  bool causal_;
  int64_t grid_h_, grid_w_, prefix_;
};

class Block : public Module {
 public:
  Block(const BlockOptions& opt, std::unique_ptr<Attention> attn, Generator& init, Generator* dropout_gen);
  Tensor forward(const Tensor& x, std::span<const int64_t> lengths = {});  // lengths: as SelfAttention's
  LayerNorm* norm1;
  SelfAttention* attn;
  LayerNorm* norm2;
  Mlp* mlp;
  Tensor ls1, ls2;  // LayerScale gains [D]; undefined when off

 private:
  float dropout_;
  float drop_path_;
  Generator* dropout_gen_;
};

}  // namespace softlab::nn
