// The config layer's view of the attention and head registries (src/config/registries.hpp).
#include "config/registries.hpp"

#include "softlab/attention.hpp"
#include "softlab/head.hpp"

#include <map>
#include <mutex>

namespace softlab {

// A config's model.attention holds the module's keys except "causal": model.causal is the
// one causality key, and the model writes it into the module's parameters (nn/trunk.cpp).
// Entries are never replaced, so each filtered schema is made once.
const Schema& attention_schema(const std::string& type, const std::string& path) {
  const AttentionEntry& e = attention_registry().get(type, path);
  static std::mutex m;
  static std::map<std::string, Schema> config_view;
  std::lock_guard<std::mutex> lock(m);
  auto it = config_view.find(e.name);
  if (it == config_view.end()) {
    Schema s;
    for (const ParamSpec& p : e.schema)
      if (p.name != "causal") s.push_back(p);
    it = config_view.emplace(e.name, std::move(s)).first;
  }
  return it->second;
}
const Schema& head_schema(const std::string& type, const std::string& path) {
  return head_registry().get(type, path).schema;
}
std::vector<std::string> attention_types() { return attention_registry().names(); }
std::vector<std::string> head_types() { return head_registry().names(); }

}  // namespace softlab
