// --set KEY=VALUE: the top layer of the config (defaults < file < overrides). The key must
// exist in the schema and the value is typed by it, so `--set train.epochs=3` needs no JSON
// quoting and `--set train.epoch=3` fails at once with a suggestion instead of being ignored.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "config/config_schema.hpp"
#include "config/json_text.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"

namespace softlab {

namespace {
using config_detail::Node;

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

[[noreturn]] void bad_value(const ParamSpec& spec, const std::string& text, const std::string& path) {
  throw Error(detail::cat(path, ": expected ", expected_text(spec), ", found '", text_excerpt(text), "'"));
}

// The text of a --set value, read as the type the schema asks for.
json typed_value(const ParamSpec& spec, const std::string& raw, const std::string& path) {
  const std::string text = spec.type == ParamType::String ? raw : trim(raw);
  if (spec.nullable && text == "null") return nullptr;
  switch (spec.type) {
    case ParamType::Float: {
      char* end = nullptr;
      const double x = text.empty() ? NAN : std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !std::isfinite(x)) bad_value(spec, text, path);
      return x;
    }
    case ParamType::Int: {
      int64_t x = 0;
      const auto r = std::from_chars(text.data(), text.data() + text.size(), x);
      if (r.ec == std::errc() && r.ptr == text.data() + text.size()) return x;
      uint64_t u = 0;  // seeds may exceed int64
      const auto ru = std::from_chars(text.data(), text.data() + text.size(), u);
      if (ru.ec == std::errc() && ru.ptr == text.data() + text.size()) return u;
      bad_value(spec, text, path);
    }
    case ParamType::Bool:
      if (text == "true" || text == "1") return true;
      if (text == "false" || text == "0") return false;
      bad_value(spec, text, path);
    case ParamType::String:
      // Raw text needs no quotes; a quoted JSON string is unquoted, so both spellings work.
      if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
        const std::optional<json> j = config_detail::parse_json_value(text, path);
        if (j && j->is_string()) return *j;
      }
      return text;
    case ParamType::FloatList:
    case ParamType::IntList: {
      const std::optional<json> j = config_detail::parse_json_value(text, path);
      if (!j) bad_value(spec, text, path);
      return *j;
    }
  }
  return nullptr;
}

// A whole object (e.g. train.optimizer={"type":"sgd"}) is given as JSON; resolve_config checks it.
json object_value(const std::string& text, const std::string& path) {
  const std::optional<json> j = config_detail::parse_json_value(text, path);
  if (!j || !j->is_object())
    throw Error(detail::cat(path, ": expected a JSON object such as {\"type\": \"softmax\"}, found '",
                            text_excerpt(text), "'"));
  return *j;
}

json node_value(const Node& node, const std::string& text, const std::string& path) {
  if (node.kind != Node::Kind::Param) return object_value(text, path);
  json v = typed_value(node.param, text, path);
  check_param(node.param, v, path);
  return v;
}

std::string type_in_effect(const Node& node, const json& obj, const std::string& path) {
  if (!obj.contains("type")) return node.type_spec().default_value.get<std::string>();
  check_param(node.type_spec(), obj["type"], path + ".type");
  return obj["type"].get<std::string>();
}

// Sets `key` inside a registry object (model.attention or model.head).
void set_registry_key(const Node& node, json& obj, const std::string& path, const std::string& key,
                      const std::string& text) {
  const std::string here = join_path(path, key);
  if (key == "type") {
    const json type = node_value(node.children.front(), text, here);
    const std::string next = type.get<std::string>();
    const Schema& next_schema = config_detail::registry_schema(node, next, here);  // unknown type: lists valid ones
    // The type being replaced; a malformed one (e.g. a number) is simply overwritten.
    const std::string prev = !obj.contains("type")      ? node.type_spec().default_value.get<std::string>()
                             : obj["type"].is_string() ? obj["type"].get<std::string>()
                                                       : std::string();
    const auto known = config_detail::registry_types(node);
    if (prev != next && std::find(known.begin(), known.end(), prev) != known.end()) {
      // Drop the old type's parameters that the new type lacks: they describe the old module.
      for (const auto& spec : config_detail::registry_schema(node, prev, here)) {
        const bool shared = std::any_of(next_schema.begin(), next_schema.end(),
                                        [&](const ParamSpec& s) { return s.name == spec.name; });
        if (!shared) obj.erase(spec.name);
      }
    }
    obj["type"] = type;
    return;
  }
  const std::string type = type_in_effect(node, obj, path);
  const Schema& schema = config_detail::registry_schema(node, type, path + ".type");
  const auto spec = std::find_if(schema.begin(), schema.end(), [&](const ParamSpec& s) { return s.name == key; });
  if (spec == schema.end()) throw Error(config_detail::unknown_module_key(node, type, schema, path, key));
  json v = typed_value(*spec, text, here);
  check_param(*spec, v, here);
  obj[key] = v;
}

