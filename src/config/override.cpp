// --set KEY=VALUE: the top layer of the config (defaults < file < overrides). The key must
// exist in the schema and the value is typed by it, so `--set train.epochs=3` needs no JSON
// quoting and `--set train.epoch=3` fails at once with a suggestion instead of being ignored.
// A list of objects (train.optimizer.groups) is set whole as JSON, or one element at a time
// by index: groups[1]={...} replaces element 1, groups[1].lr=0.01 sets one of its keys, and
// the index one past the end appends an element.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/config_schema.hpp"
#include "config/json_text.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"

namespace softlab {

namespace {
using SchemaNode = config_detail::Node;

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

// A whole list of objects (train.optimizer.groups=[{...}]) is given as JSON; resolve_config
// checks the elements.
json list_value(const SchemaNode& node, const std::string& text, const std::string& path) {
  const std::optional<json> j = config_detail::parse_json_value(text, path);
  if (!j || !j->is_array())
    throw Error(detail::cat(path, ": expected a JSON list of objects such as [", node.example, "], found '",
                            text_excerpt(text), "'"));
  return *j;
}

json node_value(const SchemaNode& node, const std::string& text, const std::string& path) {
  if (node.kind == SchemaNode::Kind::List) return list_value(node, text, path);
  if (node.kind != SchemaNode::Kind::Param) return object_value(text, path);
  json v = typed_value(node.param, text, path);
  check_param(node.param, v, path);
  return v;
}

std::string type_in_effect(const SchemaNode& node, const json& obj, const std::string& path) {
  if (!obj.contains("type")) return node.type_spec().default_value.get<std::string>();
  check_param(node.type_spec(), obj["type"], path + ".type");
  return obj["type"].get<std::string>();
}

// Sets `key` inside a registry object (model.attention or model.head).
void set_registry_key(const SchemaNode& node, json& obj, const std::string& path, const std::string& key,
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

// One dotted component of a --set key: "lr", or "groups[1]" (an element of a list).
struct KeyPart {
  std::string name;
  std::optional<size_t> index;
};

// Element `index` of the list `key` in `obj` (created when absent), appended when the index is
// one past the end, so that a list can be written element by element.
json& list_element(json& obj, const std::string& key, size_t index, const std::string& here) {
  json& list = obj[key];
  if (list.is_null()) list = json::array();
  if (!list.is_array()) throw Error(detail::cat(here, ": expected a list, found ", describe_value(list)));
  if (index > list.size())
    throw Error(detail::cat(here, "[", index, "]: no such element; the list has ", list.size(),
                            list.size() == 1 ? " element" : " elements", " (index ", list.size(),
                            " appends one)"));
  if (index == list.size()) list.push_back(json::object());
  return list[index];
}

void set_key(json& cfg, const std::vector<KeyPart>& keys, const std::string& text) {
  const SchemaNode* node = &config_detail::config_schema();
  json* obj = &cfg;
  std::string path;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i].name;
    const bool last = i + 1 == keys.size();
    const std::string here = join_path(path, key);
    if (obj->is_null()) *obj = json::object();
    if (!obj->is_object())
      throw Error(path.empty() ? detail::cat("config: the top level must be a JSON object, found ", describe_value(*obj))
                               : detail::cat(path, ": expected an object, found ", describe_value(*obj)));
    if (node->kind == SchemaNode::Kind::Registry) {
      // Module parameters are plain values: nothing below them.
      if (!last)
        throw Error(detail::cat(here, ": is a value, not an object; it has no key '", text_excerpt(keys[i + 1].name),
                                "'"));
      if (keys[i].index) throw Error(detail::cat(here, ": is a value, not a list; it has no elements to index"));
      set_registry_key(*node, *obj, path, key, text);
      return;
    }
    const SchemaNode* child = node->child(key);
    if (!child) throw Error(unknown_key_message(path, key, node->child_names()));
    if (keys[i].index) {
      if (child->kind != SchemaNode::Kind::List)
        throw Error(detail::cat(here, "[", *keys[i].index, "]: ", here, " is not a list of objects, so it has no "
                                "elements to index; set its whole value (", here, "=...)"));
      const std::string at = detail::cat(here, "[", *keys[i].index, "]");
      json& element = list_element(*obj, key, *keys[i].index, here);
      if (last) {
        element = object_value(text, at);
        return;
      }
      obj = &element;
      node = child;
      path = at;
      continue;
    }
    if (last) {
      (*obj)[key] = node_value(*child, text, here);
      return;
    }
    if (child->kind == SchemaNode::Kind::Param)
      throw Error(detail::cat(here, ": is ", expected_text(child->param), ", not an object; it has no key '",
                              text_excerpt(keys[i + 1].name), "'"));
    if (child->kind == SchemaNode::Kind::List)
      throw Error(detail::cat(here, ": is a list; name one of its elements, as ", here, "[0].",
                              text_excerpt(keys[i + 1].name), ", or set the whole list as JSON (", here, "=[",
                              child->example, "])"));
    obj = &(*obj)[key];
    node = child;
    path = here;
  }
}

// "a" or "a[12]" -> KeyPart; nullopt when malformed (an empty name, a bad or huge index).
std::optional<KeyPart> key_part(const std::string& text) {
  const auto open = text.find('[');
  if (open == std::string::npos) {
    if (text.empty()) return std::nullopt;
    return KeyPart{text, std::nullopt};
  }
  if (open == 0 || text.size() < open + 3 || text.back() != ']') return std::nullopt;
  // At most 6 digits: far more elements than a list holds, and never an overflow.
  const std::string digits = text.substr(open + 1, text.size() - open - 2);
  if (digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return KeyPart{text.substr(0, open), static_cast<size_t>(std::stoul(digits))};
}

// "a.b[1].c=value" -> ({"a", "b"[1], "c"}, "value")
std::pair<std::vector<KeyPart>, std::string> split_assignment(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos)
    throw Error(detail::cat("override '", text_excerpt(assignment), "': expected KEY=VALUE, e.g. train.epochs=3"));
  const std::string key = trim(assignment.substr(0, eq));
  std::vector<KeyPart> keys;
  size_t start = 0;
  while (true) {
    const auto dot = key.find('.', start);
    const size_t end = dot == std::string::npos ? key.size() : dot;
    const std::optional<KeyPart> part = key_part(key.substr(start, end - start));
    if (!part)
      throw Error(detail::cat("override '", text_excerpt(assignment), "': bad key '", text_excerpt(key),
                              "', expected a dotted path such as train.optimizer.lr (an element of a list: "
                              "train.optimizer.groups[0].lr)"));
    keys.push_back(*part);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return {keys, assignment.substr(eq + 1)};
}

// True for model.attention.type, model.head.type and the registry objects themselves.
bool sets_registry_type(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos) return false;
  const SchemaNode* node = &config_detail::config_schema();
  std::string key = trim(assignment.substr(0, eq)) + ".";
  for (size_t start = 0, dot; (dot = key.find('.', start)) != std::string::npos; start = dot + 1) {
    const std::string part = key.substr(start, dot - start);
    const bool last = dot + 1 == key.size();
    if (node->kind == SchemaNode::Kind::Registry) return part == "type" && last;
    node = node->child(part);
    if (!node) return false;
    if (last) return node->kind == SchemaNode::Kind::Registry;
  }
  return false;
}
}  // namespace

void apply_override(json& cfg, const std::string& assignment) {
  const auto [keys, text] = split_assignment(assignment);
  try {
    // On a copy, so that a failed override changes nothing (not even the objects or list
    // elements its path would have created).
    json next = cfg;
    set_key(next, keys, text);
    cfg = std::move(next);
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
