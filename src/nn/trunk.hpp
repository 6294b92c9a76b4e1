#pragma once
// What the ViT and the sequence model build alike from their config: the attention context,
// the blocks' options and the head's context.
#include "softlab/attention.hpp"
#include "softlab/config.hpp"
#include "softlab/head.hpp"
#include "softlab/nn/block.hpp"

namespace softlab::nn::detail {

AttentionContext attention_context(const Config::Model& cfg, int64_t seq_len, Generator& init);
// model.attention with the module's "causal" key set from model.causal, the one causality
// key (a module without a causal form has no such key, and model.causal must be false).
json attention_config(const Config::Model& cfg);
BlockOptions block_options(const Config::Model& cfg);  // RoPE off: the sequence model turns it on
// Stochastic depth of block i: linear in depth, from 0 (first block) to model.drop_path (last).
float drop_path_rate(const Config::Model& cfg, int64_t block);
HeadContext head_context(const Config::Model& cfg, int64_t num_classes, int64_t train_size, uint64_t seed,
                         Generator& init);

}  // namespace softlab::nn::detail
