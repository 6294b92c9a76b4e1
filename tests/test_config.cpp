// The config layer: schema checks, defaults, every kind of error (each must name the JSON
// path), --set overrides and config files. Written against the registries' names rather than
// a fixed list, so adding an attention module or head never breaks these tests.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>

#include <unistd.h>

#include "config/config_schema.hpp"
#include "config/registries.hpp"
#include "nn/trunk.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"
#include "expect_error.hpp"

using namespace softlab;

namespace {
using test::expect_error;

// DESIGN.md, "The config", verbatim.
const char* kDesignExample = R"({
  "name": "fmnist_vit_softmax",
  "seed": 0,
  "data": {"dataset": "fashion-mnist", "path": null,
           "augment": {"random_crop": 0, "hflip": false}},
  "model": {"type": "vit", "image_size": 28, "channels": 1, "patch_size": 7,
            "dim": 64, "depth": 4, "heads": 4, "mlp_ratio": 2, "dropout": 0.0, "pool": "cls",
            "attention": {"type": "softmax"},
            "head": {"type": "softmax"}},
  "train": {"epochs": 5, "batch_size": 128,
            "optimizer": {"type": "adamw", "lr": 0.001, "weight_decay": 0.05},
            "schedule": {"type": "cosine", "warmup_epochs": 1},
            "grad_clip": 1.0, "threads": 0},
  "output": {"dir": "runs/fmnist_vit_softmax"}
})";

json example() { return json::parse(kDesignExample); }
json minimal() { return json::parse(R"({"data": {"dataset": "fashion-mnist"}})"); }

json with(json cfg, const std::string& pointer, const json& value) {
  cfg[json::json_pointer(pointer)] = value;
  return cfg;
}

// Every leaf of `part` is in `whole` with the same value.
void expect_contained(const json& part, const json& whole, const std::string& path = "") {
  for (const auto& [k, v] : part.items()) {
    const std::string here = path.empty() ? k : path + "." + k;
    ASSERT_TRUE(whole.contains(k)) << here << " was dropped";
    if (v.is_object())
      expect_contained(v, whole[k], here);
    else
      EXPECT_EQ(v, whole[k]) << here << " changed";
  }
}

struct TempFile {
  std::filesystem::path path;
  TempFile(const std::string& name, const std::string& text) {
    path = std::filesystem::temp_directory_path() / ("softlab_test_config_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    path /= name;
    std::ofstream(path) << text;
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    std::filesystem::remove(path.parent_path(), ec);  // only once empty: other files may still use it
  }
};

bool has_param(const Schema& s, const std::string& name) {
  for (const auto& p : s)
    if (p.name == name) return true;
  return false;
}

}  // namespace

// ---- schema helpers ---------------------------------------------------------------------

TEST(Schema, ClosestKeySuggestsOnlyNearKeys) {
  const std::vector<std::string> top{"name", "seed", "data", "model", "train", "output"};
  EXPECT_EQ(closest_key("trian", top), "train");
  EXPECT_EQ(closest_key("Model", top), "model");
  EXPECT_EQ(closest_key("modle", top), "model");
  EXPECT_EQ(closest_key("optimizer", top), "");
  EXPECT_EQ(closest_key("x", {"lr"}), "");
  EXPECT_EQ(closest_key("lr_", {"lr", "eps"}), "lr");
}

TEST(Schema, CheckParamTypes) {
  const ParamSpec f{.name = "lr", .type = ParamType::Float, .default_value = 1.0};
  EXPECT_NO_THROW(check_param(f, 1, "lr"));
  EXPECT_NO_THROW(check_param(f, 0.5, "lr"));
  expect_error([&] { check_param(f, "0.5", "a.lr"); }, {"a.lr: expected a number, found string \"0.5\""});
  expect_error([&] { check_param(f, nullptr, "a.lr"); }, {"a.lr", "found null"});

  const ParamSpec i{.name = "n", .type = ParamType::Int, .default_value = 1};
  EXPECT_NO_THROW(check_param(i, 3, "n"));
  expect_error([&] { check_param(i, 1.5, "x.n"); }, {"x.n: expected an integer, found number 1.5"});
  expect_error([&] { check_param(i, true, "x.n"); }, {"x.n: expected an integer, found boolean true"});

  const ParamSpec b{.name = "b", .type = ParamType::Bool, .default_value = false};
  expect_error([&] { check_param(b, 1, "b"); }, {"b: expected true or false, found number 1"});

  const ParamSpec s{.name = "pool", .type = ParamType::String, .default_value = "cls", .choices = {"cls", "mean"}};
  EXPECT_NO_THROW(check_param(s, "mean", "pool"));
  expect_error([&] { check_param(s, "maen", "m.pool"); },
               {"m.pool: expected one of 'cls', 'mean', found string \"maen\"", "did you mean 'mean'"});

  const ParamSpec pattern{.name = "d", .type = ParamType::String, .choices = {"mnist", "synthetic:<task>"}};
  EXPECT_NO_THROW(check_param(pattern, "synthetic:copy", "d"));
  expect_error([&] { check_param(pattern, "synthetic:", "d"); }, {"d: expected one of"});

  const ParamSpec ch{.name = "channels", .type = ParamType::Int, .default_value = 1, .choices = {"1", "3"}};
  EXPECT_NO_THROW(check_param(ch, 3, "c"));
  expect_error([&] { check_param(ch, 2, "c"); }, {"c: expected one of 1, 3, found number 2"});

  const ParamSpec n{.name = "p", .type = ParamType::String, .default_value = nullptr, .nullable = true};
  EXPECT_NO_THROW(check_param(n, nullptr, "p"));
  expect_error([&] { check_param(n, 3, "p"); }, {"p: expected a string or null, found number 3"});

  const ParamSpec l{.name = "l", .type = ParamType::IntList, .min = 0.0};
  EXPECT_NO_THROW(check_param(l, json::array({1, 2}), "l"));
  expect_error([&] { check_param(l, json::array({1, -2}), "x.l"); }, {"x.l[1]: expected an integer >= 0"});
  expect_error([&] { check_param(l, 1, "x.l"); }, {"x.l: expected a list of integers, each >= 0, found number 1"});
}

