#pragma once
// The vision transformer: patch embedding (or a convolutional stem), class token or mean
// pooling, learned position embedding, `depth` pre-norm blocks, a final LayerNorm and a
// registered head.
#include <memory>
#include <span>
#include <vector>

#include "softlab/config.hpp"
#include "softlab/head.hpp"
#include "softlab/nn/block.hpp"
#include "softlab/nn/model.hpp"

namespace softlab::nn {

class ViT : public Model {
 public:
  // train_size: examples in the training set (passed to the head's context).
  ViT(const Config::Model& cfg, int64_t num_classes, int64_t train_size, uint64_t seed);
  Tensor features(const Tensor& images);  // [B, C, H, W] -> pooled [B, D]
  HeadOutput forward(const Tensor& images, std::span<const int32_t> labels = {}) override;
  HeadOutput forward_soft(const Tensor& images, const Tensor& targets) override;
  int64_t tokens() const override { return tokens_; }

  PatchEmbed* patch_embed = nullptr;  // model.stem "patch"
  ConvStem* conv_stem = nullptr;      // model.stem "conv"
  std::vector<Block*> blocks;
  LayerNorm* norm;
  Tensor cls_token, pos_embed;

 private:
  Config::Model cfg_;
  int64_t tokens_;
};

}  // namespace softlab::nn
