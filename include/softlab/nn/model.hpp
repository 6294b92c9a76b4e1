#pragma once
// What the trainer, evaluation and the command line need of a model, whichever kind it is
// (ViT on images, SeqModel on token sequences): a forward pass into a registered head, the
// labels that forward scores, and the dropout stream the trainer reseeds every step.
#include <memory>
#include <span>
#include <vector>

#include "softlab/error.hpp"
#include "softlab/head.hpp"
#include "softlab/module.hpp"
#include "softlab/random.hpp"

namespace softlab::nn {

class Model : public Module {
 public:
  // input: images [B, C, H, W] (vit) or token ids as floats [B, N] (seq). labels: one per
  // image, or one per position with -1 where nothing is predicted (seq). Without labels the
  // head scores one row per example (the last position of a sequence).
  virtual HeadOutput forward(const Tensor& input, std::span<const int32_t> labels = {}) = 0;
  // The same with soft targets [B, C] (mixup, CutMix) for the head's forward_soft. Models
  // that cannot (sequences) throw an Error.
  virtual HeadOutput forward_soft(const Tensor& input, const Tensor& targets) {
    (void)input, (void)targets;
    throw Error("this model does not train on soft targets (mixup, CutMix)");
  }
  // The labels forward(input, labels) scores, in the order of its score rows.
  virtual std::vector<int32_t> scored_labels(const Tensor& /*input*/, std::span<const int32_t> labels) const {
    return {labels.begin(), labels.end()};
  }
  virtual int64_t tokens() const = 0;  // tokens per example at the training size
  // Dropout masks come from this stream; the trainer reseeds it per step, so a resumed run
  // draws the same masks as an uninterrupted one.
  Generator& dropout_generator() { return dropout_gen_; }
  Head* head = nullptr;

 protected:
  explicit Model(uint64_t dropout_seed) : dropout_gen_(dropout_seed) {}
  Generator dropout_gen_;
};

}  // namespace softlab::nn