TEST(Schema, CheckParamBounds) {
  const ParamSpec p{.name = "p", .type = ParamType::Float, .min = 0.0, .max = 1.0, .max_exclusive = true};
  EXPECT_NO_THROW(check_param(p, 0, "p"));
  EXPECT_NO_THROW(check_param(p, 0.999, "p"));
  expect_error([&] { check_param(p, 1, "a.p"); }, {"a.p: expected a number in [0, 1), found number 1"});
  expect_error([&] { check_param(p, -0.1, "a.p"); }, {"a.p: expected a number in [0, 1), found number -0.1"});
  const ParamSpec q{.name = "q", .type = ParamType::Float, .min = 0.0, .min_exclusive = true};
  expect_error([&] { check_param(q, 0, "q"); }, {"q: expected a number > 0, found number 0"});
  const ParamSpec g{.name = "g", .type = ParamType::Float, .min = 0.0, .max = 1.0, .min_exclusive = true};
  EXPECT_NO_THROW(check_param(g, 1, "g"));
  expect_error([&] { check_param(g, 0, "g"); }, {"g: expected a number in (0, 1]"});
}

TEST(Schema, ValidateParamsFillsDefaultsAndRejectsUnknownKeys) {
  const Schema s{
      {.name = "scale", .type = ParamType::Float, .default_value = nullptr, .nullable = true},
      {.name = "causal", .type = ParamType::Bool, .default_value = false},
  };
  const json out = validate_params(s, json{{"type", "x"}, {"causal", true}}, "model.attention", {"type"});
  EXPECT_EQ(out, (json{{"type", "x"}, {"causal", true}, {"scale", nullptr}}));
  expect_error([&] { validate_params(s, json{{"casual", true}}, "model.attention", {"type"}); },
               {"model.attention.casual: unknown key 'casual' (did you mean 'causal'?); valid keys: type, scale, causal"});
  expect_error([&] { validate_params(s, json{{"causal", 1}}, "model.attention"); },
               {"model.attention.causal: expected true or false"});
  expect_error([&] { validate_params(s, json::array(), "model.attention"); }, {"model.attention: expected an object"});
  const Schema r{{.name = "k", .type = ParamType::Int, .required = true}};
  expect_error([&] { validate_params(r, json::object(), "p"); }, {"p.k: missing required key"});
}

// The schema's own defaults must pass its own checks, for every registered module too.
TEST(Schema, EveryDefaultPassesItsOwnCheck) {
  using config_detail::Node;
  std::function<void(const Node&, const std::string&)> walk = [&](const Node& n, const std::string& path) {
    for (const auto& c : n.children) {
      const std::string here = join_path(path, c.name);
      if (c.kind == Node::Kind::Param) {
        EXPECT_FALSE(c.param.help.empty()) << here << " has no help line";
        if (!c.param.required && !c.param.default_value.is_null()) {
          EXPECT_NO_THROW(check_param(c.param, c.param.default_value, here));
        }
      } else {
        EXPECT_FALSE(c.help.empty()) << here << " has no help line";
        walk(c, here);
      }
      if (c.kind == Node::Kind::Registry)
        for (const auto& t : config_detail::registry_types(c))
          for (const auto& p : config_detail::registry_schema(c, t, here))
            if (!p.default_value.is_null()) {
              EXPECT_NO_THROW(check_param(p, p.default_value, here + "." + p.name)) << t;
            }
    }
  };
  walk(config_detail::config_schema(), "");
}

TEST(Schema, ConfigSchemaJsonHasEveryKeyWithHelp) {
  const json s = config_schema_json();
  EXPECT_EQ(s["type"], "object");
  const json& epochs = s["keys"]["train"]["keys"]["epochs"];
  EXPECT_EQ(epochs["type"], "int");
  EXPECT_EQ(epochs["default"], 5);
  EXPECT_EQ(epochs["min"], 1.0);
  EXPECT_FALSE(epochs["help"].get<std::string>().empty());
  const json& att = s["keys"]["model"]["keys"]["attention"];
  EXPECT_EQ(att["type"], "registry");
  for (const auto& t : attention_types()) EXPECT_TRUE(att["variants"].contains(t)) << t;
  EXPECT_TRUE(s["keys"]["model"]["keys"]["head"]["variants"].contains("softmax"));
  EXPECT_EQ(s["keys"]["data"]["keys"]["dataset"]["required"], true);
  const json& groups = s["keys"]["train"]["keys"]["optimizer"]["keys"]["groups"];
  EXPECT_EQ(groups["type"], "list");
  EXPECT_EQ(groups["default"], json::array());
  EXPECT_EQ(groups["element"]["keys"]["match"]["required"], true);
  for (const char* k : {"lr", "lr_scale", "weight_decay"}) EXPECT_TRUE(groups["element"]["keys"][k]["nullable"]) << k;
  // The example is itself a valid list.
  EXPECT_NO_THROW(resolve_config(with(minimal(), "/train/optimizer/groups", groups["example"])));
}

// ---- resolving ---------------------------------------------------------------------------

