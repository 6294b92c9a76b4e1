// Overrides for evaluating a trained model (`softlab eval RUN --set model.attention.p=4`):
// only keys that a module's schema marks inference_safe, which change a non-learned value
// and neither add nor remove a parameter, so the saved weights stay valid. Everything else
// about a trained model is fixed; changing it means training another model.
#include <string>
#include <vector>

#include "softlab/attention.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"
#include "softlab/head.hpp"

namespace softlab {

namespace {

// The inference-safe keys of `schema`, for the message.
std::string safe_keys(const Schema& schema, const std::string& path) {
  std::string out;
  for (const auto& s : schema)
    if (s.inference_safe) out += (out.empty() ? "" : ", ") + path + "." + s.name;
  return out.empty() ? "none" : out;
}

void check_inference_key(const json& resolved, const std::string& assignment) {
  const auto eq = assignment.find('=');
  SOFTLAB_CHECK(eq != std::string::npos, "--set ", text_excerpt(assignment), ": expected KEY=VALUE");
  const std::string key = assignment.substr(0, eq);
  for (const char* section : {"attention", "head"}) {
    const std::string path = std::string("model.") + section;
    if (key.rfind(path + ".", 0) != 0) continue;
    const std::string name = key.substr(path.size() + 1);
    const std::string type = resolved["model"][section]["type"].get<std::string>();
    const Schema& schema = std::string(section) == "attention"
                               ? attention_registry().get(type, path + ".type").schema
                               : head_registry().get(type, path + ".type").schema;
    bool safe = false;
    for (const auto& s : schema) safe |= s.name == name && s.inference_safe;
    SOFTLAB_CHECK(safe, "--set ", text_excerpt(key), ": not a key that can change after training; for this run's ",
                  section, " '", type, "' that is ", safe_keys(schema, path),
                  " (a trained model's other keys are fixed: train another run to change them)");
    return;
  }
  check_inference_override_path(key);
}

}  // namespace

void check_inference_override_path(const std::string& key) {
  SOFTLAB_CHECK(key.rfind("model.attention.", 0) == 0 || key.rfind("model.head.", 0) == 0, "--set ",
                text_excerpt(key), ": only train.precision and the inference-safe keys of model.attention and "
                "model.head can be set when running a saved model");
}

json apply_inference_overrides(const json& resolved, const std::vector<std::string>& assignments) {
  if (assignments.empty()) return resolved;
  json cfg = resolved;
  for (const auto& a : assignments) {
    check_inference_key(cfg, a);
    apply_override(cfg, a);
  }
  return resolve_config(cfg);
}

}  // namespace softlab
