#pragma once
// What the config layer needs from the attention and head registries: the schema of a named
// type and the list of names. Kept to these four functions so that config code depends on
// the schemas only, not on the modules' factories.
#include <string>
#include <vector>

#include "softlab/schema.hpp"

namespace softlab {

// Throw softlab::Error naming `path` and the valid types when `type` is unknown.
Schema attention_schema(const std::string& type, const std::string& path);
Schema head_schema(const std::string& type, const std::string& path);
std::vector<std::string> attention_types();
std::vector<std::string> head_types();

}  // namespace softlab
