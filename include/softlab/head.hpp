#pragma once
// The classifier head interface and its registry. A head turns pooled features [B, D] into
// class scores [B, C] and, given labels, a scalar training loss (mean over the batch plus
// any parameter penalty). In eval mode the loss is the data term only, so heads with
// different regularisers report comparable test losses.
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "softlab/module.hpp"
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
  // [B, C], for prediction and metrics. The loss is the differentiable output: heads whose
  // scores are not the linear layer's output (zloss, ebv, fourier) return them without
  // autograd history.
  Tensor scores;
  Tensor loss;  // scalar; undefined when no labels were given
};

class Head : public nn::Module {
 public:
  virtual HeadOutput forward(const Tensor& features, std::span<const int32_t> labels) = 0;
  // Soft targets [B, C]: each row a distribution over the classes (mixup, CutMix). The loss
  // is the head's loss against that distribution (docs/heads.md, "Soft targets"); with a
  // one-hot row it equals forward()'s loss for that label. Heads whose registry entry says
  // soft_targets implement it; the default throws an Error.
  virtual HeadOutput forward_soft(const Tensor& features, const Tensor& targets);
  // The head's decision rule; the default is arg-max with ties to the lowest index.
  virtual std::vector<int32_t> predict(const Tensor& scores) const;
  // The head's probabilities over the C classes, [B, C], from its scores: softmax for the
  // softmax-family heads, the Fourier head's density over its bins, StableMax's
  // normalised s(z). Undefined for heads without a probability model (svm, zloss).
  virtual Tensor probabilities(const Tensor& scores) const;
  // Facts about fixed buffers worth logging (the EBV basis's largest pairwise |cos|);
  // an empty object for most heads.
  virtual json info() const { return json::object(); }
};

using HeadFactory = std::function<std::unique_ptr<Head>(const json& params, const HeadContext& ctx)>;

// One head's registration: everything softlab and its test suite know about it.
struct HeadEntry {
  std::string name;  // model.head.type
  std::string help;  // one line: what it is and where it comes from
  Schema schema;     // its keys beside "type"
  HeadFactory factory;
  // Trains on class distributions (forward_soft: mixup, CutMix). Absent, a config that
  // mixes is refused at validation.
  bool soft_targets = false;
  // Golden cases: tests/golden/heads/<case>.json (tools/golden/heads.py). Every built-in
  // head has at least one.
  std::vector<std::string> golden = {};
  bool builtin = false;  // set by the registry for the built-in table
};

const Registry<HeadEntry>& head_registry();

// Adds a head to the registry, for user code and plugins, before a config names it.
// Throws an Error (exit 2 from the command line) if the name is taken or malformed or the
// entry has no factory.
const HeadEntry& register_head(HeadEntry entry);

std::unique_ptr<Head> make_head(const json& cfg, const HeadContext& ctx, const std::string& path = "model.head");

// True when the head type's registry entry says soft_targets (false for an
// unknown type).
bool head_takes_soft_targets(const std::string& type);

// The prediction for a row of scores holding NaN or infinity: no class, so that it never
// counts as correct (NaN compares false, and a plain arg-max would name class 0).
inline constexpr int32_t kNoClass = -1;
bool row_is_finite(const float* s, int64_t n);

// Arg-max per row, ties to the lowest index; kNoClass for a row with a non-finite score.
std::vector<int32_t> argmax_rows(const Tensor& scores);
// Rows whose label is among the k highest scores: its rank counts the classes scoring
// higher, and equal scores at a lower index (the arg-max tie rule), so k = 1 is argmax_rows.
// A row with a non-finite score is never among them.
int64_t topk_correct(const Tensor& scores, std::span<const int32_t> labels, int64_t k);

// The Equiangular Basis Vectors generator (docs/heads.md, `ebv`): C unit rows in R^d whose
// pairwise |cos| is pushed below `threshold` by plain gradient descent on
// sum_{i != j} relu(|cos_ij| - threshold), starting from seeded Gaussian rows.
struct EbvBasis {
  Tensor basis;           // [C, d], unit rows
  double max_cos = 0.0;   // the largest off-diagonal |cos| reached
  int64_t steps = 0;      // gradient steps taken (0 if the start already met the threshold)
  bool converged = false; // max_cos <= threshold + 1e-4
};
EbvBasis generate_ebv_basis(int64_t classes, int64_t dim, double threshold, double lr, int64_t max_steps,
                            uint64_t seed);
// Largest off-diagonal |cos| between the rows of a [C, d] matrix.
double max_pairwise_cos(const Tensor& rows);
// The Welch bound sqrt((C - d) / (d (C - 1))) on max |cos| of C unit vectors in R^d (0 if d >= C).
double welch_bound(int64_t classes, int64_t dim);

}  // namespace softlab
