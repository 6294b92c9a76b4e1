#pragma once
// An exponential moving average of a model's weights (Polyak averaging; timm's ModelEmaV3
// with its warm-up): after optimiser step t (1-based),
//     ema <- d_t ema + (1 - d_t) w,   d_t = min(decay, (1 + t) / (10 + t)),
// so the average follows the weights closely while they move fast at the start. It is
// evaluated beside the raw weights and saved in checkpoints under "ema.".
#include <cstdint>

#include "softlab/nn/model.hpp"

namespace softlab {

class WeightEma {
 public:
  // Starts as a copy of the model's state (parameters and buffers).
  WeightEma(nn::Model& model, double decay);
  static double decay_at(double decay, int64_t step);
  // After the optimiser's step `step` (1-based): averages every parameter in.
  void update(int64_t step);
  const nn::NamedTensors& state() const { return ema_; }
  void load_state(const nn::NamedTensors& state);  // from a checkpoint; names and shapes must match

  // Puts the averaged weights into the model for as long as it lives, then the raw ones back.
  class Swap {
   public:
    explicit Swap(WeightEma& e);
    ~Swap();
    Swap(const Swap&) = delete;
    Swap& operator=(const Swap&) = delete;

   private:
    WeightEma& e_;
    nn::NamedTensors raw_;
  };

 private:
  nn::Model& model_;
  double decay_;
  nn::NamedTensors ema_;        // copies, in the model's state() order
  std::vector<Tensor> params_;  // the model's live parameter tensors, parallel to ema_'s first entries
};

}  // namespace softlab
