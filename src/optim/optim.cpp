// AdamW and SGD, schedules and gradient clipping.
#include "softlab/optim.hpp"

#include <cmath>
#include <map>

#include "softlab/error.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

void Optimizer::zero_grad() {
  for (auto& p : params_) p.tensor.zero_grad();
}

namespace {
// Looks up "prefix<name>" in a saved state and copies it into t; errors name the tensor.
void restore(const std::map<std::string, Tensor>& st, const std::string& key, Tensor& t) {
  auto it = st.find(key);
  SOFTLAB_CHECK(it != st.end(), "optimizer state: '", key, "' is missing from the checkpoint");
  SOFTLAB_CHECK(it->second.shape() == t.shape(), "optimizer state: '", key, "' has shape ", it->second.shape(),
                " in the checkpoint but ", t.shape(), " in the model");
  std::copy(it->second.data(), it->second.data() + t.numel(), t.mutable_data());
}

std::map<std::string, Tensor> as_map(const nn::NamedTensors& st) { return {st.begin(), st.end()}; }

int64_t restore_steps(const std::map<std::string, Tensor>& st) {
  auto it = st.find("steps");
  SOFTLAB_CHECK(it != st.end(), "optimizer state: 'steps' is missing from the checkpoint");
  return static_cast<int64_t>(it->second.item());
}

// steps is stored as a float tensor; exact up to 2^24 steps, far beyond these runs.
Tensor steps_tensor(int64_t steps) { return scalar(static_cast<float>(steps)); }

class AdamW final : public Optimizer {
 public:
  AdamW(const OptimizerConfig& c, std::vector<nn::Parameter> params) : Optimizer(c, std::move(params)), c_(c) {
    for (auto& p : params_) {
      m_.push_back(zeros(p.tensor.shape()));
      v_.push_back(zeros(p.tensor.shape()));
    }
  }
  void step(double lr) override {
    ++steps_;
    const double b1 = c_.beta1, b2 = c_.beta2;
    const float bc1 = static_cast<float>(1.0 - std::pow(b1, static_cast<double>(steps_)));
    const float bc2 = static_cast<float>(1.0 - std::pow(b2, static_cast<double>(steps_)));
    const float eps = static_cast<float>(c_.eps);
    // 1 - beta in double from the configured values, then rounded once: forming it in float
    // from the rounded beta would give 9.99987e-4 for beta2 = 0.999.
    const float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
    const float omb1 = static_cast<float>(1.0 - b1), omb2 = static_cast<float>(1.0 - b2);
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor g = params_[i].tensor.grad();
      if (!g.defined()) continue;
      const double plr = lr * settings_[i].lr_scale;
      const float flr = static_cast<float>(plr);
      const float decay = static_cast<float>(1.0 - plr * settings_[i].weight_decay);
      float* p = params_[i].tensor.mutable_data();
      float* m = m_[i].mutable_data();
      float* v = v_[i].mutable_data();
      const float* gp = g.data();
      parallel_for(0, g.numel(), 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) {
          m[j] = fb1 * m[j] + omb1 * gp[j];
          v[j] = fb2 * v[j] + omb2 * gp[j] * gp[j];
          const float mhat = m[j] / bc1, vhat = v[j] / bc2;
          p[j] = p[j] * decay - flr * mhat / (std::sqrt(vhat) + eps);  // decoupled decay (as torch AdamW)
        }
      });
    }
  }
  nn::NamedTensors state() const override {
    nn::NamedTensors st{{"steps", steps_tensor(steps_)}};
    for (size_t i = 0; i < params_.size(); ++i) {
      st.emplace_back("m." + params_[i].name, m_[i]);
      st.emplace_back("v." + params_[i].name, v_[i]);
    }
    return st;
  }
  void load_state(const nn::NamedTensors& saved) override {
    const auto st = as_map(saved);
    steps_ = restore_steps(st);
    for (size_t i = 0; i < params_.size(); ++i) {
      restore(st, "m." + params_[i].name, m_[i]);
      restore(st, "v." + params_[i].name, v_[i]);
    }
  }

 private:
  OptimizerConfig c_;
  std::vector<Tensor> m_, v_;
};

