// Reading config files, building the typed Config, and load_config, which chains the layers:
// file < --set overrides, then resolve (defaults + validation) before anything else runs.
#include "softlab/config.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <unordered_set>

#include "config/config_schema.hpp"
#include "config/registries.hpp"
#include "softlab/error.hpp"
#include "softlab/head.hpp"

namespace softlab {

namespace {

// nlohmann reports a byte offset; people read files by line and column.
std::pair<size_t, size_t> line_column(const std::string& text, size_t byte) {
  const size_t at = std::min(byte == 0 ? 0 : byte - 1, text.size());  // 0-based index of the bad character
  const size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
  const size_t line_start = at == 0 ? 0 : text.rfind('\n', at - 1);
  const size_t column = line_start == std::string::npos || at == 0 ? at + 1 : at - line_start;
  return {line, column};
}

// "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ... - why"
// -> "syntax error ... - why": our own prefix names the file, line and column.
std::string parse_reason(const std::string& what) {
  const auto p = what.find("parse error");
  const auto colon = p == std::string::npos ? std::string::npos : what.find(": ", p);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// A repeated key would silently keep only the last value (nlohmann's behaviour); for a config
// that is a typo-shaped bug, so it is an error naming the key's JSON path.
json::parser_callback_t duplicate_key_check(const std::string& file) {
  struct Frame {
    bool object;
    std::unordered_set<std::string> keys;
    std::string key;
    size_t elements = 0;
  };
  auto frames = std::make_shared<std::vector<Frame>>();
  return [frames, file](int, json::parse_event_t event, json& parsed) {
    auto& st = *frames;
    auto element = [&] {
      if (!st.empty() && !st.back().object) ++st.back().elements;
    };
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        element();
        st.push_back({event == json::parse_event_t::object_start, {}, {}, 0});
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!st.empty()) st.pop_back();
        break;
      case json::parse_event_t::value: element(); break;
      case json::parse_event_t::key: {
        Frame& f = st.back();
        f.key = parsed.get<std::string>();
        if (!f.keys.insert(f.key).second) {
          std::string path;
          for (const auto& fr : st)
            path += fr.object ? (path.empty() ? "" : ".") + fr.key : detail::cat("[", fr.elements - 1, "]");
          throw Error(detail::cat(file, ": duplicate key '", path, "' (JSON keeps only the last value)"));
        }
        break;
      }
    }
    return true;
  };
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
  json j;
  try {
    j = json::parse(text, duplicate_key_check(path));
  } catch (const json::parse_error& e) {
    const auto [line, column] = line_column(text, e.byte);
    throw Error(detail::cat(path, ":", line, ":", column, ": JSON syntax error: ", parse_reason(e.what())));
  }
  if (!j.is_object())
    throw Error(detail::cat(path, ": the top level must be a JSON object {...}, found ", describe_value(j)));
  return j;
}

Config parse_config(const json& cfg) {
  // Resolving is idempotent and cheap, and makes every .get below safe even when the caller
  // passes an unresolved object.
  const json r = resolve_config(cfg);
  Config c;
  c.name = r["name"].get<std::string>();
  c.seed = r["seed"].get<uint64_t>();

  const json& d = r["data"];
  c.data.dataset = d["dataset"].get<std::string>();
  if (!d["path"].is_null()) c.data.path = d["path"].get<std::string>();
  check_augment(r);
  c.data.subset = d["subset"].get<int64_t>();
  const json& aug = d["augment"];
  c.data.augment.random_crop = aug["random_crop"].get<int>();
  c.data.augment.hflip = aug["hflip"].get<bool>();
  c.data.augment.translate = aug["translate"].get<int>();
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
  so.train_length = d["train_length"].get<int64_t>();
  so.eval_lengths = d["eval_lengths"].get<std::vector<int64_t>>();
  so.train_size = d["train_size"].get<int64_t>();
  so.test_size = d["test_size"].get<int64_t>();
  so.keys = d["keys"].get<int64_t>();
  so.values = d["values"].get<int64_t>();
  so.bins = d["bins"].get<int64_t>();
  so.permute_labels = d["permute_labels"].get<bool>();
  so.modulus = d["modulus"].get<int64_t>();
  so.train_fraction = d["train_fraction"].get<double>();

  const json& m = r["model"];
  c.model.type = m["type"].get<std::string>();
  c.model.image_size = m["image_size"].get<int64_t>();
  c.model.channels = m["channels"].get<int64_t>();
  c.model.patch_size = m["patch_size"].get<int64_t>();
  c.model.dim = m["dim"].get<int64_t>();
  c.model.depth = m["depth"].get<int64_t>();
  c.model.heads = m["heads"].get<int64_t>();
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
  c.model.num_classes = m["num_classes"].get<int64_t>();
  c.model.attention = m["attention"];
  c.model.head = m["head"];

  const json& t = r["train"];
  c.train.epochs = t["epochs"].get<int64_t>();
  c.train.batch_size = t["batch_size"].get<int64_t>();
  c.train.eval_batch_size = t["eval_batch_size"].get<int64_t>();
  const json& o = t["optimizer"];
  c.train.optimizer.type = o["type"].get<std::string>();
  c.train.optimizer.lr = o["lr"].get<double>();
  c.train.optimizer.weight_decay = o["weight_decay"].get<double>();
  c.train.optimizer.beta1 = o["beta1"].get<double>();
  c.train.optimizer.beta2 = o["beta2"].get<double>();
  c.train.optimizer.eps = o["eps"].get<double>();
  c.train.optimizer.momentum = o["momentum"].get<double>();
  c.train.optimizer.nesterov = o["nesterov"].get<bool>();
  const json& s = t["schedule"];
  c.train.schedule.type = s["type"].get<std::string>();
  c.train.schedule.warmup_epochs = s["warmup_epochs"].get<double>();
  c.train.schedule.min_lr = s["min_lr"].get<double>();
  c.train.schedule.step_epochs = s["step_epochs"].get<double>();
  c.train.schedule.gamma = s["gamma"].get<double>();
  c.train.grad_clip = t["grad_clip"].get<double>();
  c.train.accumulate = t["accumulate"].get<int64_t>();
  c.train.ema = t["ema"].get<double>();
  c.train.threads = t["threads"].get<int>();
  c.train.precision = parse_precision(t["precision"].get<std::string>());
  c.train.eval_every = t["eval_every"].get<int64_t>();
  c.train.max_steps = t["max_steps"].get<int64_t>();
  c.train.max_batches_per_epoch = t["max_batches_per_epoch"].get<int64_t>();
  c.train.max_eval_batches = t["max_eval_batches"].get<int64_t>();

  c.output.dir = r["output"]["dir"].get<std::string>();
  c.resolved = r;
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  json cfg = read_json_file(path);
  if (!cfg.contains("name")) {
    // First, so the saved config.json reads name, seed, data, ... like the examples.
    json named = json::object();
    named["name"] = std::filesystem::path(path).stem().string();
    for (const auto& [k, v] : cfg.items()) named[k] = v;
    cfg = std::move(named);
  }
  apply_overrides(cfg, overrides);
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
