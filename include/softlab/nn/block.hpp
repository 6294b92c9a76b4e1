#pragma once
// Multi-head self-attention (qkv projection, optional QK-norm, a registered Attention
// module per head, output projection) and the pre-norm transformer block
//   x <- x + drop(γ1 ∘ attn(LN(x))),  x <- x + drop(γ2 ∘ mlp(LN(x))),
// with the LayerScale gains γ only when BlockOptions::layer_scale > 0.
#include <memory>

#include "softlab/attention.hpp"
#include "softlab/nn/layers.hpp"

namespace softlab::nn {

class SelfAttention : public Module {
 public:
  // rope_theta > 0: rotary position embedding of q and k (after QK-norm) with that base.
  SelfAttention(int64_t dim, int64_t heads, std::unique_ptr<Attention> attn, Generator& init,
                bool qk_norm = false, float rope_theta = 0.0f);
  Tensor forward(const Tensor& x);  // [B, N, D] -> [B, N, D]
  Linear* qkv;
  // QK-norm (sigmoid attention's released configs, docs/attention.md): LayerNorm over Dh,
  // eps 1e-6, one learnable affine for q and one for k shared by the heads. Null when off.
  LayerNorm* q_norm = nullptr;
  LayerNorm* k_norm = nullptr;
  Attention* attn;
  Linear* proj;

 private:
  int64_t dim_, heads_;
  float rope_theta_;
};

struct BlockOptions {
  int64_t dim = 64, heads = 4, mlp_hidden = 128;
  float dropout = 0.0f;
  bool qk_norm = false;
  float layer_scale = 0.0f;  // initial γ of LayerScale (Touvron et al. 2021); 0: off
  float rope_theta = 0.0f;   // RoPE base for q and k; 0: off (the ViT's learned positions)
  float drop_path = 0.0f;    // probability of dropping each residual branch per example (training only)
};

class Block : public Module {
 public:
  Block(const BlockOptions& opt, std::unique_ptr<Attention> attn, Generator& init, Generator* dropout_gen);
  Tensor forward(const Tensor& x);
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
