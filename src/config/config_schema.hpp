#pragma once
// The schema of the whole run config as data: a tree whose leaves are ParamSpecs and whose
// inner nodes are objects, two "registry" nodes (model.attention, model.head) whose keys
// are the schema of the type they name, and "list" nodes (train.optimizer.groups): a list of
// objects that all have the same keys. The validator, the --set parser and
// config_schema_json() (for `softlab info` and the docs) all walk this one tree.
#include <string>
#include <vector>

#include "softlab/schema.hpp"

namespace softlab::config_detail {

struct Node {
  enum class Kind { Param, Object, Registry, List };
  Kind kind = Kind::Object;
  std::string name;
  std::string help;
  ParamSpec param;             // Kind::Param
  // Kind::Object: its keys; Kind::List: the keys of every element (an absent list is []);
  // Kind::Registry: just the "type" param.
  std::vector<Node> children;
  std::string registry;        // Kind::Registry: "attention" or "head"
  std::string example;         // Kind::List: one element as JSON, for messages and help

  const Node* child(const std::string& key) const;
  std::vector<std::string> child_names() const;
  const ParamSpec& type_spec() const { return children.front().param; }  // Kind::Registry
};

const Node& config_schema();

// For a registry node: the schema of `type` (throws naming `path` and the valid types), and
// the registered names.
Schema registry_schema(const Node& node, const std::string& type, const std::string& path);
std::vector<std::string> registry_types(const Node& node);
// The unknown-key message for `key` in a registry object, saying which type's parameters
// were expected (a key is only "unknown" relative to the type in effect).
std::string unknown_module_key(const Node& node, const std::string& type, const Schema& schema,
                               const std::string& path, const std::string& key);

}  // namespace softlab::config_detail
