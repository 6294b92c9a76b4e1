// softlab info: version, build flags, threads, every registered attention module and head
// with its parameters and defaults, and the training-recipe keys (read from the same
// schemas the validator uses).
//   --params CONFIG [--set KEY=VALUE]...: every parameter and buffer of the config's model
//   (name, shape, count) and the totals; the model is built without reading any data.
//   --list attention|heads: the registered names, one per line, for scripts.
#include <algorithm>
#include <iostream>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "config/config_schema.hpp"
#include "softlab/attention.hpp"
#include "softlab/head.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"

namespace softlab::cli {

namespace {
std::string describe_param(const ParamSpec& p) {
  std::string s = detail::cat("    ", p.name, " (", param_type_name(p.type), p.required ? ", required" : ", default ",
                              p.required ? std::string() : p.default_value.dump());
  if (p.min) s += detail::cat(p.min_exclusive ? ", > " : ", >= ", *p.min);
  if (p.max) s += detail::cat(p.max_exclusive ? ", < " : ", <= ", *p.max);
  if (!p.choices.empty()) {
    s += ", one of";
    for (const auto& c : p.choices) s += " " + c;
  }
  if (p.inference_safe) s += ", inference-safe";  // softlab eval --set may change it
  return s + "): " + p.help;
}

// The training-recipe keys of the config schema, with their defaults: every data.augment
// key, the subset, the model and train keys that regularise or average, and the parameter
// groups (a list of objects, shown with the keys of one element).
void list_recipe_keys() {
  std::cout << "training recipe keys (docs/training.md):\n";
  const auto& root = config_detail::config_schema();
  auto show = [](const std::string& path, const config_detail::Node& n) {
    std::string line = describe_param(n.param);
    std::cout << "  " << path << "." << line.substr(4) << "\n";
  };
  const auto* data = root.child("data");
  for (const auto& n : data->child("augment")->children) show("data.augment", n);
  show("data", *data->child("subset"));
  for (const char* k : {"dropout", "drop_path"}) show("model", *root.child("model")->child(k));
  for (const char* k : {"accumulate", "ema"}) show("train", *root.child("train")->child(k));
  const auto* groups = root.child("train")->child("optimizer")->child("groups");
  std::cout << "  train.optimizer.groups (list of objects, default [], e.g. [" << groups->example
            << "]): " << groups->help << "\n";
  for (const auto& n : groups->children) show("train.optimizer.groups[i]", n);
}

template <class R>
void list(const char* title, const R& reg) {
  std::cout << title << ":\n";
  for (const auto& e : reg.entries()) {
    std::cout << "  " << e.name << ": " << e.help << "\n";
    for (const auto& p : e.schema) std::cout << describe_param(p) << "\n";
  }
}

// The number of classes the config's model is built with when no data is read:
// model.num_classes, else the data set's (the image sets' are fixed, a synthetic task's
// follows from its keys).
int64_t classes_without_data(const Config& cfg) {
  if (cfg.model.num_classes > 0) return cfg.model.num_classes;
  if (is_synthetic(cfg.data.dataset)) return synthetic_classes(synthetic_options(cfg));
  return cfg.data.dataset == "cifar100" ? 100 : 10;
}

// One table of (name, shape, count) rows with aligned columns, then its total. `notes`, when
// given, adds a column (one entry per tensor).
void print_tensors(const std::string& title, const nn::NamedTensors& tensors, const char* what,
                   const std::vector<std::string>& notes = {}) {
  if (tensors.empty()) {
    std::cout << title << ": none\n";
    return;
  }
  std::cout << title << ":\n";
  size_t name_w = 0, shape_w = 0;
  int64_t total = 0;
  for (const auto& [n, t] : tensors) {
    name_w = std::max(name_w, n.size());
    shape_w = std::max(shape_w, t.shape().str().size());
    total += t.numel();
  }
  const size_t count_w = std::to_string(total).size();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [n, t] = tensors[i];
    const std::string shape = t.shape().str(), count = std::to_string(t.numel());
    std::cout << "  " << n << std::string(name_w - n.size() + 2, ' ') << shape
              << std::string(shape_w - shape.size() + 2 + count_w - count.size(), ' ') << count
              << (i < notes.size() && !notes[i].empty() ? "  " + notes[i] : std::string()) << "\n";
  }
  std::cout << "  total: " << total << " " << what << " in " << tensors.size()
            << (tensors.size() == 1 ? " tensor\n" : " tensors\n");
}

int print_params(const Config& cfg) {
  const int64_t classes = classes_without_data(cfg);
  // The training-set size only scales a loss term (the svm head's tang2013 preset) and
  // shapes nothing; a nominal size lets every head build.
  const auto model = build_model(cfg, classes, 50000);
  std::cout << "model: " << cfg.name << " (" << cfg.model.type << ", attention "
            << cfg.model.attention.value("type", std::string("?")) << ", head "
            << cfg.model.head.value("type", std::string("?")) << ", " << classes << " classes)\n";
  // Which parameters weight decay applies to is the model's decision (docs/embedding.md).
  std::vector<std::string> decay;
  for (const auto& p : model->parameters()) decay.push_back(p.decay ? "" : "no weight decay");
  print_tensors("parameters (learnable)", model->named_parameters(), "learnable parameters", decay);
  print_tensors("buffers (fixed, saved with the state)", model->buffers(), "values");
  return 0;
}

int print_names(const std::string& which) {
  const std::vector<std::string> valid = {"attention", "heads"};
  if (which != "attention" && which != "heads") {
    const std::string near = closest_key(which, valid);
    throw Error(detail::cat("info --list: unknown list '", which, "'",
                            near.empty() ? std::string() : detail::cat(" (did you mean '", near, "'?)"),
                            "; valid: attention, heads"));
  }
  for (const auto& n : which == "attention" ? attention_registry().names() : head_registry().names())
    std::cout << n << "\n";
  return 0;
}
}  // namespace

