#pragma once
// The sequence transformer (model.type "seq"): token embedding, positions (RoPE on q and k,
// a learned table, or none), `depth` pre-norm blocks, causal or bidirectional, with the same
// attention registry as the ViT, a final LayerNorm and a registered head on every position
// that has a target (model.target "all") or on the last position only ("last").
#include "softlab/config.hpp"
#include "softlab/nn/block.hpp"
#include "softlab/nn/model.hpp"

namespace softlab::nn {

class SeqModel : public Model {
 public:
  // vocab: tokens; train_length: the training sequence length (the attention context's
  // seq_len); max_length: the longest sequence it will see (the learned table's size).
  // pad_token >= 0: that token is right padding: a sequence ends at its first one, and
  // nothing after it reaches a valid position (SelfAttention's lengths).
  SeqModel(const Config::Model& cfg, int64_t vocab, int64_t num_classes, int64_t train_length, int64_t max_length,
           int64_t train_size, uint64_t seed, int32_t pad_token = -1);
  HeadOutput forward(const Tensor& tokens, std::span<const int32_t> labels = {}) override;
  std::vector<int32_t> scored_labels(const Tensor& tokens, std::span<const int32_t> labels) const override;
  int64_t tokens() const override { return train_length_; }
  Tensor features(const Tensor& tokens);  // [B, N] ids -> [B, N, D]

  Tensor tok_embed, pos_embed;  // pos_embed undefined unless positions == "learned"
  std::vector<Block*> blocks;
  LayerNorm* norm;

 private:
  // Rows of the flattened [B*N] positions that the head scores.
  std::vector<int32_t> scored_rows(std::span<const int32_t> labels, int64_t B, int64_t N) const;
  Config::Model cfg_;
  int64_t vocab_, train_length_, max_length_;
  int32_t pad_token_;
};

}  // namespace softlab::nn
