#pragma once
// JSON text that a user wrote (config and sweep files, --set values), read within limits.
// nlohmann's parser is iterative, but copying, comparing and printing a document recurse, so
// a file nested 100,000 levels deep would overflow the stack long after it was parsed: the
// depth is bounded while parsing. A number beyond a double and a repeated key are errors
// that name the key, not nlohmann's exceptions.
#include <optional>
#include <string>

#include "softlab/schema.hpp"

namespace softlab::config_detail {

// Objects and arrays nested deeper than this are refused; a config needs five levels.
constexpr int kMaxJsonDepth = 64;

// Parses a file's text. Every error is BadInput and starts with `file`: a syntax error with
// its line and column, too deep a nesting, a repeated key or a number that overflows a
// double with the key's path.
json parse_json_document(const std::string& text, const std::string& file);

// Parses a --set value: nullopt when `text` is not JSON (the caller says what was expected);
// too deep a nesting is an error naming `path`, the key being set.
std::optional<json> parse_json_value(const std::string& text, const std::string& path);

}  // namespace softlab::config_detail