void set_key(json& cfg, const std::vector<std::string>& keys, const std::string& text) {
  const Node* node = &config_detail::config_schema();
  json* obj = &cfg;
  std::string path;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    const bool last = i + 1 == keys.size();
    const std::string here = join_path(path, key);
    if (obj->is_null()) *obj = json::object();
    if (!obj->is_object())
      throw Error(path.empty() ? detail::cat("config: the top level must be a JSON object, found ", describe_value(*obj))
                               : detail::cat(path, ": expected an object, found ", describe_value(*obj)));
    if (node->kind == Node::Kind::Registry) {
      // Module parameters are plain values: nothing below them.
      if (!last)
        throw Error(detail::cat(here, ": is a value, not an object; it has no key '", text_excerpt(keys[i + 1]), "'"));
      set_registry_key(*node, *obj, path, key, text);
      return;
    }
    const Node* child = node->child(key);
    if (!child) throw Error(unknown_key_message(path, key, node->child_names()));
    if (last) {
      (*obj)[key] = node_value(*child, text, here);
      return;
    }
    if (child->kind == Node::Kind::Param)
      throw Error(detail::cat(here, ": is ", expected_text(child->param), ", not an object; it has no key '",
                              text_excerpt(keys[i + 1]), "'"));
    obj = &(*obj)[key];
    node = child;
    path = here;
  }
}

// "a.b.c=value" -> ({"a","b","c"}, "value")
std::pair<std::vector<std::string>, std::string> split_assignment(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos)
    throw Error(detail::cat("override '", text_excerpt(assignment), "': expected KEY=VALUE, e.g. train.epochs=3"));
  const std::string key = trim(assignment.substr(0, eq));
  std::vector<std::string> keys;
  size_t start = 0;
  while (true) {
    const auto dot = key.find('.', start);
    keys.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (keys.back().empty())
      throw Error(detail::cat("override '", text_excerpt(assignment), "': bad key '", text_excerpt(key),
                              "', expected a dotted path such as train.optimizer.lr"));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return {keys, assignment.substr(eq + 1)};
}

// True for model.attention.type, model.head.type and the registry objects themselves.
bool sets_registry_type(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos) return false;
  const Node* node = &config_detail::config_schema();
  std::string key = trim(assignment.substr(0, eq)) + ".";
  for (size_t start = 0, dot; (dot = key.find('.', start)) != std::string::npos; start = dot + 1) {
    const std::string part = key.substr(start, dot - start);
    const bool last = dot + 1 == key.size();
    if (node->kind == Node::Kind::Registry) return part == "type" && last;
    node = node->child(part);
    if (!node) return false;
    if (last) return node->kind == Node::Kind::Registry;
  }
  return false;
}
}  // namespace

void apply_override(json& cfg, const std::string& assignment) {
  const auto [keys, text] = split_assignment(assignment);
  try {
    set_key(cfg, keys, text);
  } catch (const Error& e) {
    // The assignment as an excerpt: a --set value can be as long as the command line.
    throw Error(detail::cat("override '", text_excerpt(assignment, 100), "': ", e.what()), e.kind());
  }
}

void apply_overrides(json& cfg, const std::vector<std::string>& assignments) {
  std::vector<std::string> ordered = assignments;
  std::stable_partition(ordered.begin(), ordered.end(), sets_registry_type);
  for (const auto& a : ordered) apply_override(cfg, a);
}

}  // namespace softlab