class Sgd final : public Optimizer {
 public:
  Sgd(const OptimizerConfig& c, std::vector<nn::Parameter> params) : Optimizer(c, std::move(params)), c_(c) {
    for (auto& p : params_) buf_.push_back(zeros(p.tensor.shape()));
  }
  // As torch.optim.SGD: g += wd p; buf = mu buf + g (buf = g on the first step);
  // update = g + mu buf (Nesterov) or buf; p -= lr update.
  void step(double lr) override {
    const bool first = steps_ == 0;
    ++steps_;
    const float mu = static_cast<float>(c_.momentum);
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor g = params_[i].tensor.grad();
      if (!g.defined()) continue;
      const float flr = static_cast<float>(lr * settings_[i].lr_scale);
      const float wd = static_cast<float>(settings_[i].weight_decay);
      float* p = params_[i].tensor.mutable_data();
      float* buf = buf_[i].mutable_data();
      const float* gp = g.data();
      const bool nesterov = c_.nesterov;
      parallel_for(0, g.numel(), 1 << 14, [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) {
          float d = gp[j] + wd * p[j];
          if (mu != 0.0f) {
            buf[j] = first ? d : mu * buf[j] + d;
            d = nesterov ? d + mu * buf[j] : buf[j];
          }
          p[j] -= flr * d;
        }
      });
    }
  }
  nn::NamedTensors state() const override {
    nn::NamedTensors st{{"steps", steps_tensor(steps_)}};
    for (size_t i = 0; i < params_.size(); ++i) st.emplace_back("momentum." + params_[i].name, buf_[i]);
    return st;
  }
  void load_state(const nn::NamedTensors& saved) override {
    const auto st = as_map(saved);
    steps_ = restore_steps(st);
    for (size_t i = 0; i < params_.size(); ++i) restore(st, "momentum." + params_[i].name, buf_[i]);
  }

 private:
  OptimizerConfig c_;
  std::vector<Tensor> buf_;
};
}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& cfg, std::vector<nn::Parameter> params) {
  if (cfg.type == "adamw") return std::make_unique<AdamW>(cfg, std::move(params));
  if (cfg.type == "sgd") return std::make_unique<Sgd>(cfg, std::move(params));
  throw Error(detail::cat("train.optimizer.type: unknown optimizer '", cfg.type, "'; valid: adamw, sgd"));
}

double schedule_lr(const ScheduleConfig& s, double base_lr, int64_t step, int64_t steps_per_epoch,
                   int64_t total_steps) {
  const double spe = static_cast<double>(std::max<int64_t>(steps_per_epoch, 1));
  const double warm = s.warmup_epochs * spe;
  const double t = static_cast<double>(step);
  if (warm > 0 && t < warm) return base_lr * (t + 1.0) / warm;  // never exactly 0: step 0 still learns
  if (s.type == "constant") return base_lr;
  if (s.type == "step") return base_lr * std::pow(s.gamma, std::floor(t / (s.step_epochs * spe)));
  if (s.type == "cosine") {
    const double span = std::max(1.0, static_cast<double>(total_steps) - warm);
    const double frac = std::min(1.0, std::max(0.0, (t - warm) / span));
    return s.min_lr + (base_lr - s.min_lr) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * frac));
  }
  throw Error(detail::cat("train.schedule.type: unknown schedule '", s.type, "'; valid: constant, cosine, step"));
}

ClipResult clip_gradients(const std::vector<nn::Parameter>& params, double max_norm) {
  double sq = 0.0;
  for (const auto& p : params) {
    Tensor g = p.tensor.grad();
    if (!g.defined()) continue;
    const float* d = g.data();
    for (int64_t i = 0; i < g.numel(); ++i) sq += static_cast<double>(d[i]) * d[i];
  }
  ClipResult r;
  r.norm = std::sqrt(sq);
  if (max_norm > 0 && std::isfinite(r.norm) && r.norm > max_norm) {
    const float s = static_cast<float>(max_norm / (r.norm + 1e-6));
    r.scale = s;
    for (const auto& p : params) {
      Tensor g = p.tensor.grad();
      if (!g.defined()) continue;
      float* d = g.mutable_data();
      for (int64_t i = 0; i < g.numel(); ++i) d[i] *= s;
    }
  }
  return r;
}

double clip_grad_norm(const std::vector<nn::Parameter>& params, double max_norm) {
  return clip_gradients(params, max_norm).norm;
}

}  // namespace softlab