TEST(ConfigResolve, DesignExampleResolvesUnchangedAndRoundTrips) {
  const json r = resolve_config(example());
  expect_contained(example(), r);
  // Keys stay in the user's order.
  std::vector<std::string> top;
  for (const auto& [k, v] : r.items()) top.push_back(k);
  EXPECT_EQ(top, (std::vector<std::string>{"name", "seed", "data", "model", "train", "output"}));
  EXPECT_EQ(resolve_config(r), r);                          // idempotent
  EXPECT_EQ(resolve_config(json::parse(r.dump(2))), r);     // survives config.json
  const Config c = parse_config(r);
  EXPECT_EQ(c.resolved, r);
  EXPECT_EQ(c.name, "fmnist_vit_softmax");
  EXPECT_EQ(c.data.dataset, "fashion-mnist");
  EXPECT_FALSE(c.data.path);
  EXPECT_EQ(c.model.attention["type"], "softmax");
  EXPECT_EQ(c.train.schedule.warmup_epochs, 1.0);
  EXPECT_EQ(c.output.dir, "runs/fmnist_vit_softmax");
  EXPECT_EQ(parse_config(c.resolved).resolved, r);
}

TEST(ConfigResolve, MinimalConfigGetsDefaults) {
  const json r = resolve_config(minimal());
  EXPECT_EQ(r["name"], "run");
  EXPECT_EQ(r["seed"], 0);
  EXPECT_TRUE(r["data"]["path"].is_null());
  EXPECT_EQ(r["data"]["augment"]["random_crop"], 0);
  EXPECT_EQ(r["data"]["augment"]["hflip"], false);
  EXPECT_EQ(r["data"]["augment"]["mixup"], 0.0);
  EXPECT_EQ(r["data"]["subset"], 0);
  EXPECT_EQ(r["model"]["patch_size"], 7);
  EXPECT_EQ(r["model"]["attention"]["type"], "softmax");
  EXPECT_EQ(r["model"]["head"]["type"], "softmax");
  EXPECT_EQ(r["train"]["optimizer"]["lr"], 1e-3);
  EXPECT_EQ(r["train"]["schedule"]["type"], "cosine");
  EXPECT_EQ(r["train"]["max_steps"], 0);
  EXPECT_EQ(r["output"]["dir"], "runs/run");
  // Registry parameters get their defaults too.
  for (const auto& p : head_schema("softmax", "model.head.type")) EXPECT_TRUE(r["model"]["head"].contains(p.name)) << p.name;
}

// The typed Config's member defaults must be the schema's defaults (two places, one truth).
TEST(ConfigResolve, TypedDefaultsMatchSchemaDefaults) {
  const Config c = parse_config(minimal());
  const Config d;
  EXPECT_EQ(c.seed, d.seed);
  EXPECT_EQ(c.data.augment.random_crop, d.data.augment.random_crop);
  EXPECT_EQ(c.data.augment.hflip, d.data.augment.hflip);
  EXPECT_EQ(c.data.augment.translate, d.data.augment.translate);
  EXPECT_EQ(c.data.augment.random_resized_crop, d.data.augment.random_resized_crop);
  EXPECT_EQ(c.data.augment.rrc_scale, d.data.augment.rrc_scale);
  EXPECT_EQ(c.data.augment.rrc_ratio, d.data.augment.rrc_ratio);
  EXPECT_EQ(c.data.augment.trivial_augment, d.data.augment.trivial_augment);
  EXPECT_EQ(c.data.augment.random_erasing, d.data.augment.random_erasing);
  EXPECT_EQ(c.data.augment.mixup, d.data.augment.mixup);
  EXPECT_EQ(c.data.augment.cutmix, d.data.augment.cutmix);
  EXPECT_EQ(c.data.augment.mix_prob, d.data.augment.mix_prob);
  EXPECT_EQ(c.data.augment.switch_prob, d.data.augment.switch_prob);
  EXPECT_EQ(c.data.subset, d.data.subset);
  EXPECT_EQ(c.model.type, d.model.type);
  EXPECT_EQ(c.model.image_size, d.model.image_size);
  EXPECT_EQ(c.model.channels, d.model.channels);
  EXPECT_EQ(c.model.patch_size, d.model.patch_size);
  EXPECT_EQ(c.model.dim, d.model.dim);
  EXPECT_EQ(c.model.depth, d.model.depth);
  EXPECT_EQ(c.model.heads, d.model.heads);
  EXPECT_EQ(c.model.mlp_ratio, d.model.mlp_ratio);
  EXPECT_EQ(c.model.dropout, d.model.dropout);
  EXPECT_EQ(c.model.drop_path, d.model.drop_path);
  EXPECT_EQ(c.model.pool, d.model.pool);
  EXPECT_EQ(c.model.num_classes, d.model.num_classes);
  EXPECT_EQ(c.train.epochs, d.train.epochs);
  EXPECT_EQ(c.train.batch_size, d.train.batch_size);
  EXPECT_EQ(c.train.eval_batch_size, d.train.eval_batch_size);
  EXPECT_EQ(c.train.optimizer.type, d.train.optimizer.type);
  EXPECT_EQ(c.train.optimizer.lr, d.train.optimizer.lr);
  EXPECT_EQ(c.train.optimizer.weight_decay, d.train.optimizer.weight_decay);
  EXPECT_EQ(c.train.optimizer.beta1, d.train.optimizer.beta1);
  EXPECT_EQ(c.train.optimizer.beta2, d.train.optimizer.beta2);
  EXPECT_EQ(c.train.optimizer.eps, d.train.optimizer.eps);
  EXPECT_EQ(c.train.optimizer.momentum, d.train.optimizer.momentum);
  EXPECT_EQ(c.train.optimizer.nesterov, d.train.optimizer.nesterov);
  EXPECT_TRUE(c.train.optimizer.groups.empty());
  EXPECT_TRUE(d.train.optimizer.groups.empty());
  EXPECT_EQ(c.train.schedule.type, d.train.schedule.type);
  EXPECT_EQ(c.train.schedule.warmup_epochs, d.train.schedule.warmup_epochs);
  EXPECT_EQ(c.train.schedule.min_lr, d.train.schedule.min_lr);
  EXPECT_EQ(c.train.schedule.step_epochs, d.train.schedule.step_epochs);
  EXPECT_EQ(c.train.schedule.gamma, d.train.schedule.gamma);
  EXPECT_EQ(c.train.grad_clip, d.train.grad_clip);
  EXPECT_EQ(c.train.accumulate, d.train.accumulate);
  EXPECT_EQ(c.train.ema, d.train.ema);
  EXPECT_EQ(c.train.threads, d.train.threads);
  EXPECT_EQ(c.train.eval_every, d.train.eval_every);
  EXPECT_EQ(c.train.max_steps, d.train.max_steps);
  EXPECT_EQ(c.train.max_batches_per_epoch, d.train.max_batches_per_epoch);
}

