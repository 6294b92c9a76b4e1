// resolve_config: walks the schema tree (config_schema.cpp) over the user's config, filling
// defaults and rejecting unknown keys, wrong types and out-of-range values, then checks the
// rules that tie two keys together. Everything is checked here, before any work starts, so
// that a typo costs a second and not an epoch.
#include <algorithm>
#include <string>

#include "config/config_schema.hpp"
#include "config/memory_estimate.hpp"
#include "softlab/attention.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"
#include "softlab/nn/layers.hpp"

namespace softlab {

namespace {
using SchemaNode = config_detail::Node;

json resolve_node(const SchemaNode& node, const json& value, const std::string& path);

json resolve_object(const SchemaNode& node, const json& value, const std::string& path) {
  if (!value.is_object())
    throw Error(path.empty() ? detail::cat("config: the top level must be a JSON object, found ", describe_value(value))
                             : detail::cat(path, ": expected an object, found ", describe_value(value)));
  json out = json::object();
  for (const auto& [key, v] : value.items()) {  // the user's order first
    const SchemaNode* child = node.child(key);
    if (!child) throw Error(unknown_key_message(path, key, node.child_names()));
    out[key] = resolve_node(*child, v, join_path(path, key));
  }
  for (const auto& child : node.children) {  // then what they left out, in schema order
    if (out.contains(child.name)) continue;
    const std::string here = join_path(path, child.name);
    if (child.kind == SchemaNode::Kind::List) {
      out[child.name] = json::array();
    } else if (child.kind != SchemaNode::Kind::Param) {
      out[child.name] = resolve_node(child, json::object(), here);
    } else if (child.param.required) {
      throw Error(detail::cat(here, ": missing required key; expected ", expected_text(child.param)));
    } else {
      out[child.name] = child.param.default_value;
    }
  }
  return out;
}

// {"type": name, ...params}: the params are checked against the schema of that type.
json resolve_registry(const SchemaNode& node, const json& value, const std::string& path) {
  if (!value.is_object())
    throw Error(detail::cat(path, ": expected an object like {\"type\": \"softmax\"}, found ", describe_value(value)));
  const json type = value.contains("type") ? value["type"] : node.type_spec().default_value;
  check_param(node.type_spec(), type, path + ".type");
  const std::string name = type.get<std::string>();
  const Schema& schema = config_detail::registry_schema(node, name, path + ".type");
  // Unknown keys first, so the message can say which module's parameters were expected.
  for (const auto& [key, v] : value.items()) {
    const bool known = key == "type" || std::any_of(schema.begin(), schema.end(), [&k = key](const ParamSpec& s) { return s.name == k; });
    if (!known) throw Error(config_detail::unknown_module_key(node, name, schema, path, key));
  }
  const json params = validate_params(schema, value, path, {"type"});
  json out = json::object();
  out["type"] = type;  // always first: it says how to read the rest
  for (const auto& [key, v] : params.items())
    if (key != "type") out[key] = v;
  return out;
}

// [{...}, ...]: every element is an object with the node's keys, resolved as one (its path
// is "path[i]", as dotted_key_path writes it).
json resolve_list(const SchemaNode& node, const json& value, const std::string& path) {
  if (!value.is_array())
    throw Error(detail::cat(path, ": expected a list of objects like [", node.example, "], found ",
                            describe_value(value)));
  json out = json::array();
  for (size_t i = 0; i < value.size(); ++i)
    out.push_back(resolve_object(node, value[i], detail::cat(path, "[", i, "]")));
  return out;
}

json resolve_node(const SchemaNode& node, const json& value, const std::string& path) {
  switch (node.kind) {
    case SchemaNode::Kind::Param:
      check_param(node.param, value, path);
      return value;
    case SchemaNode::Kind::Object: return resolve_object(node, value, path);
    case SchemaNode::Kind::Registry: return resolve_registry(node, value, path);
    case SchemaNode::Kind::List: return resolve_list(node, value, path);
  }
  return value;
}

// ---- rules between keys -----------------------------------------------------------------

struct ImageSet {
  const char* name;
  int64_t channels, size, classes;
};
constexpr ImageSet kImageSets[] = {
    {"mnist", 1, 28, 10}, {"fashion-mnist", 1, 28, 10}, {"cifar10", 3, 32, 10}, {"cifar100", 3, 32, 100}};

const ImageSet* image_set(const std::string& dataset) {
  for (const auto& s : kImageSets)
    if (dataset == s.name) return &s;
  return nullptr;
}

void check_data_model(const json& cfg) {
  const std::string dataset = cfg["data"]["dataset"].get<std::string>();
  const json& model = cfg["model"];
  const std::string type = model["type"].get<std::string>();
  const ImageSet* images = image_set(dataset);
  // A ViT needs images and a sequence model needs tokens; catching the pair here is cheaper
  // than a shape error in the first batch.
  SOFTLAB_CHECK(type != "vit" || images, "model.type 'vit' needs an image data set (mnist, fashion-mnist, cifar10, "
                "cifar100), found data.dataset '", dataset, "'; use model.type 'seq' for synthetic tasks");
  SOFTLAB_CHECK(type != "seq" || !images, "model.type 'seq' needs a synthetic:<task> data set, found data.dataset '",
                dataset, "'; use model.type 'vit' for images");
  if (!images) return;

  const int64_t channels = model["channels"].get<int64_t>(), size = model["image_size"].get<int64_t>();
  std::string found, fix;
  if (channels != images->channels) {
    found = detail::cat("model.channels is ", channels);
    fix = detail::cat("model.channels to ", images->channels);
  }
  if (size != images->size) {
    found += detail::cat(found.empty() ? "" : " and ", "model.image_size is ", size);
    fix += detail::cat(fix.empty() ? "" : " and ", "model.image_size to ", images->size);
  }
  SOFTLAB_CHECK(found.empty(), "data.dataset '", dataset, "' has ", images->channels, "-channel ", images->size, "x",
                images->size, " images but ", found, ": set ", fix);

  const int64_t classes = model["num_classes"].get<int64_t>();
  SOFTLAB_CHECK(classes == 0 || classes == images->classes, "model.num_classes is ", classes, " but data.dataset '",
                dataset, "' has ", images->classes, " classes: set model.num_classes to 0 (from the data set) or ",
                images->classes);
}

// What each group of train.optimizer.groups must say on its own; whether its pattern selects
// any parameter is known only with the model (param_settings in src/optim/param_groups.cpp).
void check_param_groups(const json& groups) {
  for (size_t i = 0; i < groups.size(); ++i) {
    const json& g = groups[i];
    const std::string here = detail::cat("train.optimizer.groups[", i, "]");
    SOFTLAB_CHECK(!g["match"].get<std::string>().empty(), here, ".match: must not be empty; name parameters "
                  "as in checkpoints, e.g. \"blocks.0\" or \"*.attn.attn.*\"");
    SOFTLAB_CHECK(g["lr"].is_null() || g["lr_scale"].is_null(), here, ": sets both lr (", g["lr"].dump(),
                  ") and lr_scale (", g["lr_scale"].dump(), "); give one of them (lr_scale = lr / train.optimizer.lr)");
    SOFTLAB_CHECK(!g["lr"].is_null() || !g["lr_scale"].is_null() || !g["weight_decay"].is_null(), here,
                  ": sets none of lr, lr_scale, weight_decay; a group must change at least one of them");
  }
}

void check_rules(const json& cfg) {
  SOFTLAB_CHECK(!cfg["name"].get<std::string>().empty(), "name: must not be empty (it names the run directory)");
  check_data_model(cfg);

  const json& m = cfg["model"];
  const int64_t dim = m["dim"].get<int64_t>(), heads = m["heads"].get<int64_t>();
  SOFTLAB_CHECK(dim % heads == 0, "model.dim (", dim, ") must be divisible by model.heads (", heads,
                "): every head gets dim/heads features");
  // What the attention module's registry entry says it can do.
  const std::string attn = m["attention"]["type"].get<std::string>();
  const AttentionCaps& caps = attention_registry().get(attn, "model.attention.type").caps;
  SOFTLAB_CHECK(!m["causal"].get<bool>() || caps.causal, "model.causal is true but model.attention.type '", attn,
                "' has no causal form; set model.causal to false or pick a module with one (softlab info lists them)");
  SOFTLAB_CHECK(!caps.needs_grid || m["type"] == "vit", "model.attention.type '", attn,
                "' needs an image grid, which only model.type 'vit' has");
  if (const json& d = cfg["data"]; !d["min_length"].is_null()) {  // variable lengths, right-padded
    const std::string dataset = d["dataset"].get<std::string>();
    SOFTLAB_CHECK(dataset == "synthetic:recall", "data.min_length: variable lengths are a mode of synthetic:recall "
                  "only, not of data.dataset '", dataset, "'; set it to null");
    SyntheticOptions so;
    so.task = "recall";
    so.train_length = d["train_length"].get<int64_t>();
    const int64_t min_len = d["min_length"].get<int64_t>(), train_len = synthetic_train_length(so);
    SOFTLAB_CHECK(min_len <= train_len, "data.min_length (", min_len, ") must be <= the training length (", train_len,
                  ", data.train_length)");
    SOFTLAB_CHECK(m["causal"].get<bool>() || caps.padding, "data.min_length pads the batches, and model.attention.type '",
                  attn, "' cannot take padded batches in a bidirectional model (its registry entry says so); set "
                  "model.causal to true, data.min_length to null, or pick another module");
    SOFTLAB_CHECK(m["target"] != "last", "data.min_length: model.target 'last' would score the padding of shorter "
                  "sequences; use model.target 'all'");
  }
  if (!m["value_conv"].is_null()) {
    const int64_t k = m["value_conv"].get<int64_t>();
    SOFTLAB_CHECK(k % 2 == 1, "model.value_conv must be odd (a k x k conv with zero padding k/2 keeps the grid's "
                  "size), got ", k);
    SOFTLAB_CHECK(m["type"] == "vit", "model.value_conv convolves V over the patch grid, which only model.type "
                  "'vit' has; set it to null");
    SOFTLAB_CHECK(!m["causal"].get<bool>(), "model.value_conv mixes each patch with its neighbours on the grid, "
                  "later ones included, so it cannot be causal; set model.value_conv to null or model.causal to false");
  }
  SOFTLAB_CHECK(m["stem"] != "conv" || m["type"] == "vit", "model.stem 'conv' turns images into tokens, which "
                "only model.type 'vit' has; set model.stem to 'patch'");
  if (m["type"] == "vit") {
    const int64_t size = m["image_size"].get<int64_t>(), patch = m["patch_size"].get<int64_t>();
    SOFTLAB_CHECK(size % patch == 0, "model.image_size (", size, ") must be divisible by model.patch_size (", patch,
                  ")");
    SOFTLAB_CHECK(m["stem"] != "conv" || nn::ConvStem::stages(size, size / patch) > 0, "model.stem 'conv' halves "
                  "the image until it is the patch grid, but halving ", size, " pixels (rounding up) never gives ",
                  size / patch, " (model.image_size / model.patch_size); pick a patch_size that it reaches, or "
                  "model.stem 'patch'");
  }

  const json& t = cfg["train"];
  const double warmup = t["schedule"]["warmup_epochs"].get<double>();
  const int64_t epochs = t["epochs"].get<int64_t>();
  SOFTLAB_CHECK(warmup <= static_cast<double>(epochs), "train.schedule.warmup_epochs (", warmup,
                ") must be <= train.epochs (", epochs, ")");
  const double lr = t["optimizer"]["lr"].get<double>(), min_lr = t["schedule"]["min_lr"].get<double>();
  SOFTLAB_CHECK(t["schedule"]["type"] != "cosine" || min_lr <= lr, "train.schedule.min_lr (", min_lr,
                ") must be <= train.optimizer.lr (", lr, ")");
  const json& opt = t["optimizer"];
  SOFTLAB_CHECK(!opt["nesterov"].get<bool>() || opt["momentum"].get<double>() > 0,
                "train.optimizer.nesterov is true but train.optimizer.momentum is ", opt["momentum"].dump(),
                ": Nesterov momentum needs momentum > 0");
  check_param_groups(opt["groups"]);
}
}  // namespace

json resolve_config(const json& cfg) {
  // model.attention.causal is refused as an unknown key that points at model.causal
  // (registries.cpp leaves it out of the config's view of a module's schema).
  json out = resolve_object(config_detail::config_schema(), cfg, "");
  // Derived defaults: written out, so config.json in the run directory says what was used.
  if (out["output"]["dir"].is_null()) out["output"]["dir"] = "runs/" + out["name"].get<std::string>();
  if (out["model"]["causal"].is_null()) out["model"]["causal"] = out["model"]["type"] == "seq";
  check_rules(out);
  // Last: the estimate reads sizes that the rules above have made consistent.
  config_detail::check_memory(out);
  return out;
}

json resolve_saved_config(const json& saved) {
  json cfg = saved;
  if (cfg.is_object() && cfg.contains("model") && cfg["model"].is_object()) {
    json& m = cfg["model"];
    // Configs saved before model.causal was the one key hold both keys. What ran: a
    // sequence model overwrote the module's key with model.causal; a ViT ignored
    // model.causal and used the module's key.
    const bool seq = m.value("type", "vit") == "seq";
    if (m.contains("attention") && m["attention"].is_object() && m["attention"].contains("causal")) {
      if (!seq) m["causal"] = m["attention"]["causal"];
      m["attention"].erase("causal");
    } else if (!seq && m.contains("causal") && m["causal"].is_boolean() && m["causal"].get<bool>()) {
      m["causal"] = false;  // the ViT never read it; the module's default (false) ran
    }
  }
  return resolve_config(cfg);
}

}  // namespace softlab
