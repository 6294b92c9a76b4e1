// SeqModel: tokens -> embedding (+ learned positions) -> blocks (RoPE inside attention) ->
// norm -> the rows that have targets -> head.
#include "softlab/nn/seq.hpp"

#include <algorithm>

#include "nn/trunk.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"

namespace softlab::nn {


SeqModel::SeqModel(const Config::Model& cfg, int64_t vocab, int64_t num_classes, int64_t train_length,
                   int64_t max_length, int64_t train_size, uint64_t seed, int32_t pad_token)
    : Model(seed ^ 0xd1b54a32d192ed03ULL), cfg_(cfg), vocab_(vocab), train_length_(train_length),
      max_length_(std::max(max_length, train_length)), pad_token_(pad_token) {
  SOFTLAB_CHECK(cfg.type == "seq", "model.type: '", cfg.type, "' is not a sequence model");
  SOFTLAB_CHECK(vocab > 0 && num_classes > 0 && train_length > 0, "a sequence model needs a vocabulary (", vocab,
                "), classes (", num_classes, ") and a training length (", train_length, ")");
  SOFTLAB_CHECK(cfg.positions != "rope" || (cfg.dim / cfg.heads) % 2 == 0, "model.positions 'rope' needs an even "
                "head size (dim/heads = ", cfg.dim / cfg.heads, "): channels turn in pairs");
  Generator init(seed);
  tok_embed = register_parameter("tok_embed", trunc_normal({vocab, cfg.dim}, init, 0.02f), false);
  if (cfg.positions == "learned")
    pos_embed = register_parameter("pos_embed", trunc_normal({1, max_length_, cfg.dim}, init, 0.02f), false);
  const AttentionContext actx = detail::attention_context(cfg, train_length, init);
  BlockOptions bo = detail::block_options(cfg);
  bo.rope_theta = cfg.positions == "rope" ? static_cast<float>(cfg.rope_theta) : 0.0f;
  const json attn = detail::attention_config(cfg);
  for (int64_t i = 0; i < cfg.depth; ++i) {
    bo.drop_path = detail::drop_path_rate(cfg, i);
    blocks.push_back(register_module(
        "blocks." + std::to_string(i),
        std::make_unique<Block>(bo, make_attention(attn, actx), init, &dropout_gen_)));
  }
  norm = register_module("norm", std::make_unique<LayerNorm>(cfg.dim));
  head = register_module("head", make_head(cfg.head, detail::head_context(cfg, num_classes, train_size, seed, init)));
}

Tensor SeqModel::features(const Tensor& tokens) {
  SOFTLAB_CHECK(tokens.rank() == 2, "SeqModel: expected token ids [B, N], got shape ", tokens.shape());
  const int64_t B = tokens.shape()[0], N = tokens.shape()[1];
  SOFTLAB_CHECK(!pos_embed.defined() || N <= max_length_, "SeqModel: a sequence of ", N,
                " tokens is longer than the learned position table (", max_length_,
                "); list the length in data.eval_lengths before training, or use model.positions 'rope' or 'none'");
  std::vector<int32_t> ids(static_cast<size_t>(B * N));
  const float* t = tokens.data();
  for (int64_t i = 0; i < B * N; ++i) {
    const float v = t[i];
    SOFTLAB_CHECK(v >= 0.0f && v < static_cast<float>(vocab_) && v == static_cast<float>(static_cast<int32_t>(v)),
                  "SeqModel: token ", v, " at position ", i % N, " of sequence ", i / N,
                  " is not an id in [0, ", vocab_, ")");
    ids[static_cast<size_t>(i)] = static_cast<int32_t>(v);
  }
  // Right padding: each sequence ends at its first padding token, and only padding may follow.
  std::vector<int64_t> lengths;
  if (pad_token_ >= 0) {
    lengths.assign(static_cast<size_t>(B), N);
    for (int64_t b = 0; b < B; ++b) {
      const int32_t* row = ids.data() + b * N;
      int64_t len = 0;
      while (len < N && row[len] != pad_token_) ++len;
      for (int64_t i = len; i < N; ++i)
        SOFTLAB_CHECK(row[i] == pad_token_, "SeqModel: sequence ", b, " has token ", row[i], " at position ", i,
                      " after padding (token ", pad_token_, ") at ", len, ": padding must come last");
      SOFTLAB_CHECK(len > 0, "SeqModel: sequence ", b, " is all padding");
      lengths[static_cast<size_t>(b)] = len;
    }
  }
  Tensor x = embedding(tok_embed, ids, Shape{B, N});  // [B, N, D]
  if (pos_embed.defined()) x = add(x, slice(pos_embed, 1, 0, N));
  if (training() && cfg_.dropout > 0) x = dropout(x, static_cast<float>(cfg_.dropout), dropout_gen_);
  for (Block* b : blocks) x = b->forward(x, lengths);
  return norm->forward(x);
}

std::vector<int32_t> SeqModel::scored_rows(std::span<const int32_t> labels, int64_t B, int64_t N) const {
  std::vector<int32_t> rows;
  if (labels.empty()) {
    for (int64_t b = 0; b < B; ++b) rows.push_back(static_cast<int32_t>(b * N + N - 1));
    return rows;
  }
  SOFTLAB_CHECK(static_cast<int64_t>(labels.size()) == B * N, "SeqModel: ", labels.size(),
                " labels for a batch of ", B, " sequences of ", N, " tokens (expected one per position)");
  const bool last_only = cfg_.target == "last";
  for (int64_t i = 0; i < B * N; ++i)
    if (labels[static_cast<size_t>(i)] >= 0 && (!last_only || i % N == N - 1)) rows.push_back(static_cast<int32_t>(i));
  return rows;
}

std::vector<int32_t> SeqModel::scored_labels(const Tensor& tokens, std::span<const int32_t> labels) const {
  std::vector<int32_t> r;
  for (int32_t row : scored_rows(labels, tokens.shape()[0], tokens.shape()[1])) r.push_back(labels[static_cast<size_t>(row)]);
  return r;
}

HeadOutput SeqModel::forward(const Tensor& tokens, std::span<const int32_t> labels) {
  Tensor x = features(tokens);
  const int64_t B = x.shape()[0], N = x.shape()[1], D = x.shape()[2];
  const std::vector<int32_t> rows = scored_rows(labels, B, N);
  SOFTLAB_CHECK(!rows.empty(), "SeqModel: this batch has no position with a target",
                cfg_.target == "last" ? " at the last position (model.target is 'last')" : "");
  Tensor h = index_select(reshape(x, {B * N, D}), rows, Shape{static_cast<int64_t>(rows.size())});
  if (labels.empty()) return head->forward(h, {});
  std::vector<int32_t> kept;
  kept.reserve(rows.size());
  for (int32_t r : rows) kept.push_back(labels[static_cast<size_t>(r)]);
  return head->forward(h, kept);
}

}  // namespace softlab::nn
