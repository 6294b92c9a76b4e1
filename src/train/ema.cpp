// The weight EMA (ema.hpp).
#include "softlab/ema.hpp"

#include <algorithm>

#include "softlab/error.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
nn::NamedTensors cloned(const nn::NamedTensors& s) {
  nn::NamedTensors out;
  out.reserve(s.size());
  for (const auto& [n, t] : s) out.emplace_back(n, t.clone());
  return out;
}
}  // namespace

WeightEma::WeightEma(nn::Model& model, double decay) : model_(model), decay_(decay), ema_(cloned(model.state())) {
  for (const auto& p : model.parameters()) params_.push_back(p.tensor);
  // state() lists the parameters first, in parameters() order (module.hpp).
  SOFTLAB_ASSERT(params_.size() <= ema_.size(), "WeightEma: more parameters than state tensors");
}

double WeightEma::decay_at(double decay, int64_t step) {
  const double t = static_cast<double>(step);
  return std::min(decay, (1.0 + t) / (10.0 + t));
}

void WeightEma::update(int64_t step) {
  const float d = static_cast<float>(decay_at(decay_, step)), w = 1.0f - d;
  for (size_t i = 0; i < params_.size(); ++i) {
    float* e = ema_[i].second.mutable_data();
    const float* p = params_[i].data();
    parallel_for(0, params_[i].numel(), 1 << 15, [&](int64_t b, int64_t end) {
      for (int64_t j = b; j < end; ++j) e[j] = d * e[j] + w * p[j];
    });
  }
}

void WeightEma::load_state(const nn::NamedTensors& state) {
  SOFTLAB_CHECK(state.size() == ema_.size(), "checkpoint: the weight EMA has ", state.size(), " tensors, the model ",
                ema_.size());
  for (size_t i = 0; i < ema_.size(); ++i) {
    SOFTLAB_CHECK(state[i].first == ema_[i].first && state[i].second.shape() == ema_[i].second.shape(),
                  "checkpoint: weight EMA tensor ", state[i].first, " ", state[i].second.shape(), " does not match the model's ",
                  ema_[i].first, " ", ema_[i].second.shape());
    std::copy_n(state[i].second.data(), state[i].second.numel(), ema_[i].second.mutable_data());
  }
}

WeightEma::Swap::Swap(WeightEma& e) : e_(e), raw_(cloned(e.model_.state())) { e_.model_.load_state(e_.ema_); }
WeightEma::Swap::~Swap() { e_.model_.load_state(raw_); }

}  // namespace softlab
