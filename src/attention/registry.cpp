// The attention table: one line per module. Each module's file defines its entry (name,
// help, schema, factory) beside its code.
#include "softlab/attention.hpp"

#include <algorithm>

namespace softlab {

AttentionEntry softmax_attention_entry();
AttentionEntry sigmoid_attention_entry();
AttentionEntry selective_attention_entry();
AttentionEntry softplus_attention_entry();
AttentionEntry relu_attention_entry();
AttentionEntry power_attention_entry();
AttentionEntry linear_attention_entry();
AttentionEntry mala_attention_entry();
AttentionEntry soft_attention_entry();
AttentionEntry inline_attention_entry();

namespace {

void check_entry(const AttentionEntry& entry) {
  const bool causal_key = std::any_of(entry.schema.begin(), entry.schema.end(), [](const ParamSpec& p) {
    return p.name == "causal" && p.type == ParamType::Bool;
  });
  SOFTLAB_CHECK(causal_key == entry.caps.causal, "registering attention module '", entry.name, "': caps.causal is ",
                entry.caps.causal ? "true" : "false", " but the schema ", causal_key ? "has" : "lacks",
                " a Bool key \"causal\"; a module with a causal form has the key, one without has neither");
}

Registry<AttentionEntry>& mutable_attention_registry() {
  static Registry<AttentionEntry> registry = [] {
    Registry<AttentionEntry> r("attention module");
    for (AttentionEntry e : {
             softmax_attention_entry(),
             sigmoid_attention_entry(),
             selective_attention_entry(),
             softplus_attention_entry(),
             relu_attention_entry(),
             power_attention_entry(),
             linear_attention_entry(),
             mala_attention_entry(),
             soft_attention_entry(),
             inline_attention_entry(),
         }) {
      check_entry(e);
      r.add(std::move(e), /*builtin=*/true);
    }
    return r;
  }();
  return registry;
}

}  // namespace

const Registry<AttentionEntry>& attention_registry() { return mutable_attention_registry(); }

const AttentionEntry& register_attention(AttentionEntry entry) {
  check_entry(entry);
  return mutable_attention_registry().add(std::move(entry));
}

std::unique_ptr<Attention> make_attention(const json& cfg, const AttentionContext& ctx, const std::string& path) {
  SOFTLAB_CHECK(cfg.is_object(), path, ": expected an object like {\"type\": \"softmax\"}, found ", cfg.dump());
  const std::string type = cfg.contains("type") && cfg["type"].is_string() ? cfg["type"].get<std::string>() : "";
  SOFTLAB_CHECK(!type.empty(), path, ".type: expected the name of an attention module (",
                [] {
                  std::string s;
                  for (const auto& n : attention_registry().names()) s += (s.empty() ? "" : ", ") + n;
                  return s;
                }(),
                ")");
  const auto& entry = attention_registry().get(type, path + ".type");
  const json params = validate_params(entry.schema, cfg, path, {"type"});
  return entry.factory(params, ctx);
}

}  // namespace softlab
