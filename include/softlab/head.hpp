#pragma once
// The classifier head interface and its registry. A head turns pooled features [B, D] into
// class scores [B, C] and, given labels, a scalar training loss (mean over the batch plus
// any parameter penalty). In eval mode the loss is the data term only, so heads with
// different regularisers report comparable test losses.
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "softlab/nn/module.hpp"
#include "softlab/random.hpp"
#include "softlab/registry.hpp"
#include "softlab/schema.hpp"

namespace softlab {

struct HeadContext {
  int64_t in_dim = 0;
  int64_t num_classes = 0;
  int64_t train_size = 0;  // examples in the training set (some presets scale penalties by it)
  uint64_t seed = 0;       // for heads that generate fixed buffers
  Generator* init = nullptr;  // the initialisation stream for the head's parameters
};

struct HeadOutput {
  Tensor scores;  // [B, C]
  Tensor loss;    // scalar; undefined when no labels were given
};

class Head : public nn::Module {
 public:
  virtual HeadOutput forward(const Tensor& features, std::span<const int32_t> labels) = 0;
  // The head's decision rule; the default is arg-max with ties to the lowest index.
  virtual std::vector<int32_t> predict(const Tensor& scores) const;
};

using HeadFactory = std::function<std::unique_ptr<Head>(const json& params, const HeadContext& ctx)>;
using HeadEntry = RegistryEntry<HeadFactory>;

const Registry<HeadFactory>& head_registry();

std::unique_ptr<Head> make_head(const json& cfg, const HeadContext& ctx, const std::string& path = "model.head");

// Arg-max per row, ties to the lowest index.
std::vector<int32_t> argmax_rows(const Tensor& scores);

}  // namespace softlab