TEST(ConfigResolve, AcceptsCifarSyntheticAndNullableKeys) {
  json cifar = with(with(with(minimal(), "/data/dataset", "cifar10"), "/model/channels", 3), "/model/image_size", 32);
  cifar["model"]["patch_size"] = 4;
  cifar["data"]["path"] = "/tmp/cifar";
  EXPECT_EQ(parse_config(cifar).data.path.value(), "/tmp/cifar");
  const json seq = json::parse(R"({"data": {"dataset": "synthetic:recall"}, "model": {"type": "seq"}})");
  EXPECT_EQ(resolve_config(seq)["model"]["type"], "seq");
  // The tasks are listed by name: a typo is caught with a suggestion.
  expect_error([&] { resolve_config(with(seq, "/data/dataset", "synthetic:recal")); },
               {"data.dataset", "did you mean 'synthetic:recall'"});
}

// ---- errors: each names the JSON path --------------------------------------------------

TEST(ConfigErrors, UnknownTopLevelKeySuggestsClosest) {
  json c = example();
  c["trian"] = json::object();
  expect_error([&] { resolve_config(c); },
               {"trian: unknown key 'trian' (did you mean 'train'?); valid keys: name, seed, data, model, train, output"});
}

TEST(ConfigErrors, UnknownNestedKeyNamesPath) {
  expect_error([&] { resolve_config(with(example(), "/train/optimizer/learning_rate", 0.1)); },
               {"train.optimizer.learning_rate: unknown key 'learning_rate'", "valid keys: type, lr,"});
  expect_error([&] { resolve_config(with(example(), "/train/optimizer/weight_decy", 0.1)); },
               {"did you mean 'weight_decay'"});
}

TEST(ConfigErrors, WrongTypeNamesKeyAndFound) {
  expect_error([&] { resolve_config(with(example(), "/train/epochs", "5")); },
               {"train.epochs: expected an integer in [1, 1000000], found string \"5\""});
  expect_error([&] { resolve_config(with(example(), "/train/epochs", 5.5)); }, {"train.epochs", "number 5.5"});
  expect_error([&] { resolve_config(with(example(), "/data/augment", true)); },
               {"data.augment: expected an object, found boolean true"});
  expect_error([&] { resolve_config(with(example(), "/model/attention", "softmax")); },
               {"model.attention: expected an object like {\"type\": \"softmax\"}"});
  expect_error([&] { resolve_config(json::array()); }, {"top level must be a JSON object"});
}

TEST(ConfigErrors, OutOfRange) {
  expect_error([&] { resolve_config(with(example(), "/model/dropout", 1.0)); },
               {"model.dropout: expected a number in [0, 1), found number 1.0"});
  expect_error([&] { resolve_config(with(example(), "/train/optimizer/lr", 0)); },
               {"train.optimizer.lr: expected a number > 0, found number 0"});
  expect_error([&] { resolve_config(with(example(), "/train/epochs", 0)); },
               {"train.epochs: expected an integer in [1, 1000000]"});
  expect_error([&] { resolve_config(with(example(), "/seed", -1)); },
               {"seed: expected an integer in [0, 18446744073709551615]"});
}

TEST(ConfigErrors, BadChoiceListsChoices) {
  expect_error([&] { resolve_config(with(example(), "/model/pool", "max")); },
               {"model.pool: expected one of 'cls', 'mean', found string \"max\""});
  expect_error([&] { resolve_config(with(example(), "/train/optimizer/type", "adam")); },
               {"train.optimizer.type", "did you mean 'adamw'"});
  expect_error([&] { resolve_config(with(example(), "/data/dataset", "fashion_mnist")); },
               {"data.dataset", "did you mean 'fashion-mnist'", "synthetic:recall", "synthetic:modadd"});
  expect_error([&] { resolve_config(json::object()); }, {"data.dataset: missing required key"});
}

TEST(ConfigErrors, CrossFieldRulesNameBothKeys) {
  expect_error([&] { resolve_config(with(example(), "/model/heads", 5)); },
               {"model.dim (64) must be divisible by model.heads (5)"});
  expect_error([&] { resolve_config(with(example(), "/model/patch_size", 5)); },
               {"model.image_size (28) must be divisible by model.patch_size (5)"});
  expect_error([&] { resolve_config(with(example(), "/train/schedule/warmup_epochs", 6)); },
               {"train.schedule.warmup_epochs (6) must be <= train.epochs (5)"});
  expect_error([&] { resolve_config(with(example(), "/data/dataset", "cifar10")); },
               {"data.dataset 'cifar10'", "model.channels is 1", "model.image_size is 28",
                "set model.channels to 3 and model.image_size to 32"});
  json mnist_rgb = with(with(example(), "/model/channels", 3), "/data/dataset", "mnist");
  expect_error([&] { resolve_config(mnist_rgb); }, {"data.dataset 'mnist'", "set model.channels to 1"});
  json nesterov = with(with(example(), "/train/optimizer/nesterov", true), "/train/optimizer/momentum", 0);
  expect_error([&] { resolve_config(nesterov); }, {"train.optimizer.nesterov", "train.optimizer.momentum"});
  expect_error([&] { resolve_config(with(example(), "/model/num_classes", 7)); },
               {"model.num_classes is 7", "10 classes"});
  expect_error([&] { resolve_config(with(example(), "/model/type", "seq")); }, {"model.type 'seq'", "data.dataset"});
  expect_error([&] { resolve_config(with(example(), "/train/schedule/min_lr", 0.1)); },
               {"train.schedule.min_lr (0.1) must be <= train.optimizer.lr (0.001)"});
}

