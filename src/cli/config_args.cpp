// The config-file arguments that train, validate and bench share.
#include "cli/commands.hpp"
#include "softlab/error.hpp"

namespace softlab::cli {

cxxopts::ParseResult parse_args(cxxopts::Options& opts, int argc, char** argv) {
  auto r = opts.parse(argc, argv);
  SOFTLAB_CHECK(r.unmatched().empty(), opts.program(), ": unexpected argument '", r.unmatched().front(),
                "' (one config file per run; options go before any '--')");
  return r;
}

void add_config_options(cxxopts::Options& opts) {
  opts.positional_help("CONFIG");
  opts.add_options()("config", "config file", cxxopts::value<std::string>())(
      "set", "override a config key, KEY=VALUE (repeatable)", cxxopts::value<std::vector<std::string>>());
  opts.parse_positional({"config"});
}

Config config_from_args(const cxxopts::ParseResult& r, const char* verb, std::vector<std::string> extra) {
  SOFTLAB_CHECK(r.count("config"), verb, ": no config file given (softlab ", verb, " CONFIG)");
  std::vector<std::string> sets = r.count("set") ? r["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return load_config(r["config"].as<std::string>(), sets);
}

}  // namespace softlab::cli
