#pragma once
// The attention interface and its registry. An attention module maps per-head
// q, k, v [B, H, N, Dh] to the per-head output [B, H, N, Dh]; the projections around it
// belong to the block (nn/block.hpp). `model.attention.type` picks a module by name; the
// other keys of that object are its parameters, validated against its schema.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "softlab/module.hpp"
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

// The same maths as a module's forward, composed from the differentiable primitive ops
// (softlab/ops.hpp), so that autograd gives its backward: the fused kernel is tested
// against it, values and gradients. `module` is the one the factory built from `params`
// (for its learnable parameters); q, k, v are [B, H, N, Dh].
using AttentionReference = std::function<Tensor(Attention& module, const json& params, const AttentionContext& ctx,
                                                const Tensor& q, const Tensor& k, const Tensor& v)>;

// What the rest of softlab may ask of a module; the test suite checks every claim.
struct AttentionCaps {
  // Has a causal form: query i sees keys 0..i. Exactly the modules whose schema has the
  // Bool key "causal" (register_attention checks it); a sequence model with causal
  // targets needs it.
  bool causal = false;
  // Needs the image grid of AttentionContext (SOFT's landmark pooling): only the ViT has it.
  bool needs_grid = false;
  // Has learnable parameters (in some configuration): they train with the model, load and
  // save with it, and get gradient checks.
  bool learnable = false;
  // Takes right-padded batches (the sequence model's variable-length mode, data.min_length):
  // its forward depends only on the tokens it is given, at any length up to the context's,
  // so a padded sequence's outputs at its valid positions are what the sequence gives alone.
  // The block arranges that: causal, padding comes after every valid query and is never seen;
  // bidirectional, each sequence runs on its valid prefix. A module without it (a fixed
  // token count, the image grid) is refused for padded data at validation.
  bool padding = false;
};

// One module's registration: everything softlab and its test suite know about it.
struct AttentionEntry {
  std::string name;  // model.attention.type
  std::string help;  // one line: what it is and where it comes from
  Schema schema;     // its keys beside "type"
  AttentionFactory factory;
  AttentionCaps caps = {};
  AttentionReference reference = {};  // optional
  // Golden cases: tests/golden/attention/<case>.json (computed in float64 by
  // tools/golden/attention.py). Every built-in module has at least one.
  std::vector<std::string> golden = {};
  bool builtin = false;  // set by the registry for the built-in table
};

const Registry<AttentionEntry>& attention_registry();

// Adds a module to the registry, for user code and plugins, before a config names it.
// Throws an Error (exit 2 from the command line) if the name is taken or malformed, the
// entry has no factory, or caps.causal and the schema's "causal" key disagree.
const AttentionEntry& register_attention(AttentionEntry entry);

// cfg: {"type": name, ...params}; params are validated (and defaults filled) here too.
std::unique_ptr<Attention> make_attention(const json& cfg, const AttentionContext& ctx,
                                          const std::string& path = "model.attention");

}  // namespace softlab
