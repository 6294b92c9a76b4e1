// SelfAttention and the pre-norm transformer Block.
#include "softlab/nn/block.hpp"

#include "attention/row_kernel.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"

namespace softlab::nn {

SelfAttention::SelfAttention(int64_t dim, int64_t heads, std::unique_ptr<Attention> a, Generator& init,
                             bool qk_norm, float rope_theta)
    : dim_(dim), heads_(heads), rope_theta_(rope_theta) {
  SOFTLAB_CHECK(heads > 0 && dim % heads == 0, "model.dim (", dim, ") must be divisible by model.heads (", heads, ")");
  qkv = register_module("qkv", std::make_unique<Linear>(dim, 3 * dim, init));
  if (qk_norm) {
    q_norm = register_module("q_norm", std::make_unique<LayerNorm>(dim / heads, 1e-6f));
    k_norm = register_module("k_norm", std::make_unique<LayerNorm>(dim / heads, 1e-6f));
  }
  attn = register_module("attn", std::move(a));
  proj = register_module("proj", std::make_unique<Linear>(dim, dim, init));
}

Tensor SelfAttention::forward(const Tensor& x) {
  const int64_t B = x.shape()[0], N = x.shape()[1], H = heads_, Dh = dim_ / heads_;
  Tensor y = qkv->forward(x);  // [B, N, 3, H, Dh]
  // The row-map modules (softmax, sigmoid, ...) read q, k, v in place and write o as
  // [B, N, H·Dh]: no split or merge copies (attention/row_kernel.hpp). QK-norm and RoPE
  // transform q and k first, so they take the per-head path below.
  if (!q_norm && rope_theta_ <= 0.0f)
    if (auto* packed = dynamic_cast<attention_kernel::PackedQkvAttention*>(attn))
      return proj->forward(packed->forward_packed(y, H));
  // [B, N, 3D] -> [3, B, H, N, Dh]: q, k, v each [B, H, N, Dh].
  Tensor t = permute(reshape(y, {B, N, 3, H, Dh}), {2, 0, 3, 1, 4});
  Tensor q = reshape(slice(t, 0, 0, 1), {B, H, N, Dh});
  Tensor k = reshape(slice(t, 0, 1, 2), {B, H, N, Dh});
  Tensor v = reshape(slice(t, 0, 2, 3), {B, H, N, Dh});
  if (q_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  if (rope_theta_ > 0.0f) {
    q = rope(q, rope_theta_);
    k = rope(k, rope_theta_);
  }
  Tensor o = attn->forward(q, k, v);
  return proj->forward(reshape(permute(o, {0, 2, 1, 3}), {B, N, dim_}));
}

Block::Block(const BlockOptions& opt, std::unique_ptr<Attention> a, Generator& init, Generator* dropout_gen)
    : dropout_(opt.dropout), drop_path_(opt.drop_path), dropout_gen_(dropout_gen) {
  norm1 = register_module("norm1", std::make_unique<LayerNorm>(opt.dim));
  attn = register_module("attn",
                         std::make_unique<SelfAttention>(opt.dim, opt.heads, std::move(a), init, opt.qk_norm,
                                                                opt.rope_theta));
  norm2 = register_module("norm2", std::make_unique<LayerNorm>(opt.dim));
  mlp = register_module("mlp", std::make_unique<Mlp>(opt.dim, opt.mlp_hidden, init));
  if (opt.layer_scale > 0.0f) {
    ls1 = register_parameter("ls1", full({opt.dim}, opt.layer_scale), false);
    ls2 = register_parameter("ls2", full({opt.dim}, opt.layer_scale), false);
  }
}

Tensor Block::forward(const Tensor& x) {
  auto drop = [&](const Tensor& t) {
    return (training() && dropout_ > 0.0f && dropout_gen_) ? dropout(t, dropout_, *dropout_gen_) : t;
  };
  // Stochastic depth drops a whole residual branch per example, after its dropout.
  auto skip = [&](const Tensor& t) {
    return (training() && drop_path_ > 0.0f && dropout_gen_) ? drop_path(t, drop_path_, *dropout_gen_) : t;
  };
  auto gain = [](const Tensor& t, const Tensor& g) { return g.defined() ? mul(t, g) : t; };
  Tensor h = add(x, skip(drop(gain(attn->forward(norm1->forward(x)), ls1))));
  return add(h, skip(drop(gain(mlp->forward(norm2->forward(h)), ls2))));
}

}  // namespace softlab::nn
