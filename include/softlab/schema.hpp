#pragma once
// Parameter schemas: one source of truth for the config validator, `softlab info` and the
// docs. Every attention module and head registers a name and a Schema.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace softlab {

using json = nlohmann::ordered_json;

enum class ParamType { Float, Int, Bool, String, FloatList, IntList };
const char* param_type_name(ParamType t);

struct ParamSpec {
  std::string name;
  ParamType type = ParamType::Float;
  json default_value;                 // null means "no default": derived at build time (say so in help)
  std::optional<double> min, max;     // inclusive bounds unless the *_exclusive flag is set
  bool min_exclusive = false, max_exclusive = false;
  // The allowed values: for strings, the strings; for ints, their decimal spelling ("1", "3").
  // A choice ending in "<...>", e.g. "synthetic:<task>", accepts its prefix followed by any
  // non-empty text.
  std::vector<std::string> choices;
  std::string help;                   // one line
  bool nullable = false;              // null is an accepted value
  bool required = false;              // a missing key is an error (default_value is ignored)
  // May differ between training and evaluation: `softlab eval RUN --set ...` can change it for
  // evaluation only (a non-learned value that adds or removes no parameter, e.g. LSSAR's
  // re-weighting power). Every other key of a trained model is fixed.
  bool inference_safe = false;
};

using Schema = std::vector<ParamSpec>;

// Checks `value` against `spec`; on failure throws softlab::Error naming `path` (the JSON
// path of the key, e.g. "model.attention.bias"), what was expected and what was found.
void check_param(const ParamSpec& spec, const json& value, const std::string& path);

// Validates an object of parameters against a schema: unknown keys are errors (with the
// closest valid key suggested), missing keys get their defaults. Returns the completed object.
// `skip` lists keys that the caller validates itself (e.g. "type").
json validate_params(const Schema& schema, const json& params, const std::string& path,
                     const std::vector<std::string>& skip = {});

// The valid key closest to `key` by edit distance, or "" if none is close.
std::string closest_key(const std::string& key, const std::vector<std::string>& valid);

// ---- helpers shared by the config layer, `softlab info` and the docs
// What a value is, for "found ..." in messages: `string "5"`, `number 1.5`, `null`, ...
// Long values are cut to an excerpt (see json_excerpt).
std::string describe_value(const json& value);
// At most about `max_chars` characters of `value` as JSON, "..." marking a cut. Never
// serialises more than it shows, so a huge or deeply nested value cannot blow up an error
// message, and bytes that are not UTF-8 print as U+FFFD instead of throwing.
std::string json_excerpt(const json& value, size_t max_chars = 60);
// `text` cut to at most `max_chars` bytes with "..." marking the cut (for keys and raw
// command-line text in messages).
std::string text_excerpt(const std::string& text, size_t max_chars = 60);
// True if `text` is well-formed UTF-8 (what JSON strings must hold; the ill-formed bytes of a
// command-line value or a file name would otherwise fail later, when the config is written).
bool is_valid_utf8(const std::string& text);
// What `spec` accepts, e.g. "an integer >= 1", "a number in [0, 1)", "one of 'cls', 'mean'".
std::string expected_text(const ParamSpec& spec);
// "PATH.key: unknown key 'key' (did you mean 'x'?); valid keys: a, b, c"
std::string unknown_key_message(const std::string& path, const std::string& key,
                                const std::vector<std::string>& valid);
// "a" + "b" -> "a.b"; "" + "b" -> "b".
std::string join_path(const std::string& path, const std::string& key);
// A spec or a schema as JSON (type, default, bounds, choices, help), for info and docs.
json param_spec_json(const ParamSpec& spec);
json schema_json(const Schema& schema);

}  // namespace softlab
