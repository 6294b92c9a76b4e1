// Reading config files, building the typed Config, and load_config, which chains the layers:
// file < --set overrides, then resolve (defaults + validation) before anything else runs.
#include "softlab/config.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "config/config_schema.hpp"
#include "config/json_text.hpp"
#include "config/registries.hpp"
#include "softlab/error.hpp"
#include "softlab/head.hpp"

namespace softlab {

namespace {

// Integers are read as 64 bits and checked against the field they go into, so that no value
// can wrap around on the way (5000000000 into an int is 705032704). The schema's bounds keep
// every key within its field; this says so by name if one of them is ever missed.
template <class T>
T int_field(const json& obj, const char* key, const std::string& section) {
  const json& v = obj[key];
  const std::string path = join_path(section, key);
  if (!v.is_number_integer()) throw Error(detail::cat(path, ": expected an integer, found ", describe_value(v)));
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (std::in_range<T>(u)) return static_cast<T>(u);
  } else {
    const int64_t i = v.get<int64_t>();
    if (std::in_range<T>(i)) return static_cast<T>(i);
  }
  throw Error(detail::cat(path, ": ", v.dump(), " does not fit this key's type (", +std::numeric_limits<T>::min(),
                          " to ", +std::numeric_limits<T>::max(), ")"));
}

// The rules of data.augment and data.subset that tie them to other keys (the schema has
// checked each alone). Errors name the key and its value, as "data.augment.mixup = 0.8: ...".
void check_augment(const json& r) {
  const json& d = r["data"];
  const json& aug = d["augment"];
  const std::string dataset = d["dataset"].get<std::string>();
  auto key = [&](const std::string& k) { return detail::cat("data.augment.", k, " = ", aug[k].dump()); };

  // Sequences have no pixels to augment and no images to mix: a key set for them is a mistake
  // the loader would otherwise ignore. Every key of the schema's augment object counts, so a
  // key added later is covered without touching this.
  if (is_synthetic(dataset)) {
    const config_detail::Node* node = config_detail::config_schema().child("data")->child("augment");
    for (const auto& child : node->children)
      SOFTLAB_CHECK(aug[child.name] == child.param.default_value, key(child.name), ": data.dataset '", dataset,
                    "' is a token-sequence task; image augmentation and mixing do not apply (remove the key or "
                    "set it to ", child.param.default_value.dump(), ")");
    SOFTLAB_CHECK(d["subset"].get<int64_t>() == 0, "data.subset = ", d["subset"].dump(), ": data.dataset '",
                  dataset, "' is a token-sequence task; set its size with data.train_size instead");
    return;
  }

  SOFTLAB_CHECK(aug["translate"].get<int>() == 0 || aug["random_crop"].get<int>() == 0, key("translate"),
                " and data.augment.random_crop = ", aug["random_crop"].dump(),
                ": both shift the image by up to that many pixels (a padded crop is a shift); set one of them");
  const int64_t size = r["model"]["image_size"].get<int64_t>();
  SOFTLAB_CHECK(aug["translate"].get<int64_t>() < size, key("translate"), ": must be below model.image_size (",
                size, "), or nothing of the image is left");
  for (const char* k : {"rrc_scale", "rrc_ratio"}) {
    const json& v = aug[k];
    SOFTLAB_CHECK(v.size() == 2 && v[0].get<double>() <= v[1].get<double>(), key(k),
                  ": expected [min, max] with min <= max");
  }

  // Mixed batches carry class distributions; a head that cannot train on them would fail at
  // the first step, after the data set was loaded and the model built.
  const std::string head = r["model"]["head"]["type"].get<std::string>();
  for (const char* k : {"mixup", "cutmix"}) {
    if (aug[k].get<double>() <= 0.0 || head_takes_soft_targets(head)) continue;
    std::string able;
    for (const auto& t : head_types())
      if (head_takes_soft_targets(t)) able += (able.empty() ? "" : ", ") + t;
    throw Error(detail::cat(key(k), ": model.head.type \"", head, "\" does not train on soft targets (its registry "
                            "entry lacks the \"soft_targets\" trait); set data.augment.", k, " to 0 or use a head "
                            "that has it: ", able.empty() ? std::string("none is registered") : able));
  }
}

}  // namespace

