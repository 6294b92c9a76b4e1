// SelfAttention and the pre-norm transformer Block.
#include "softlab/nn/block.hpp"

#include "softlab/error.hpp"
#include "softlab/ops.hpp"

namespace softlab::nn {

SelfAttention::SelfAttention(int64_t dim, int64_t heads, std::unique_ptr<Attention> a, Generator& init)
    : dim_(dim), heads_(heads) {
  SOFTLAB_CHECK(heads > 0 && dim % heads == 0, "model.dim (", dim, ") must be divisible by model.heads (", heads, ")");
  qkv = register_module("qkv", std::make_unique<Linear>(dim, 3 * dim, init));
  attn = register_module("attn", std::move(a));
  proj = register_module("proj", std::make_unique<Linear>(dim, dim, init));
}

Tensor SelfAttention::forward(const Tensor& x) {
  const int64_t B = x.shape()[0], N = x.shape()[1], H = heads_, Dh = dim_ / heads_;
  // [B, N, 3D] -> [3, B, H, N, Dh]: q, k, v each [B, H, N, Dh].
  Tensor t = permute(reshape(qkv->forward(x), {B, N, 3, H, Dh}), {2, 0, 3, 1, 4});
  Tensor q = reshape(slice(t, 0, 0, 1), {B, H, N, Dh});
  Tensor k = reshape(slice(t, 0, 1, 2), {B, H, N, Dh});
  Tensor v = reshape(slice(t, 0, 2, 3), {B, H, N, Dh});
  Tensor o = attn->forward(q, k, v);
  return proj->forward(reshape(permute(o, {0, 2, 1, 3}), {B, N, dim_}));
}

Block::Block(const BlockOptions& opt, std::unique_ptr<Attention> a, Generator& init, Generator* dropout_gen)
    : dropout_(opt.dropout), dropout_gen_(dropout_gen) {
  norm1 = register_module("norm1", std::make_unique<LayerNorm>(opt.dim));
  attn = register_module("attn", std::make_unique<SelfAttention>(opt.dim, opt.heads, std::move(a), init));
  norm2 = register_module("norm2", std::make_unique<LayerNorm>(opt.dim));
  mlp = register_module("mlp", std::make_unique<Mlp>(opt.dim, opt.mlp_hidden, init));
}

Tensor Block::forward(const Tensor& x) {
  auto drop = [&](const Tensor& t) {
    return (training() && dropout_ > 0.0f && dropout_gen_) ? dropout(t, dropout_, *dropout_gen_) : t;
  };
  Tensor h = add(x, drop(attn->forward(norm1->forward(x))));
  return add(h, drop(mlp->forward(norm2->forward(h))));
}

}  // namespace softlab::nn
