// Parameter schemas: type and range checks, unknown-key detection with a suggestion, and the
// default filling that turns a user's partial object into a complete one. Every message names
// the JSON path, what was expected and what was found, because a config error is the first
// thing a user meets and the only thing they see of this file.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

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

// The largest uint64 as a bound: the double nearest to 2^64 - 1 is 2^64, which prints as
// the integer it stands for.
constexpr double kUint64Bound = 18446744073709551615.0;
constexpr double kInt64End = 9223372036854775808.0;  // 2^63, one past the largest int64

// Bounds print as the user would write them: 1 rather than 1.000000, 1e-08 for tiny values.
std::string format_number(double x) {
  if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 1e15) return std::to_string(static_cast<long long>(x));
  if (x == kUint64Bound) return "18446744073709551615";
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

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0 if the bytes there are not one.
size_t utf8_sequence(const std::string& s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  return len;
}

// The first `n` bytes of `s`, moved back so that no UTF-8 sequence is cut in two.
size_t utf8_cut(const std::string& s, size_t n) {
  if (n >= s.size()) return s.size();
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

// A JSON string literal of at most the first `limit` + 1 bytes of `s` (so a cut is still
// visible to the caller), with ill-formed UTF-8 replaced rather than thrown on.
std::string string_literal(const std::string& s, size_t limit) {
  return json(s.size() > limit ? s.substr(0, limit + 1) : s).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Appends `v` as compact JSON until `out` is longer than `limit`. Every level appends at least
// one character before descending, so the recursion is no deeper than `limit`, whatever the
// nesting of `v`.
void append_excerpt(const json& v, std::string& out, size_t limit) {
  if (out.size() > limit) return;
  switch (v.type()) {
    case json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [k, x] : v.items()) {
        if (out.size() > limit) return;
        out += first ? "" : ",";
        first = false;
        out += string_literal(k, limit) + ":";
        append_excerpt(x, out, limit);
      }
      out += '}';
      return;
    }
    case json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (out.size() > limit) return;
        out += i ? "," : "";
        append_excerpt(v[i], out, limit);
      }
      out += ']';
      return;
    }
    case json::value_t::string: out += string_literal(v.get_ref<const std::string&>(), limit); return;
    default: out += v.dump(); return;
  }
}

}  // namespace

std::string json_excerpt(const json& value, size_t max_chars) {
  std::string out;
  append_excerpt(value, out, max_chars);
  if (out.size() <= max_chars) return out;
  return out.substr(0, utf8_cut(out, max_chars > 3 ? max_chars - 3 : 0)) + "...";
}

std::string text_excerpt(const std::string& text, size_t max_chars) {
  // Ill-formed bytes print as \xNN: the message stays UTF-8 and shows what was given.
  std::string out;
  for (size_t i = 0; i < text.size() && out.size() <= max_chars;) {
    const size_t n = utf8_sequence(text, i);
    if (n > 0) {
      out.append(text, i, n);
      i += n;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", static_cast<unsigned char>(text[i]));
      out += buf;
      ++i;
    }
  }
  if (out.size() <= max_chars) return out;
  return out.substr(0, utf8_cut(out, max_chars > 3 ? max_chars - 3 : 0)) + "...";
}

bool is_valid_utf8(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_sequence(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string describe_value(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return detail::cat("boolean ", v.dump());
    case json::value_t::string: return detail::cat("string ", json_excerpt(v));
    case json::value_t::array: return detail::cat("array ", json_excerpt(v));
    case json::value_t::object: return detail::cat("object ", json_excerpt(v));
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
      // Integers are read as int64_t, where a larger one would wrap around; only a key whose
      // bound says so (a seed, read as uint64_t) takes more.
      if (value.is_number_unsigned() && value.get<uint64_t>() >= static_cast<uint64_t>(kInt64End) &&
          !(spec.max && *spec.max >= kInt64End))
        fail(spec, value, path, " (above 9223372036854775807, the largest 64-bit integer)");
      check_bounds(spec, value.get<double>(), value, path);
      check_choice(spec, value.dump(), value, path);
      return;
    case ParamType::Bool:
      if (!value.is_boolean()) fail(spec, value, path);
      return;
    case ParamType::String:
      if (!value.is_string()) fail(spec, value, path);
      // A JSON file cannot hold such bytes; a --set value or a file name can, and the config
      // could then not be written out.
      if (!is_valid_utf8(value.get_ref<const std::string&>()))
        throw Error(detail::cat(path, ": expected ", expected_text(spec), " in UTF-8, found bytes that are not UTF-8: '",
                                text_excerpt(value.get_ref<const std::string&>()), "'"));
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
  return detail::cat(join_path(path, text_excerpt(key)), ": unknown key '", text_excerpt(key), "'",
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
    // The distance is at least the difference in length: a key far longer than every valid
    // one (a megabyte typed by mistake) costs nothing.
    if (std::max(key.size(), v.size()) - std::min(key.size(), v.size()) > limit) continue;
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
  if (s.inference_safe) j["inference_safe"] = true;
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