TEST(ConfigErrors, UnknownAttentionTypeListsValidTypes) {
  std::string list;
  for (const auto& t : attention_types()) list += (list.empty() ? "" : ", ") + t;
  expect_error([&] { resolve_config(with(example(), "/model/attention/type", "sofmax")); },
               {"model.attention.type", "'sofmax'", "did you mean 'softmax'", "valid: " + list});
  expect_error([&] { resolve_config(with(example(), "/model/head/type", "nonesuch")); }, {"model.head.type", "softmax"});
}

TEST(ConfigErrors, UnknownModuleParamNamesPath) {
  expect_error([&] { resolve_config(with(example(), "/model/attention/bogus_param", 1)); },
               {"model.attention.bogus_param: unknown key 'bogus_param'", "valid keys: type"});
  expect_error([&] { resolve_config(with(example(), "/model/head/bogus_param", 1)); },
               {"model.head.bogus_param: unknown key", "(the parameters of head 'softmax')"});
  if (has_param(head_schema("softmax", ""), "temperature")) {  // the softmax head of docs/heads.md
    expect_error([&] { resolve_config(with(example(), "/model/head/temprature", 2.0)); },
                 {"model.head.temprature: unknown key", "did you mean 'temperature'"});
    expect_error([&] { resolve_config(with(example(), "/model/head/temperature", 0)); },
                 {"model.head.temperature: expected a number > 0"});
  }
}

// ---- --set overrides -----------------------------------------------------------------------

TEST(ConfigOverride, TypedByTheSchema) {
  json c = example();
  apply_overrides(c, {"train.epochs=3", "train.optimizer.lr=3e-4", "data.augment.hflip=true", "model.pool=mean",
                      "name=my run", "data.path=null", "seed=18446744073709551615", "model.causal=1"});
  EXPECT_EQ(c["train"]["epochs"], 3);
  EXPECT_TRUE(c["train"]["epochs"].is_number_integer());
  EXPECT_EQ(c["train"]["optimizer"]["lr"], 3e-4);
  EXPECT_EQ(c["data"]["augment"]["hflip"], true);
  EXPECT_EQ(c["model"]["pool"], "mean");
  EXPECT_EQ(c["name"], "my run");
  EXPECT_TRUE(c["data"]["path"].is_null());
  EXPECT_EQ(parse_config(c).seed, 18446744073709551615ull);
  EXPECT_EQ(c["model"]["causal"], true);
  apply_override(c, "name=\"quoted\"");
  EXPECT_EQ(c["name"], "quoted");
  apply_override(c, "train.optimizer={\"type\": \"sgd\", \"lr\": 0.1}");
  EXPECT_EQ(resolve_config(c)["train"]["optimizer"]["momentum"], 0.9);
}

TEST(ConfigOverride, CreatesMissingObjects) {
  json c = minimal();
  apply_override(c, "train.schedule.warmup_epochs=0.5");
  EXPECT_EQ(resolve_config(c)["train"]["schedule"]["warmup_epochs"], 0.5);
}

TEST(ConfigOverride, UnknownKeyIsAnErrorWithSuggestion) {
  json c = example();
  expect_error([&] { apply_override(c, "trian.epochs=3"); },
               {"override 'trian.epochs=3'", "trian: unknown key 'trian' (did you mean 'train'?)"});
  expect_error([&] { apply_override(c, "train.epoch=3"); },
               {"train.epoch: unknown key 'epoch' (did you mean 'epochs'?)"});
  expect_error([&] { apply_override(c, "model.attention.bogus_param=1"); }, {"model.attention.bogus_param: unknown key"});
  expect_error([&] { apply_override(c, "train.epochs.x=1"); },
               {"train.epochs: is an integer in [1, 1000000], not an object"});
  expect_error([&] { apply_override(c, "train.epochs"); }, {"expected KEY=VALUE"});
  expect_error([&] { apply_override(c, "train..epochs=1"); }, {"bad key"});
}

TEST(ConfigOverride, BadValueNamesKey) {
  json c = example();
  expect_error([&] { apply_override(c, "train.epochs=three"); },
               {"train.epochs: expected an integer in [1, 1000000], found 'three'"});
  expect_error([&] { apply_override(c, "train.epochs=2.5"); }, {"train.epochs", "'2.5'"});
  expect_error([&] { apply_override(c, "train.optimizer.lr=fast"); }, {"train.optimizer.lr: expected a number"});
  expect_error([&] { apply_override(c, "data.augment.hflip=yes"); }, {"data.augment.hflip: expected true or false"});
  expect_error([&] { apply_override(c, "model.dropout=1.5"); }, {"model.dropout: expected a number in [0, 1)"});
  expect_error([&] { apply_override(c, "model.pool=max"); }, {"model.pool: expected one of 'cls', 'mean'"});
  expect_error([&] { apply_override(c, "train.optimizer=sgd"); }, {"train.optimizer: expected a JSON object"});
  EXPECT_EQ(c, example());  // a failed override changes nothing
}