json read_json_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(detail::cat("file '", path, "' does not exist"));
  if (fs::is_directory(path, ec)) throw Error(detail::cat("'", path, "' is a directory, not a JSON file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(detail::cat("cannot open '", path, "' for reading"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const json j = config_detail::parse_json_document(text, path);
  if (!j.is_object())
    throw Error(detail::cat(path, ": the top level must be a JSON object {...}, found ", describe_value(j)));
  return j;
}

std::string dotted_key_path(const std::string& json_pointer) {
  std::string out;
  size_t start = json_pointer.empty() ? std::string::npos : 1;  // a pointer starts with '/'
  while (start != std::string::npos && start <= json_pointer.size()) {
    const size_t slash = json_pointer.find('/', start);
    const std::string raw = json_pointer.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    std::string token;  // RFC 6901 escapes: "~1" is '/', "~0" is '~'
    for (size_t i = 0; i < raw.size(); ++i) {
      const bool escape = raw[i] == '~' && i + 1 < raw.size() && (raw[i + 1] == '0' || raw[i + 1] == '1');
      token += escape ? (raw[++i] == '1' ? '/' : '~') : raw[i];
    }
    // No config key is a number, so a number is an array index.
    const bool index = !token.empty() && token.find_first_not_of("0123456789") == std::string::npos;
    out += index ? "[" + token + "]" : (out.empty() ? "" : ".") + token;
    start = slash == std::string::npos ? std::string::npos : slash + 1;
  }
  return out;
}

Config parse_config(const json& cfg) {
  // Resolving is idempotent and cheap, and makes every .get below safe even when the caller
  // passes an unresolved object.
  const json r = resolve_config(cfg);
  Config c;
  c.name = r["name"].get<std::string>();
  c.seed = int_field<uint64_t>(r, "seed", "");

  const json& d = r["data"];
  c.data.dataset = d["dataset"].get<std::string>();
  if (!d["path"].is_null()) c.data.path = d["path"].get<std::string>();
  check_augment(r);
  c.data.subset = int_field<int64_t>(d, "subset", "data");
  const json& aug = d["augment"];
  c.data.augment.random_crop = int_field<int>(aug, "random_crop", "data.augment");
  c.data.augment.hflip = aug["hflip"].get<bool>();
  c.data.augment.translate = int_field<int>(aug, "translate", "data.augment");
  c.data.augment.random_resized_crop = aug["random_resized_crop"].get<bool>();
  c.data.augment.rrc_scale = {aug["rrc_scale"][0].get<double>(), aug["rrc_scale"][1].get<double>()};
  c.data.augment.rrc_ratio = {aug["rrc_ratio"][0].get<double>(), aug["rrc_ratio"][1].get<double>()};
  c.data.augment.trivial_augment = aug["trivial_augment"].get<bool>();
  c.data.augment.random_erasing = aug["random_erasing"].get<double>();
  c.data.augment.mixup = aug["mixup"].get<double>();
  c.data.augment.cutmix = aug["cutmix"].get<double>();
  c.data.augment.mix_prob = aug["mix_prob"].get<double>();
  c.data.augment.switch_prob = aug["switch_prob"].get<double>();
  SyntheticOptions& so = c.data.synthetic;
  if (is_synthetic(c.data.dataset)) so.task = c.data.dataset.substr(std::string("synthetic:").size());
  so.train_length = int_field<int64_t>(d, "train_length", "data");
  so.eval_lengths = d["eval_lengths"].get<std::vector<int64_t>>();
  so.min_length = d["min_length"].is_null() ? 0 : int_field<int64_t>(d, "min_length", "data");
  so.train_size = int_field<int64_t>(d, "train_size", "data");
  so.test_size = int_field<int64_t>(d, "test_size", "data");
  so.keys = int_field<int64_t>(d, "keys", "data");
  so.values = int_field<int64_t>(d, "values", "data");
  so.bins = int_field<int64_t>(d, "bins", "data");
  so.permute_labels = d["permute_labels"].get<bool>();
  so.modulus = int_field<int64_t>(d, "modulus", "data");
  so.train_fraction = d["train_fraction"].get<double>();

  const json& m = r["model"];
  c.model.type = m["type"].get<std::string>();
  c.model.image_size = int_field<int64_t>(m, "image_size", "model");
  c.model.channels = int_field<int64_t>(m, "channels", "model");
  c.model.patch_size = int_field<int64_t>(m, "patch_size", "model");
  c.model.stem = m["stem"].get<std::string>();
  c.model.stem_width = int_field<int64_t>(m, "stem_width", "model");
  c.model.dim = int_field<int64_t>(m, "dim", "model");
  c.model.depth = int_field<int64_t>(m, "depth", "model");
  c.model.heads = int_field<int64_t>(m, "heads", "model");
  c.model.mlp_ratio = m["mlp_ratio"].get<double>();
  c.model.dropout = m["dropout"].get<double>();
  c.model.pool = m["pool"].get<std::string>();
  c.model.positions = m["positions"].get<std::string>();
  c.model.rope_theta = m["rope_theta"].get<double>();
  c.model.causal = m["causal"].get<bool>();
  c.model.target = m["target"].get<std::string>();
  c.model.qk_norm = m["qk_norm"].get<bool>();
  c.model.layer_scale = m["layer_scale"].is_null() ? 0.0 : m["layer_scale"].get<double>();
  c.model.drop_path = m["drop_path"].get<double>();
  c.model.attn_gate = m["attn_gate"].get<bool>();
  c.model.value_conv = m["value_conv"].is_null() ? 0 : int_field<int64_t>(m, "value_conv", "model");
  c.model.value_conv_groups = m["value_conv_groups"].get<std::string>();
  c.model.attn_out_norm = m["attn_out_norm"].get<bool>();
  c.model.num_classes = int_field<int64_t>(m, "num_classes", "model");
  c.model.attention = m["attention"];
  c.model.head = m["head"];

  const json& t = r["train"];
  c.train.epochs = int_field<int64_t>(t, "epochs", "train");
  c.train.batch_size = int_field<int64_t>(t, "batch_size", "train");
  c.train.eval_batch_size = int_field<int64_t>(t, "eval_batch_size", "train");
  const json& o = t["optimizer"];
  c.train.optimizer.type = o["type"].get<std::string>();
  c.train.optimizer.lr = o["lr"].get<double>();
  c.train.optimizer.weight_decay = o["weight_decay"].get<double>();
  c.train.optimizer.beta1 = o["beta1"].get<double>();
  c.train.optimizer.beta2 = o["beta2"].get<double>();
  c.train.optimizer.eps = o["eps"].get<double>();
  c.train.optimizer.momentum = o["momentum"].get<double>();
  c.train.optimizer.nesterov = o["nesterov"].get<bool>();
  for (const json& g : o["groups"]) {
    auto number = [&g](const char* k) { return g[k].is_null() ? std::nullopt : std::optional(g[k].get<double>()); };
    c.train.optimizer.groups.push_back(
        {g["match"].get<std::string>(), number("lr"), number("lr_scale"), number("weight_decay")});
  }
  const json& s = t["schedule"];
  c.train.schedule.type = s["type"].get<std::string>();
  c.train.schedule.warmup_epochs = s["warmup_epochs"].get<double>();
  c.train.schedule.min_lr = s["min_lr"].get<double>();
  c.train.schedule.step_epochs = s["step_epochs"].get<double>();
  c.train.schedule.gamma = s["gamma"].get<double>();
  c.train.grad_clip = t["grad_clip"].get<double>();
  c.train.accumulate = int_field<int64_t>(t, "accumulate", "train");
  c.train.ema = t["ema"].get<double>();
  c.train.threads = int_field<int>(t, "threads", "train");
  c.train.precision = parse_precision(t["precision"].get<std::string>());
  c.train.eval_every = int_field<int64_t>(t, "eval_every", "train");
  c.train.max_steps = int_field<int64_t>(t, "max_steps", "train");
  c.train.max_batches_per_epoch = int_field<int64_t>(t, "max_batches_per_epoch", "train");
  c.train.max_eval_batches = int_field<int64_t>(t, "max_eval_batches", "train");
  c.train.checkpoint_minutes = t["checkpoint_every"]["minutes"].get<double>();
  c.train.checkpoint_steps = int_field<int64_t>(t["checkpoint_every"], "steps", "train.checkpoint_every");
  c.train.skip_nonfinite_steps = t["on_nonfinite"].get<std::string>() == "skip_step";

  c.output.dir = r["output"]["dir"].get<std::string>();
  c.resolved = r;
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  json cfg = read_json_file(path);
  const std::string stem = std::filesystem::path(path).stem().string();
  const bool named_by_file = !cfg.contains("name");
  if (named_by_file) {
    // First, so the saved config.json reads name, seed, data, ... like the examples.
    json named = json::object();
    named["name"] = stem;
    for (const auto& [k, v] : cfg.items()) named[k] = v;
    cfg = std::move(named);
  }
  try {
    apply_overrides(cfg, overrides);
  } catch (const Error& e) {
    throw Error(detail::cat(path, ": ", e.what()), e.kind());
  }
  // A file name is bytes, not text: one that is not UTF-8 cannot be the run's name (config.json
  // could not hold it). Said here, where the fix is known; a --set name=... still wins.
  if (named_by_file && cfg["name"] == stem && !is_valid_utf8(stem))
    throw Error(detail::cat(path, ": name: the file's name '", text_excerpt(stem), "' is not UTF-8, so it cannot "
                            "name the run; set \"name\" in the file or pass --set name=..."));
  try {
    return parse_config(cfg);
  } catch (const Error& e) {
    throw Error(detail::cat(path, ": ", e.what()), e.kind());
  }
}

SyntheticOptions synthetic_options(const Config& cfg) {
  SOFTLAB_CHECK(is_synthetic(cfg.data.dataset), "data.dataset '", cfg.data.dataset,
                "' is not a synthetic:<task> data set");
  return cfg.data.synthetic;
}

}  // namespace softlab
