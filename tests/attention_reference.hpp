#pragma once
// A module's composed reference from its registry entry (AttentionEntry::reference) as the
// RefFn that attention_checks.hpp compares the fused module against.
#include <gtest/gtest.h>

#include <string>

#include "attention_checks.hpp"
#include "softlab/attention.hpp"

namespace softlab::test {

// The reference of the module named by `config` (default: the case's own config), reading
// that config's validated params. A different config lets a test build the module one way
// and compare it with the maths written another way that means the same (a default spelled
// out, or a module that reduces to another).
inline RefFn registry_reference(const AttnCase& c, const json& config = nullptr) {
  const json cfg = config.is_null() ? c.config : config;
  const AttentionEntry& entry = attention_registry().get(cfg.at("type").get<std::string>(), "reference");
  if (!entry.reference) throw Error("attention module '" + entry.name + "' has no composed reference");
  const json params = validate_params(entry.schema, cfg, "model.attention", {"type"});
  const AttentionContext ctx = context_of(c);
  return [ref = entry.reference, params, ctx](const Tensor& q, const Tensor& k, const Tensor& v, Attention& m) {
    return ref(m, params, ctx, q, k, v);
  };
}

}  // namespace softlab::test