TEST(ConfigOverride, AttentionType) {
  for (const auto& t : attention_types()) {
    json c = example();
    apply_override(c, "model.attention.type=" + t);
    const json r = resolve_config(c);
    EXPECT_EQ(r["model"]["attention"]["type"], t);
    for (const auto& p : attention_schema(t, "")) EXPECT_TRUE(r["model"]["attention"].contains(p.name)) << t << "." << p.name;
  }
  json c = example();
  expect_error([&] { apply_override(c, "model.attention.type=nonesuch"); },
               {"model.attention.type", "'nonesuch'", "valid: "});
}

namespace {
// The text that --set needs to reproduce `v`.
std::string set_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// Switching model.<obj>.type from a to b drops a's parameters that b lacks (they came from the
// base file), and b's own parameter given before the type switch is still accepted. Returns
// false when no registered pair (a, b) shows the first part.
bool check_type_switch(const std::string& obj, const std::vector<std::string>& types,
                       Schema (*schema)(const std::string&, const std::string&)) {
  for (const auto& a : types)
    for (const auto& b : types) {
      if (a == b) continue;
      const Schema &sa = schema(a, ""), &sb = schema(b, "");
      for (const auto& p : sa) {
        if (has_param(sb, p.name) || p.default_value.is_null()) continue;
        json c = example();
        c["model"][obj] = json{{"type", a}, {p.name, p.default_value}};
        apply_override(c, "model." + obj + ".type=" + b);
        EXPECT_FALSE(c["model"][obj].contains(p.name)) << a << " -> " << b << ": " << p.name;
        EXPECT_NO_THROW(resolve_config(c)) << a << " -> " << b;
        for (const auto& q : sb) {
          if (q.default_value.is_null()) continue;
          json d = example();
          d["model"][obj] = json{{"type", a}};
          apply_overrides(d, {"model." + obj + "." + q.name + "=" + set_text(q.default_value),
                              "model." + obj + ".type=" + b});
          EXPECT_EQ(resolve_config(d)["model"][obj]["type"], b);
          break;
        }
        return true;
      }
    }
  return false;
}
}  // namespace

TEST(ConfigOverride, TypeChangeDropsOldTypesParams) {
  const bool attention = check_type_switch("attention", attention_types(), &attention_schema);
  const bool head = check_type_switch("head", head_types(), &head_schema);
  if (!attention && !head) GTEST_SKIP() << "no two registered types where one has a parameter the other lacks";
}

TEST(ConfigOverride, TypeChangeKeepsUnknownKeysForValidation) {
  json c = example();
  c["model"]["attention"]["bogus_param"] = 1;
  apply_override(c, "model.attention.type=softmax");
  expect_error([&] { resolve_config(c); }, {"model.attention.bogus_param: unknown key"});
  c["model"]["head"]["type"] = 5;  // a malformed type is simply replaced
  apply_override(c, "model.head.type=softmax");
  EXPECT_EQ(c["model"]["head"]["type"], "softmax");
}

// ---- files -------------------------------------------------------------------------------

TEST(ConfigFile, SyntaxErrorGivesLineAndColumn) {
  TempFile f("bad.json", "{\n  \"seed\": 0,\n  \"data\": {\"dataset\": \"mnist\",}\n}\n");
  expect_error([&] { read_json_file(f.path.string()); }, {f.path.string() + ":3:", "JSON syntax error"});
  try {
    read_json_file(f.path.string());
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(":3:31:"), std::string::npos) << e.what();
  }
  TempFile g("truncated.json", "{\"seed\": 0,\n\"data\": {");
  expect_error([&] { read_json_file(g.path.string()); }, {":2:"});
}

TEST(ConfigFile, MissingFileTopLevelAndDuplicateKeys) {
  expect_error([&] { read_json_file("/nonexistent/softlab.json"); }, {"/nonexistent/softlab.json", "does not exist"});
  TempFile a("array.json", "[1, 2]");
  expect_error([&] { read_json_file(a.path.string()); }, {a.path.string(), "top level must be a JSON object"});
  TempFile d("dup.json", R"({"train": {"optimizer": {"lr": 0.1, "lr": 0.2}}, "x": [{"a": 1}, {"b": 1, "b": 2}]})");
  expect_error([&] { read_json_file(d.path.string()); }, {"duplicate key 'train.optimizer.lr'"});
  TempFile e("dup2.json", R"({"x": [{"a": 1}, {"b": 1, "b": 2}]})");
  expect_error([&] { read_json_file(e.path.string()); }, {"duplicate key 'x[1].b'"});
}

TEST(ConfigFile, LoadConfigNamesRunAfterFileAndAppliesOverrides) {
  TempFile f("fmnist_small.json", minimal().dump());
  const Config c = load_config(f.path.string(), {"train.epochs=2", "model.attention.type=softmax"});
  EXPECT_EQ(c.name, "fmnist_small");
  EXPECT_EQ(c.output.dir, "runs/fmnist_small");
  EXPECT_EQ(c.train.epochs, 2);
  EXPECT_EQ(c.resolved.begin().key(), "name");
  EXPECT_EQ(load_config(f.path.string(), {"name=other"}).output.dir, "runs/other");
  TempFile g("bad_epochs.json", with(minimal(), "/train/epochs", "5").dump());
  expect_error([&] { load_config(g.path.string()); }, {g.path.string(), "train.epochs: expected an integer"});
}

// ---- causality: model.causal is the one key --------------------------------------------------