int cmd_info(int argc, char** argv) {
  cxxopts::Options opts("softlab info", "Version, build flags, threads, attention modules and heads");
  add_config_options(opts);
  opts.positional_help("[--params CONFIG [--set KEY=VALUE]...] [--list attention|heads]");
  opts.add_options()("params", "print every parameter and buffer of CONFIG's model (name, shape, count) and "
                               "the totals; reads no data")(
      "list", "print the registered names of attention modules or heads, one per line: attention | heads",
      cxxopts::value<std::string>())("h,help", "show this help");
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  const bool params = r.count("params") > 0, listing = r.count("list") > 0;
  SOFTLAB_CHECK(!(params && listing), "info: --params and --list are separate questions; give one of them");
  SOFTLAB_CHECK(params || !r.count("config"), "info: a config file is read only with --params (softlab info --params ",
                r["config"].as<std::string>(), ")");
  SOFTLAB_CHECK(params || !r.count("set"), "info: --set applies to the config of --params (softlab info --params CONFIG "
                "--set KEY=VALUE)");
  if (listing) return print_names(r["list"].as<std::string>());
  if (params) {
    SOFTLAB_CHECK(r.count("config"), "info --params: no config file given (softlab info --params CONFIG)");
    return print_params(config_from_args(r, "info"));
  }
  std::cout << "softlab " << version() << "\n"
            << "build: " << build_info() << "\n"
            << "threads: " << num_threads() << " (default " << default_num_threads() << ": " << default_threads_reason() << ")\n"
            << "OpenMP waiting: " << openmp_wait_description() << "\n"
            << "bf16 matrix products (train.precision=bf16): " << bf16_support() << "\n"
            << "MPI (data-parallel training, distributed sweeps): "
            << (dist::built_with_mpi() ? "built in, " + dist::mpi_library_version() +
                                             (dist::active() ? ", this is rank " + std::to_string(dist::rank()) + " of " +
                                                                   std::to_string(dist::size())
                                                             : std::string())
                                       : std::string("not built in (SOFTLAB_WITH_MPI)"))
            << "\n\n";
  list("attention modules (model.attention.type)", attention_registry());
  std::cout << "\n";
  list("heads (model.head.type)", head_registry());
  std::cout << "\n";
  list_recipe_keys();
  return 0;
}

}  // namespace softlab::cli
