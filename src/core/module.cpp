// Module bookkeeping: recursive parameter/buffer listing, train/eval, lookup by name, state load.
#include "softlab/module.hpp"

#include <cstring>
#include <map>
#include <set>

#include "softlab/error.hpp"
#include "softlab/schema.hpp"

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

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  for (auto& p : parameters()) out.emplace_back(std::move(p.name), std::move(p.tensor));
  return out;
}

NamedTensors Module::buffers() const {
  NamedTensors out;
  collect("", nullptr, &out);
  return out;
}

NamedTensors Module::state() const {
  NamedTensors out = named_parameters();
  for (auto& b : buffers()) out.push_back(std::move(b));
  return out;
}

const Tensor* Module::find(const std::string& name, bool buffer) const {
  if (buffer) {
    for (const auto& [n, t] : buffers_)
      if (n == name) return &t;
  } else {
    for (const auto& p : params_)
      if (p.name == name) return &p.tensor;
  }
  // Child names may hold dots themselves ("blocks.0"), so match on "<child>." prefixes
  // rather than splitting the name at its first dot.
  for (const auto& [n, c] : children_)
    if (name.size() > n.size() + 1 && name.compare(0, n.size(), n) == 0 && name[n.size()] == '.')
      if (const Tensor* t = c->find(name.substr(n.size() + 1), buffer)) return t;
  return nullptr;
}

const Tensor& Module::parameter(const std::string& name) const {
  if (const Tensor* t = find(name, false)) return *t;
  SOFTLAB_CHECK(!find(name, true), "parameter '", name,
                "': this is a buffer (a fixed tensor saved with the state), not a learnable parameter; "
                "buffers() lists the buffers");
  std::vector<std::string> names;
  for (const auto& p : parameters()) names.push_back(p.name);
  const std::string near = closest_key(name, names);
  const std::string hint = near.empty() ? std::string() : softlab::detail::cat(" (did you mean '", near, "'?)");
  throw Error(softlab::detail::cat("unknown parameter '", name, "'", hint, "; the model has ", names.size(),
                                   " parameters, named_parameters() lists them"));
}

void Module::set_parameter(const std::string& name, const Tensor& value) {
  const Tensor& p = parameter(name);
  SOFTLAB_CHECK(value.defined(), "set_parameter: parameter '", name, "': the value is an undefined tensor");
  SOFTLAB_CHECK(value.shape() == p.shape(), "set_parameter: parameter '", name, "' has shape ", p.shape(),
                " but the value has shape ", value.shape());
  Tensor target = p;  // a handle on the same storage; mutable_data() bumps its version
  // memmove: the value may be the parameter itself, or a view of its storage.
  if (p.numel()) std::memmove(target.mutable_data(), value.data(), static_cast<size_t>(p.numel()) * sizeof(float));
}

std::string LoadReport::summary() const {
  if (complete()) return "complete";
  auto names = [](const std::vector<std::string>& v) {
    constexpr size_t kShown = 10;
    std::string s;
    for (size_t i = 0; i < v.size() && i < kShown; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > kShown) s += softlab::detail::cat(", ... (", v.size() - kShown, " more)");
    return s;
  };
  std::string s;
  if (!missing.empty()) s = softlab::detail::cat(missing.size(), " missing (", names(missing), ")");
  if (!unexpected.empty())
    s += softlab::detail::cat(s.empty() ? "" : "; ", unexpected.size(), " unexpected (", names(unexpected), ")");
  return s;
}

void Module::load_state(const NamedTensors& st) { load_state(st, true); }

LoadReport Module::load_state(const NamedTensors& st, bool strict) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [n, t] : st) given[n] = &t;
  LoadReport report;
  std::vector<std::pair<Tensor, const Tensor*>> copies;  // (model tensor, saved tensor)
  std::set<std::string> mine;
  for (auto& [n, t] : state()) {
    mine.insert(n);
    auto it = given.find(n);
    if (it == given.end()) {
      report.missing.push_back(n);
      continue;
    }
    SOFTLAB_CHECK(it->second->defined(), "load_state: tensor '", n, "' is undefined in the saved state");
    SOFTLAB_CHECK(it->second->shape() == t.shape(), "load_state: tensor '", n, "' has shape ", it->second->shape(),
                  " in the saved state but ", t.shape(), " in the model");
    report.loaded.push_back(n);
    copies.emplace_back(t, it->second);
  }
  std::set<std::string> seen;
  for (const auto& [n, t] : st)
    if (!mine.count(n) && seen.insert(n).second) report.unexpected.push_back(n);
  SOFTLAB_CHECK(!strict || report.complete(), "load_state: the saved state does not match the model: ",
                report.summary());
  // Copy only once everything is checked, so a failed load leaves the model as it was.
  for (auto& [t, saved] : copies)
    if (t.numel()) std::memmove(t.mutable_data(), saved->data(), static_cast<size_t>(t.numel()) * sizeof(float));
  return report;
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