TEST(ConfigCausal, OneKeyWithPerModelDefaults) {
  EXPECT_EQ(resolve_config(example())["model"]["causal"], false);  // a ViT
  EXPECT_FALSE(resolve_config(example())["model"]["attention"].contains("causal"));
  json seq = example();
  seq["data"] = {{"dataset", "synthetic:recall"}};
  seq["model"] = {{"type", "seq"}};
  EXPECT_EQ(resolve_config(seq)["model"]["causal"], true);
  seq["model"]["causal"] = false;
  EXPECT_EQ(resolve_config(seq)["model"]["causal"], false);
  // The model writes it into the module's own key.
  const Config cfg = parse_config(resolve_config(seq));
  EXPECT_EQ(nn::detail::attention_config(cfg.model)["causal"], false);
}

TEST(ConfigCausal, TheModuleKeyAndContradictionsAreRefused) {
  json c = example();
  c["model"]["attention"]["causal"] = true;
  expect_error([&] { resolve_config(c); }, {"model.attention.causal", "model.causal"});
  json o = example();
  expect_error([&] { apply_override(o, "model.attention.causal=true"); }, {"model.attention.causal", "model.causal"});
  // A module without a causal form (SOFT) cannot run in a causal model: both keys named.
  json soft = example();
  soft["model"]["attention"] = {{"type", "soft"}};
  EXPECT_NO_THROW(resolve_config(soft));
  soft["model"]["causal"] = true;
  expect_error([&] { resolve_config(soft); }, {"model.causal is true", "model.attention.type 'soft'", "no causal form"});
  // ... nor in a sequence model, which has no image grid.
  json seq = example();
  seq["data"] = {{"dataset", "synthetic:recall"}};
  seq["model"] = {{"type", "seq"}, {"causal", false}, {"attention", {{"type", "soft"}}}};
  expect_error([&] { resolve_config(seq); }, {"model.attention.type 'soft'", "image grid"});
}

// The block extras: off by default; the value conv needs an odd kernel, the ViT's grid and
// a bidirectional model, and each refusal names the keys.
TEST(ConfigBlockExtras, DefaultsAndRules) {
  const json r = resolve_config(example());
  EXPECT_EQ(r["model"]["attn_gate"], false);
  EXPECT_TRUE(r["model"]["value_conv"].is_null());
  EXPECT_EQ(r["model"]["value_conv_groups"], "channel");
  EXPECT_EQ(r["model"]["attn_out_norm"], false);
  const Config c = parse_config(resolve_config(with(with(example(), "/model/value_conv", 5), "/model/attn_gate", true)));
  EXPECT_EQ(c.model.value_conv, 5);
  EXPECT_TRUE(c.model.attn_gate);
  expect_error([&] { resolve_config(with(example(), "/model/value_conv", 4)); }, {"model.value_conv must be odd", "4"});
  expect_error([&] { resolve_config(with(example(), "/model/value_conv_groups", "token")); },
               {"model.value_conv_groups", "channel", "head"});
  expect_error([&] { resolve_config(with(with(example(), "/model/value_conv", 3), "/model/causal", true)); },
               {"model.value_conv", "model.causal", "cannot be causal"});
  json seq = example();
  seq["data"] = {{"dataset", "synthetic:recall"}};
  seq["model"] = {{"type", "seq"}, {"value_conv", 3}};
  expect_error([&] { resolve_config(seq); }, {"model.value_conv", "only model.type 'vit'"});
}

// Run directories written before model.causal was the one key hold both keys; they load
// as what they ran.
TEST(ConfigCausal, SavedConfigsFromEarlierVersionsLoadAsTheyRan) {
  json vit = resolve_config(example());
  vit["model"]["causal"] = true;  // written into every ViT run, never read by the ViT
  vit["model"]["attention"]["causal"] = false;
  json r = resolve_saved_config(vit);
  EXPECT_EQ(r["model"]["causal"], false);
  EXPECT_FALSE(r["model"]["attention"].contains("causal"));
  vit["model"]["attention"]["causal"] = true;  // a ViT with a causal module ran causal
  EXPECT_EQ(resolve_saved_config(vit)["model"]["causal"], true);

  json seq = example();
  seq["data"] = {{"dataset", "synthetic:recall"}};
  seq["model"] = {{"type", "seq"}};
  seq = resolve_config(seq);
  seq["model"]["attention"]["causal"] = false;  // the module's default; model.causal overrode it
  r = resolve_saved_config(seq);
  EXPECT_EQ(r["model"]["causal"], true);
  EXPECT_FALSE(r["model"]["attention"].contains("causal"));
  EXPECT_EQ(resolve_saved_config(r), r);  // a current config passes unchanged
}

// ---- parameter groups (train.optimizer.groups) -------------------------------------------

TEST(ConfigGroups, ValidListResolvesWithUnsetKeysNull) {
  EXPECT_EQ(resolve_config(minimal())["train"]["optimizer"]["groups"], json::array());
  const json groups = json::parse(R"([{"match": "blocks.0", "lr_scale": 0.1},
                                      {"weight_decay": 0, "match": "*.attn.attn.*", "lr": 0.01}])");
  const json r = resolve_config(with(minimal(), "/train/optimizer/groups", groups));
  const json& g = r["train"]["optimizer"]["groups"];
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[0], json::parse(R"({"match": "blocks.0", "lr_scale": 0.1, "lr": null, "weight_decay": null})"));
  EXPECT_EQ(g[1]["lr"], 0.01);
  EXPECT_TRUE(g[1]["lr_scale"].is_null());
  EXPECT_EQ(resolve_config(r), r);                       // idempotent
  EXPECT_EQ(resolve_config(json::parse(r.dump(2))), r);  // survives config.json
  const Config c = parse_config(r);
  ASSERT_EQ(c.train.optimizer.groups.size(), 2u);
  const ParamGroup& a = c.train.optimizer.groups[0];
  EXPECT_EQ(a.match, "blocks.0");
  EXPECT_EQ(a.lr_scale, 0.1);
  EXPECT_FALSE(a.lr.has_value());
  EXPECT_FALSE(a.weight_decay.has_value());
  const ParamGroup& b = c.train.optimizer.groups[1];
  EXPECT_EQ(b.lr, 0.01);
  EXPECT_EQ(b.weight_decay, 0.0);
  EXPECT_FALSE(b.lr_scale.has_value());
}

