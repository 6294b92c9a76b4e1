// The config-derived parts shared by ViT and SeqModel (src/nn/trunk.hpp).
#include "nn/trunk.hpp"

namespace softlab::nn::detail {

AttentionContext attention_context(const Config::Model& cfg, int64_t seq_len, Generator& init) {
  AttentionContext a;
  a.dim = cfg.dim;
  a.heads = cfg.heads;
  a.head_dim = cfg.dim / cfg.heads;
  a.seq_len = seq_len;
  a.init = &init;
  return a;
}

json attention_config(const Config::Model& cfg) {
  json a = cfg.attention;
  const std::string type = a.value("type", "softmax");
  const AttentionEntry& entry = attention_registry().get(type, "model.attention.type");
  if (entry.caps.causal) {
    a["causal"] = cfg.causal;
  } else {
    SOFTLAB_CHECK(!cfg.causal, "model.causal is true but model.attention.type '", type,
                  "' has no causal form; set model.causal to false or pick a module with one");
  }
  return a;
}

BlockOptions block_options(const Config::Model& cfg) {
  BlockOptions b;
  b.dim = cfg.dim;
  b.heads = cfg.heads;
  b.mlp_hidden = static_cast<int64_t>(cfg.mlp_ratio * static_cast<double>(cfg.dim) + 0.5);
  b.dropout = static_cast<float>(cfg.dropout);
  b.qk_norm = cfg.qk_norm;
  b.layer_scale = static_cast<float>(cfg.layer_scale);
  b.causal = cfg.causal;
  b.attn_gate = cfg.attn_gate;
  b.value_conv = cfg.value_conv;
  b.value_conv_per_head = cfg.value_conv_groups == "head";
  b.attn_out_norm = cfg.attn_out_norm;
  return b;
}

float drop_path_rate(const Config::Model& cfg, int64_t block) {
  if (cfg.depth <= 1) return static_cast<float>(cfg.drop_path);
  return static_cast<float>(cfg.drop_path * static_cast<double>(block) / static_cast<double>(cfg.depth - 1));
}

HeadContext head_context(const Config::Model& cfg, int64_t num_classes, int64_t train_size, uint64_t seed,
                         Generator& init) {
  HeadContext h;
  h.in_dim = cfg.dim;
  h.num_classes = num_classes;
  h.train_size = train_size;
  h.seed = seed;
  h.init = &init;
  return h;
}

}  // namespace softlab::nn::detail
