// Module bookkeeping: recursive parameter/buffer listing, train/eval, state load.
#include "softlab/nn/module.hpp"

#include <cstring>
#include <map>

#include "softlab/error.hpp"

namespace softlab::nn {

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool decay) {
  t.set_requires_grad(true);
  params_.push_back({name, t, decay});
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  buffers_.emplace_back(name, t);
  return t;
}

void Module::collect(const std::string& prefix, std::vector<Parameter>* params, NamedTensors* bufs) const {
  if (params)
    for (const auto& p : params_) params->push_back({prefix + p.name, p.tensor, p.decay});
  if (bufs)
    for (const auto& [n, t] : buffers_) bufs->emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, bufs);
}

std::vector<Parameter> Module::parameters() const {
  std::vector<Parameter> out;
  collect("", &out, nullptr);
  return out;
}

NamedTensors Module::buffers() const {
  NamedTensors out;
  collect("", nullptr, &out);
  return out;
}

NamedTensors Module::state() const {
  NamedTensors out;
  for (auto& p : parameters()) out.emplace_back(p.name, p.tensor);
  for (auto& b : buffers()) out.push_back(b);
  return out;
}

void Module::load_state(const NamedTensors& st) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [n, t] : st) given[n] = &t;
  NamedTensors mine = state();
  for (auto& [n, t] : mine) {
    auto it = given.find(n);
    SOFTLAB_CHECK(it != given.end(), "load_state: tensor '", n, "' is missing from the saved state");
    SOFTLAB_CHECK(it->second->shape() == t.shape(), "load_state: tensor '", n, "' has shape ",
                  it->second->shape(), " in the saved state but ", t.shape(), " in the model");
    if (t.numel()) std::memcpy(t.mutable_data(), it->second->data(), static_cast<size_t>(t.numel()) * sizeof(float));
    given.erase(it);
  }
  SOFTLAB_CHECK(given.empty(), "load_state: the saved state has tensor '", given.empty() ? "" : given.begin()->first,
                "' that the model does not have");
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.tensor.numel();
  return n;
}

std::vector<std::pair<std::string, int64_t>> Module::parameter_counts() const {
  std::vector<std::pair<std::string, int64_t>> out;
  int64_t own = 0;
  for (const auto& p : params_) own += p.tensor.numel();
  if (own) out.emplace_back("(own)", own);
  for (const auto& [n, c] : children_) out.emplace_back(n, c->num_parameters());
  return out;
}

}  // namespace softlab::nn
