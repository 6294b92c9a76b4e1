// The config layer's view of the attention and head registries (src/config/registries.hpp).
#include "config/registries.hpp"

#include "softlab/attention.hpp"
#include "softlab/head.hpp"

namespace softlab {

const Schema& attention_schema(const std::string& type, const std::string& path) {
  return attention_registry().get(type, path).schema;
}
const Schema& head_schema(const std::string& type, const std::string& path) {
  return head_registry().get(type, path).schema;
}
std::vector<std::string> attention_types() { return attention_registry().names(); }
std::vector<std::string> head_types() { return head_registry().names(); }

}  // namespace softlab
