// The config layer's view of the attention and head registries (src/config/registries.hpp).
#include "config/registries.hpp"

#include "softlab/attention.hpp"
#include "softlab/head.hpp"

namespace softlab {

// A config's model.attention holds the module's keys except "causal": model.causal is the
// one causality key, and the model writes it into the module's parameters (nn/trunk.cpp).
Schema attention_schema(const std::string& type, const std::string& path) {
  Schema s;
  for (const ParamSpec& p : attention_registry().get(type, path).schema)
    if (p.name != "causal") s.push_back(p);
  return s;
}
Schema head_schema(const std::string& type, const std::string& path) {
  return head_registry().get(type, path).schema;
}
std::vector<std::string> attention_types() { return attention_registry().names(); }
std::vector<std::string> head_types() { return head_registry().names(); }

}  // namespace softlab
