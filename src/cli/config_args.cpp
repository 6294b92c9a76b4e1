// The config-file arguments that train, validate and bench share.
#include "cli/commands.hpp"
#include "softlab/error.hpp"
#include "softlab/plugin.hpp"

namespace softlab::cli {

cxxopts::ParseResult parse_args(cxxopts::Options& opts, int argc, char** argv) {
  auto r = opts.parse(argc, argv);
  SOFTLAB_CHECK(r.unmatched().empty(), opts.program(), ": unexpected argument '", r.unmatched().front(),
                "' (one config file per run; options go before any '--')");
  // Plugins before anything reads a config: their modules must be in the registries when
  // the config is resolved.
  if (r.count("plugin"))
    for (const std::string& path : r["plugin"].as<std::vector<std::string>>()) load_plugin(path);
  return r;
}

void add_plugin_option(cxxopts::Options& opts) {
  opts.add_options()("plugin", "load attention modules and heads from a shared library (repeatable; "
                               "docs/extending.md)", cxxopts::value<std::vector<std::string>>());
}

void add_config_options(cxxopts::Options& opts) {
  opts.positional_help("CONFIG");
  opts.add_options()("config", "config file", cxxopts::value<std::string>())(
      "set", "override a config key, KEY=VALUE (repeatable)", cxxopts::value<std::vector<std::string>>());
  add_plugin_option(opts);
  opts.parse_positional({"config"});
}

Config config_from_args(const cxxopts::ParseResult& r, const char* verb, std::vector<std::string> extra) {
  SOFTLAB_CHECK(r.count("config"), verb, ": no config file given (softlab ", verb, " CONFIG)");
  std::vector<std::string> sets = r.count("set") ? r["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return load_config(r["config"].as<std::string>(), sets);
}

void add_inference_set_option(cxxopts::Options& opts) {
  opts.add_options()("set",
                     "KEY=VALUE: train.precision=fp32|bf16 (default fp32), or an inference-safe key of "
                     "model.attention / model.head (softlab info marks them), for this evaluation only",
                     cxxopts::value<std::vector<std::string>>());
  add_plugin_option(opts);
}

std::vector<std::string> inference_model_sets(const cxxopts::ParseResult& r) {
  std::vector<std::string> out;
  if (r.count("set"))
    for (const std::string& s : r["set"].as<std::vector<std::string>>())
      if (s.rfind("train.precision", 0) != 0) out.push_back(s);
  return out;
}

Precision inference_precision(const cxxopts::ParseResult& r, const char* verb) {
  Precision p = Precision::fp32;
  if (!r.count("set")) return p;
  for (const std::string& s : r["set"].as<std::vector<std::string>>()) {
    const auto eq = s.find('=');
    const std::string key = s.substr(0, eq);
    SOFTLAB_CHECK(eq != std::string::npos, verb, ": --set ", text_excerpt(s), ": expected KEY=VALUE");
    if (key != "train.precision") {  // a model key: inference_model_sets(), checked by load_model
      check_inference_override_path(key);
      continue;
    }
    p = parse_precision(s.substr(eq + 1), detail::cat(verb, ": --set train.precision"));
  }
  check_precision_supported(p);
  return p;
}

}  // namespace softlab::cli
