#pragma once
// The vision transformer: patch embedding, class token or mean pooling, learned position
// embedding, `depth` pre-norm blocks, a final LayerNorm and a registered head.
#include <memory>
#include <span>
#include <vector>

#include "softlab/config.hpp"
#include "softlab/head.hpp"
#include "softlab/nn/block.hpp"

namespace softlab::nn {

class ViT : public Module {
 public:
  // train_size: examples in the training set (passed to the head's context).
  ViT(const Config::Model& cfg, int64_t num_classes, int64_t train_size, uint64_t seed);
  Tensor features(const Tensor& images);  // [B, C, H, W] -> pooled [B, D]
  HeadOutput forward(const Tensor& images, std::span<const int32_t> labels = {});
  // Dropout masks come from this stream; the trainer reseeds it per step, so a resumed run
  // draws the same masks as an uninterrupted one.
  Generator& dropout_generator() { return dropout_gen_; }
  int64_t tokens() const { return tokens_; }

  PatchEmbed* patch_embed;
  std::vector<Block*> blocks;
  LayerNorm* norm;
  Head* head;
  Tensor cls_token, pos_embed;

 private:
  Config::Model cfg_;
  int64_t tokens_;
  Generator dropout_gen_;
};

}  // namespace softlab::nn
