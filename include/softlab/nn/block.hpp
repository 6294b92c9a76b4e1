#pragma once
// Multi-head self-attention (qkv projection, a registered Attention module per head,
// output projection) and the pre-norm transformer block
//   x <- x + drop(attn(LN(x))),  x <- x + drop(mlp(LN(x))).
#include <memory>

#include "softlab/attention.hpp"
#include "softlab/nn/layers.hpp"

namespace softlab::nn {

class SelfAttention : public Module {
 public:
  SelfAttention(int64_t dim, int64_t heads, std::unique_ptr<Attention> attn, Generator& init);
  Tensor forward(const Tensor& x);  // [B, N, D] -> [B, N, D]
  Linear* qkv;
  Attention* attn;
  Linear* proj;

 private:
  int64_t dim_, heads_;
};

struct BlockOptions {
  int64_t dim = 64, heads = 4, mlp_hidden = 128;
  float dropout = 0.0f;
};

class Block : public Module {
 public:
  Block(const BlockOptions& opt, std::unique_ptr<Attention> attn, Generator& init, Generator* dropout_gen);
  Tensor forward(const Tensor& x);
  LayerNorm* norm1;
  SelfAttention* attn;
  LayerNorm* norm2;
  Mlp* mlp;

 private:
  float dropout_;
  Generator* dropout_gen_;
};

}  // namespace softlab::nn
