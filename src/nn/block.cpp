// SelfAttention and the pre-norm transformer Block.
#include "softlab/nn/block.hpp"

#include "attention/row_kernel.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"

namespace softlab::nn {

SelfAttention::SelfAttention(const BlockOptions& opt, std::unique_ptr<Attention> a, Generator& init)
    : dim_(opt.dim),
      heads_(opt.heads),
      rope_theta_(opt.rope_theta),
      causal_(opt.causal),
      grid_h_(opt.grid_h),
      grid_w_(opt.grid_w),
      prefix_(opt.prefix_tokens) {
  const int64_t dim = opt.dim, heads = opt.heads;
  SOFTLAB_CHECK(heads > 0 && dim % heads == 0, "model.dim (", dim, ") must be divisible by model.heads (", heads, ")");
  qkv = register_module("qkv", std::make_unique<Linear>(dim, 3 * dim, init));
  if (opt.qk_norm) {
    q_norm = register_module("q_norm", std::make_unique<LayerNorm>(dim / heads, 1e-6f));
    k_norm = register_module("k_norm", std::make_unique<LayerNorm>(dim / heads, 1e-6f));
  }
  attn = register_module("attn", std::move(a));
  if (opt.value_conv > 0) {
    SOFTLAB_CHECK(grid_h_ > 0 && grid_w_ > 0, "model.value_conv convolves V over the image grid, and this model's "
                  "tokens have none (it works in the vit only); set model.value_conv to null");
    // LePE (per channel) has a bias, as the release's nn.Conv2d; the per-head kernel has none.
    value_conv = register_module("value_conv", std::make_unique<GridConv>(dim, opt.value_conv_per_head ? heads : dim,
                                                                          opt.value_conv, !opt.value_conv_per_head,
                                                                          init));
  }
  if (opt.attn_gate) gate = register_module("gate", std::make_unique<Linear>(dim, dim, init));
  proj = register_module("proj", std::make_unique<Linear>(dim, dim, init));
  if (opt.attn_out_norm) out_norm = register_module("out_norm", std::make_unique<LayerNorm>(dim, 1e-6f));
}

// Right padding: a causal module never looks past a query, so the valid queries see valid
// keys only and the padded batch is computed as it is. A bidirectional one would see the
// padding: each sequence with padding runs alone on its valid prefix (every built-in
// module's forward takes any length), its padded rows set to zero.
Tensor SelfAttention::attend(const Tensor& q, const Tensor& k, const Tensor& v, std::span<const int64_t> lengths) {
  const int64_t B = q.shape()[0], H = q.shape()[1], N = q.shape()[2], Dh = q.shape()[3];
  bool padded = false;
  for (int64_t len : lengths) padded |= len < N;
  if (causal_ || !padded) return attn->forward(q, k, v);
  std::vector<Tensor> outs;
  outs.reserve(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = lengths[static_cast<size_t>(b)];
    auto take = [&](const Tensor& t) { return slice(slice(t, 0, b, b + 1), 2, 0, len); };
    Tensor o = attn->forward(take(q), take(k), take(v));  // [1, H, len, Dh]
    if (len < N) o = concat({o, zeros({1, H, N - len, Dh})}, 2);
    outs.push_back(o);
  }
  return concat(outs, 0);
}

Tensor SelfAttention::forward(const Tensor& x, std::span<const int64_t> lengths) {
  const int64_t B = x.shape()[0], N = x.shape()[1], H = heads_, Dh = dim_ / heads_;
  SOFTLAB_CHECK(lengths.empty() || static_cast<int64_t>(lengths.size()) == B, "SelfAttention: ", lengths.size(),
                " sequence lengths for a batch of ", B);
  bool padded = false;
  for (int64_t len : lengths) {
    SOFTLAB_CHECK(len >= 1 && len <= N, "SelfAttention: a sequence length of ", len, " in a batch of ", N, " tokens");
    padded |= len < N;
  }
  Tensor y = qkv->forward(x);  // [B, N, 3, H, Dh]
  // The extras after the attention function, on its merged output o [B, N, D].
  auto finish = [&](Tensor o) {
    if (value_conv) {
      const Tensor v_tokens = reshape(slice(reshape(y, {B, N, 3, dim_}), 2, 2, 3), {B, N, dim_});
      o = add(o, value_conv->forward(v_tokens, grid_h_, grid_w_, prefix_));
    }
    if (gate) o = mul(o, gate->forward(x));
    Tensor out = proj->forward(o);
    return out_norm ? out_norm->forward(out) : out;
  };
  // The row-map modules (softmax, sigmoid, ...) read q, k, v in place and write o as
  // [B, N, H·Dh]: no split or merge copies (attention/row_kernel.hpp). QK-norm and RoPE
  // transform q and k first, so they take the per-head path below.
  if (!q_norm && rope_theta_ <= 0.0f && (causal_ || !padded))
    if (auto* packed = dynamic_cast<attention_kernel::PackedQkvAttention*>(attn)) return finish(packed->forward_packed(y, H));
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
  Tensor o = attend(q, k, v, lengths);
  return finish(reshape(permute(o, {0, 2, 1, 3}), {B, N, dim_}));
}

Block::Block(const BlockOptions& opt, std::unique_ptr<Attention> a, Generator& init, Generator* dropout_gen)
    : dropout_(opt.dropout), drop_path_(opt.drop_path), dropout_gen_(dropout_gen) {
  norm1 = register_module("norm1", std::make_unique<LayerNorm>(opt.dim));
  attn = register_module("attn",
                         std::make_unique<SelfAttention>(opt, std::move(a), init));
  norm2 = register_module("norm2", std::make_unique<LayerNorm>(opt.dim));
  mlp = register_module("mlp", std::make_unique<Mlp>(opt.dim, opt.mlp_hidden, init));
  if (opt.layer_scale > 0.0f) {
    ls1 = register_parameter("ls1", full({opt.dim}, opt.layer_scale), false);
    ls2 = register_parameter("ls2", full({opt.dim}, opt.layer_scale), false);
  }
}

Tensor Block::forward(const Tensor& x, std::span<const int64_t> lengths) {
  auto drop = [&](const Tensor& t) {
    return (training() && dropout_ > 0.0f && dropout_gen_) ? dropout(t, dropout_, *dropout_gen_) : t;
  };
  // Stochastic depth drops a whole residual branch per example, after its dropout.
  auto skip = [&](const Tensor& t) {
    return (training() && drop_path_ > 0.0f && dropout_gen_) ? drop_path(t, drop_path_, *dropout_gen_) : t;
  };
  auto gain = [](const Tensor& t, const Tensor& g) { return g.defined() ? mul(t, g) : t; };
  Tensor h = add(x, skip(drop(gain(attn->forward(norm1->forward(x), lengths), ls1))));
  return add(h, skip(drop(gain(mlp->forward(norm2->forward(h)), ls2))));
}

}  // namespace softlab::nn