TEST(ConfigGroups, BadGroupsNameTheirElement) {
  auto groups = [](const char* text) { return with(minimal(), "/train/optimizer/groups", json::parse(text)); };
  expect_error([&] { resolve_config(groups(R"([{"match": "a", "lr": 0.1}, {"match": "b", "lr": 0.1, "lr_scale": 2}])"));
               },
               {"train.optimizer.groups[1]: sets both lr (0.1) and lr_scale (2)", "give one"});
  expect_error([&] { resolve_config(groups(R"([{"lr": 0.1}])")); },
               {"train.optimizer.groups[0].match: missing required key"});
  expect_error([&] { resolve_config(groups(R"([{"match": "a", "lrscale": 2}])")); },
               {"train.optimizer.groups[0].lrscale: unknown key 'lrscale' (did you mean 'lr_scale'?)",
                "match, lr, lr_scale, weight_decay"});
  expect_error([&] { resolve_config(groups(R"({"match": "a", "lr": 0.1})")); },
               {"train.optimizer.groups: expected a list of objects like [{", "found object {"});
  expect_error([&] { resolve_config(groups(R"("blocks.0")")); }, {"train.optimizer.groups: expected a list"});
  expect_error([&] { resolve_config(groups(R"([{"match": "a", "lr": 1}, 3])")); },
               {"train.optimizer.groups[1]: expected an object, found number 3"});
  expect_error([&] { resolve_config(groups(R"([{"match": "a"}])")); },
               {"train.optimizer.groups[0]: sets none of lr, lr_scale, weight_decay"});
  expect_error([&] { resolve_config(groups(R"([{"match": "", "lr": 1}])")); },
               {"train.optimizer.groups[0].match: must not be empty"});
  expect_error([&] { resolve_config(groups(R"([{"match": "a", "lr_scale": -1}])")); },
               {"train.optimizer.groups[0].lr_scale: expected a number >= 0"});
  expect_error([&] { resolve_config(groups(R"([{"match": 7, "lr": 1}])")); },
               {"train.optimizer.groups[0].match: expected a string"});
}

TEST(ConfigGroups, SetTakesAJsonListOrOneElementByIndex) {
  json c = minimal();
  apply_override(c, R"(train.optimizer.groups=[{"match": "blocks.0", "lr_scale": 10}])");
  EXPECT_EQ(c["train"]["optimizer"]["groups"][0]["lr_scale"], 10);
  apply_override(c, "train.optimizer.groups[0].lr_scale=null");
  apply_override(c, "train.optimizer.groups[0].lr=0.02");
  apply_override(c, "train.optimizer.groups[0].match=*.attn.attn.*");  // a string needs no quotes
  // One past the end appends; an element is set whole as a JSON object, or key by key.
  apply_override(c, R"(train.optimizer.groups[1]={"match": "head", "weight_decay": 0})");
  apply_override(c, "train.optimizer.groups[2].match=*.bias");
  apply_override(c, "train.optimizer.groups[2].lr_scale=2");
  const json r = resolve_config(c);
  EXPECT_EQ(r["train"]["optimizer"]["groups"],
            json::parse(R"([{"match": "*.attn.attn.*", "lr_scale": null, "lr": 0.02, "weight_decay": null},
                            {"match": "head", "weight_decay": 0, "lr": null, "lr_scale": null},
                            {"match": "*.bias", "lr_scale": 2, "lr": null, "weight_decay": null}])"));

  const json before = c;
  expect_error([&] { apply_override(c, "train.optimizer.groups[5].lr=1"); },
               {"train.optimizer.groups[5]: no such element; the list has 3 elements (index 3 appends one)"});
  expect_error([&] { apply_override(c, "train.optimizer.groups.lr=1"); },
               {"train.optimizer.groups: is a list; name one of its elements, as train.optimizer.groups[0].lr"});
  expect_error([&] { apply_override(c, "train.optimizer.groups[0].lrr=1"); },
               {"train.optimizer.groups[0].lrr: unknown key 'lrr' (did you mean 'lr'?)"});
  expect_error([&] { apply_override(c, "train.optimizer.groups[0].lr=fast"); },
               {"train.optimizer.groups[0].lr: expected a number >= 0 or null, found 'fast'"});
  expect_error([&] { apply_override(c, "train.optimizer.groups[0]=[1]"); },
               {"train.optimizer.groups[0]: expected a JSON object"});
  expect_error([&] { apply_override(c, "train.optimizer.groups=blocks.0"); },
               {"train.optimizer.groups: expected a JSON list of objects such as [{"});
  expect_error([&] { apply_override(c, "model.dim[0]=3"); }, {"model.dim[0]: model.dim is not a list of objects"});
  expect_error([&] { apply_override(c, "data.eval_lengths[0]=3"); }, {"data.eval_lengths is not a list of objects"});
  expect_error([&] { apply_override(c, "model.attention.scale[0]=1"); },
               {"model.attention.scale: is a value, not a list"});
  for (const char* bad : {"train.optimizer.groups[x].lr=1", "train.optimizer.groups[].lr=1",
                          "train.optimizer.groups[-1].lr=1", "train.optimizer.groups[99999999999].lr=1",
                          "train.optimizer.[0].lr=1", "train.optimizer.groups[0.lr=1"})
    expect_error([&] { apply_override(c, bad); }, {"bad key", "train.optimizer.groups[0].lr"});
  EXPECT_EQ(c, before);  // a failed override changes nothing
}
