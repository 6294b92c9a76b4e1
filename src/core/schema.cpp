// Parameter schemas: type and range checks, unknown-key detection with a suggestion, and the
// default filling that turns a user's partial object into a complete one. Every message names
// the JSON path, what was expected and what was found, because a config error is the first
// thing a user meets and the only thing they see of this file.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "softlab/error.hpp"
#include "softlab/schema.hpp"

namespace softlab {

const char* param_type_name(ParamType t) {
  switch (t) {
    case ParamType::Float: return "float";
    case ParamType::Int: return "int";
    case ParamType::Bool: return "bool";
    case ParamType::String: return "string";
    case ParamType::FloatList: return "float list";
    case ParamType::IntList: return "int list";
  }
  return "?";
}

namespace {

// Bounds print as the user would write them: 1 rather than 1.000000, 1e-08 for tiny values.
std::string format_number(double x) {
  if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 1e15) return std::to_string(static_cast<long long>(x));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

std::string range_text(const ParamSpec& s) {
  if (s.min && s.max)
    return detail::cat("in ", s.min_exclusive ? "(" : "[", format_number(*s.min), ", ", format_number(*s.max),
                       s.max_exclusive ? ")" : "]");
  if (s.min) return detail::cat(s.min_exclusive ? "> " : ">= ", format_number(*s.min));
  if (s.max) return detail::cat(s.max_exclusive ? "< " : "<= ", format_number(*s.max));
  return "";
}

bool is_list(ParamType t) { return t == ParamType::FloatList || t == ParamType::IntList; }

// A choice "prefix<...>" is a pattern: the prefix followed by any non-empty text.
bool choice_matches(const std::string& choice, const std::string& value) {
  if (choice.size() > 2 && choice.back() == '>') {
    const auto lt = choice.rfind('<');
    if (lt != std::string::npos) {
      const std::string prefix = choice.substr(0, lt);
      return value.size() > prefix.size() && value.compare(0, prefix.size(), prefix) == 0;
    }
  }
  return choice == value;
}

std::string choices_text(const ParamSpec& s) {
  std::string out;
  const bool quote = s.type == ParamType::String;
  for (const auto& c : s.choices) out += detail::cat(out.empty() ? "" : ", ", quote ? "'" : "", c, quote ? "'" : "");
  return out;
}

[[noreturn]] void fail(const ParamSpec& spec, const json& value, const std::string& path,
                       const std::string& hint = "") {
  throw Error(detail::cat(path, ": expected ", expected_text(spec), ", found ", describe_value(value), hint));
}

void check_bounds(const ParamSpec& spec, double x, const json& value, const std::string& path) {
  const bool low = spec.min && (spec.min_exclusive ? !(x > *spec.min) : !(x >= *spec.min));
  const bool high = spec.max && (spec.max_exclusive ? !(x < *spec.max) : !(x <= *spec.max));
  if (low || high) fail(spec, value, path);
}

void check_choice(const ParamSpec& spec, const std::string& text, const json& value, const std::string& path) {
  if (spec.choices.empty()) return;
  for (const auto& c : spec.choices)
    if (choice_matches(c, text)) return;
  const std::string near = closest_key(text, spec.choices);
  fail(spec, value, path, near.empty() ? "" : detail::cat(" (did you mean '", near, "'?)"));
}

// Damerau (optimal string alignment) distance: Levenshtein plus adjacent transpositions, so
// the commonest typo ("trian") costs 1 rather than 2. Case is ignored ("LR" is "lr").
size_t edit_distance(const std::string& a0, const std::string& b0) {
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const std::string a = lower(a0), b = lower(b0);
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

}  // namespace

std::string describe_value(const json& v) {
  auto shorten = [](std::string s) { return s.size() > 60 ? s.substr(0, 57) + "..." : s; };
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return detail::cat("boolean ", v.dump());
    case json::value_t::string: return detail::cat("string ", shorten(v.dump()));
    case json::value_t::array: return detail::cat("array ", shorten(v.dump()));
    case json::value_t::object: return detail::cat("object ", shorten(v.dump()));
    default: return detail::cat("number ", v.dump());
  }
}

std::string expected_text(const ParamSpec& s) {
  std::string out;
  if (!s.choices.empty() && (s.type == ParamType::String || s.type == ParamType::Int)) {
    out = "one of " + choices_text(s);
  } else {
    switch (s.type) {
      case ParamType::Float: out = "a number"; break;
      case ParamType::Int: out = "an integer"; break;
      case ParamType::Bool: out = "true or false"; break;
      case ParamType::String: out = "a string"; break;
      case ParamType::FloatList: out = "a list of numbers"; break;
      case ParamType::IntList: out = "a list of integers"; break;
    }
    const std::string range = range_text(s);
    if (!range.empty()) out += (is_list(s.type) ? ", each " : " ") + range;
  }
  if (s.nullable) out += " or null";
  return out;
}

void check_param(const ParamSpec& spec, const json& value, const std::string& path) {
  if (value.is_null()) {
    if (spec.nullable) return;
    fail(spec, value, path);
  }
  switch (spec.type) {
    case ParamType::Float:
      if (!value.is_number()) fail(spec, value, path);
      check_bounds(spec, value.get<double>(), value, path);
      return;
    case ParamType::Int:
      // Strict: 5.0 is not an integer, so a typo such as "epochs": 0.5 cannot be truncated silently.
      if (!value.is_number_integer()) fail(spec, value, path);
      check_bounds(spec, value.get<double>(), value, path);
      check_choice(spec, value.dump(), value, path);
      return;
    case ParamType::Bool:
      if (!value.is_boolean()) fail(spec, value, path);
      return;
    case ParamType::String:
      if (!value.is_string()) fail(spec, value, path);
      check_choice(spec, value.get<std::string>(), value, path);
      return;
    case ParamType::FloatList:
    case ParamType::IntList: {
      if (!value.is_array()) fail(spec, value, path);
      ParamSpec element = spec;
      element.type = spec.type == ParamType::FloatList ? ParamType::Float : ParamType::Int;
      element.nullable = false;
      for (size_t i = 0; i < value.size(); ++i) check_param(element, value[i], detail::cat(path, "[", i, "]"));
      return;
    }
  }
}

std::string join_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string unknown_key_message(const std::string& path, const std::string& key,
                                const std::vector<std::string>& valid) {
  const std::string near = closest_key(key, valid);
  std::string list;
  for (const auto& v : valid) list += (list.empty() ? "" : ", ") + v;
  return detail::cat(join_path(path, key), ": unknown key '", key, "'",
                     near.empty() ? std::string() : detail::cat(" (did you mean '", near, "'?)"),
                     "; valid keys: ", list.empty() ? "(none)" : list);
}

json validate_params(const Schema& schema, const json& params, const std::string& path,
                     const std::vector<std::string>& skip) {
  if (!params.is_object()) throw Error(detail::cat(path, ": expected an object, found ", describe_value(params)));
  auto find = [&](const std::string& key) -> const ParamSpec* {
    for (const auto& s : schema)
      if (s.name == key) return &s;
    return nullptr;
  };
  std::vector<std::string> valid = skip;
  for (const auto& s : schema) valid.push_back(s.name);

  // The user's keys first, in the user's order, so the resolved object reads like the input.
  json out = json::object();
  for (const auto& [key, value] : params.items()) {
    if (std::find(skip.begin(), skip.end(), key) != skip.end()) {
      out[key] = value;
      continue;
    }
    const ParamSpec* spec = find(key);
    if (!spec) throw Error(unknown_key_message(path, key, valid));
    check_param(*spec, value, join_path(path, key));
    out[key] = value;
  }
  for (const auto& s : schema) {
    if (out.contains(s.name)) continue;
    if (s.required)
      throw Error(detail::cat(join_path(path, s.name), ": missing required key; expected ", expected_text(s)));
    // A null default that is not nullable means "derived at build time": kept as null.
    out[s.name] = s.default_value;
  }
  return out;
}

std::string closest_key(const std::string& key, const std::vector<std::string>& valid) {
  if (key.empty()) return "";
  const size_t limit = std::max<size_t>(2, key.size() / 3);
  std::string best;
  size_t best_d = limit + 1;
  for (const auto& v : valid) {
    const size_t d = edit_distance(key, v);
    // d < max length: replacing every letter of a short key is not a suggestion ("x" -> "lr").
    if (d < best_d && d < std::max(key.size(), v.size())) {
      best = v;
      best_d = d;
    }
  }
  return best;
}

json param_spec_json(const ParamSpec& s) {
  json j = json::object();
  j["type"] = param_type_name(s.type);
  if (s.required)
    j["required"] = true;
  else
    j["default"] = s.default_value;
  if (s.min) j["min"] = *s.min;
  if (s.min_exclusive) j["min_exclusive"] = true;
  if (s.max) j["max"] = *s.max;
  if (s.max_exclusive) j["max_exclusive"] = true;
  if (!s.choices.empty()) j["choices"] = s.choices;
  if (s.nullable) j["nullable"] = true;
  j["expects"] = expected_text(s);
  j["help"] = s.help;
  return j;
}

json schema_json(const Schema& schema) {
  json j = json::object();
  for (const auto& s : schema) j[s.name] = param_spec_json(s);
  return j;
}

}  // namespace softlab
