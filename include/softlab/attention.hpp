#pragma once
// The attention interface and its registry. An attention module maps per-head
// q, k, v [B, H, N, Dh] to the per-head output [B, H, N, Dh]; the projections around it
// belong to the block (nn/block.hpp). `model.attention.type` picks a module by name; the
// other keys of that object are its parameters, validated against its schema.
#include <functional>
#include <memory>

#include "softlab/nn/module.hpp"
#include "softlab/random.hpp"
#include "softlab/registry.hpp"
#include "softlab/schema.hpp"

namespace softlab {

struct AttentionContext {
  int64_t dim = 0, heads = 0, head_dim = 0;
  int64_t seq_len = 0;  // tokens per sequence at training time (the ViT's patches + class token)
  // The image grid behind the tokens, for modules that pool over it (SOFT's landmarks):
  // tokens [prefix_tokens, prefix_tokens + grid_h*grid_w) are the patches in row-major
  // order; the first prefix_tokens (the class token) are not on the grid. 0 = no grid.
  int64_t grid_h = 0, grid_w = 0, prefix_tokens = 0;
  Generator* init = nullptr;  // the initialisation stream, for modules with parameters
};

class Attention : public nn::Module {
 public:
  virtual Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) = 0;
};

using AttentionFactory = std::function<std::unique_ptr<Attention>(const json& params, const AttentionContext& ctx)>;
using AttentionEntry = RegistryEntry<AttentionFactory>;

const Registry<AttentionFactory>& attention_registry();

// cfg: {"type": name, ...params}; params are validated (and defaults filled) here too.
std::unique_ptr<Attention> make_attention(const json& cfg, const AttentionContext& ctx,
                                          const std::string& path = "model.attention");

}  // namespace softlab
