// ViT: patches (or the convolutional stem) -> [cls] + positions -> blocks -> norm -> pool -> head.
//
// With model.causal the blocks are causal (token i sees tokens 0..i) and the class token
// goes after the patches instead of before them, so that it sees every patch: the causal
// ViT of "Adapting LLaMA Decoder to Vision Transformer" (Wang et al. 2024, arXiv
// 2404.06773), whose post-sequence class token is what makes a causal mask work for
// classification (docs/attention.md, "Causal ViT").
#include "softlab/nn/vit.hpp"

#include "nn/trunk.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"

namespace softlab::nn {

ViT::ViT(const Config::Model& cfg, int64_t num_classes, int64_t train_size, uint64_t seed)
    : Model(seed ^ 0xd1b54a32d192ed03ULL), cfg_(cfg) {
  SOFTLAB_CHECK(cfg.type == "vit", "model.type: '", cfg.type, "' is not a vision transformer");
  SOFTLAB_CHECK(num_classes > 0, "model.num_classes must be positive, got ", num_classes);
  Generator init(seed);  // the initialisation stream
  const int64_t grid = cfg.image_size / cfg.patch_size;
  if (cfg.stem == "conv")
    conv_stem = register_module("stem", std::make_unique<ConvStem>(cfg.channels, cfg.image_size, grid,
                                                                   cfg.stem_width, cfg.dim, init));
  else
    patch_embed = register_module("patch_embed", std::make_unique<PatchEmbed>(cfg.channels, cfg.image_size,
                                                                               cfg.patch_size, cfg.dim, init));
  const bool use_cls = cfg.pool == "cls";
  tokens_ = grid * grid + (use_cls ? 1 : 0);
  if (use_cls) cls_token = register_parameter("cls_token", trunc_normal({1, 1, cfg.dim}, init, 0.02f), false);
  pos_embed = register_parameter("pos_embed", trunc_normal({1, tokens_, cfg.dim}, init, 0.02f), false);
  AttentionContext actx = detail::attention_context(cfg, tokens_, init);
  actx.grid_h = actx.grid_w = grid;
  actx.prefix_tokens = use_cls && !cfg.causal ? 1 : 0;  // a causal ViT's class token comes last
  BlockOptions bo = detail::block_options(cfg);
  bo.grid_h = actx.grid_h;
  bo.grid_w = actx.grid_w;
  bo.prefix_tokens = actx.prefix_tokens;
  const json attn = detail::attention_config(cfg);
  for (int64_t i = 0; i < cfg.depth; ++i) {
    bo.drop_path = detail::drop_path_rate(cfg, i);
    blocks.push_back(register_module("blocks." + std::to_string(i),
                                     std::make_unique<Block>(bo, make_attention(attn, actx), init,
                                                             &dropout_gen_)));
  }
  norm = register_module("norm", std::make_unique<LayerNorm>(cfg.dim));
  head = register_module("head", make_head(cfg.head, detail::head_context(cfg, num_classes, train_size, seed, init)));
}

Tensor ViT::features(const Tensor& images) {
  Tensor x = conv_stem ? conv_stem->forward(images) : patch_embed->forward(images);  // [B, P, D]
  const int64_t B = x.shape()[0];
  if (cls_token.defined()) {
    const Tensor cls = add(zeros({B, 1, cfg_.dim}), cls_token);
    x = cfg_.causal ? concat({x, cls}, 1) : concat({cls, x}, 1);
  }
  x = add(x, pos_embed);
  if (training() && cfg_.dropout > 0) x = dropout(x, static_cast<float>(cfg_.dropout), dropout_gen_);
  for (Block* b : blocks) x = b->forward(x);
  x = norm->forward(x);
  if (cls_token.defined()) {
    const int64_t at = cfg_.causal ? tokens_ - 1 : 0;
    return reshape(slice(x, 1, at, at + 1), {B, cfg_.dim});
  }
  return mean(x, 1);
}

HeadOutput ViT::forward(const Tensor& images, std::span<const int32_t> labels) {
  return head->forward(features(images), labels);
}

HeadOutput ViT::forward_soft(const Tensor& images, const Tensor& targets) {
  return head->forward_soft(features(images), targets);
}

}  // namespace softlab::nn
