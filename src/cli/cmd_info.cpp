// softlab info: version, build flags, threads, every registered attention module and head
// with its parameters and defaults, and the training-recipe keys (read from the same
// schemas the validator uses).
#include <iostream>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "config/config_schema.hpp"
#include "softlab/attention.hpp"
#include "softlab/head.hpp"
#include "softlab/softlab.hpp"

namespace softlab::cli {

namespace {
std::string describe(const ParamSpec& p) {
  std::string s = detail::cat("    ", p.name, " (", param_type_name(p.type), ", default ",
                              p.default_value.is_null() ? std::string("null") : p.default_value.dump());
  if (p.min) s += detail::cat(p.min_exclusive ? ", > " : ", >= ", *p.min);
  if (p.max) s += detail::cat(p.max_exclusive ? ", < " : ", <= ", *p.max);
  if (!p.choices.empty()) {
    s += ", one of";
    for (const auto& c : p.choices) s += " " + c;
  }
  return s + "): " + p.help;
}

// The training-recipe keys of the config schema, with their defaults: every data.augment
// key, the subset, and the model and train keys that regularise or average.
void list_recipe_keys() {
  std::cout << "training recipe keys (docs/training.md):\n";
  const auto& root = config_detail::config_schema();
  auto show = [](const std::string& path, const config_detail::Node& n) {
    std::string line = describe(n.param);
    std::cout << "  " << path << "." << line.substr(4) << "\n";
  };
  const auto* data = root.child("data");
  for (const auto& n : data->child("augment")->children) show("data.augment", n);
  show("data", *data->child("subset"));
  for (const char* k : {"dropout", "drop_path"}) show("model", *root.child("model")->child(k));
  for (const char* k : {"accumulate", "ema"}) show("train", *root.child("train")->child(k));
}

template <class R>
void list(const char* title, const R& reg) {
  std::cout << title << ":\n";
  for (const auto& e : reg.entries()) {
    std::cout << "  " << e.name << ": " << e.help << "\n";
    for (const auto& p : e.schema) std::cout << describe(p) << "\n";
  }
}
}  // namespace

int cmd_info(int argc, char** argv) {
  cxxopts::Options opts("softlab info", "Version, build flags, threads, attention modules and heads");
  opts.add_options()("h,help", "show this help");
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  std::cout << "softlab " << version() << "\n"
            << "build: " << build_info() << "\n"
            << "threads: " << num_threads() << " (default " << default_num_threads() << ": " << default_threads_reason() << ")\n"
            << "OpenMP waiting: " << openmp_wait_description() << "\n"
            << "bf16 matrix products (train.precision=bf16): " << bf16_support() << "\n\n";
  list("attention modules (model.attention.type)", attention_registry());
  std::cout << "\n";
  list("heads (model.head.type)", head_registry());
  std::cout << "\n";
  list_recipe_keys();
  return 0;
}

}  // namespace softlab::cli
