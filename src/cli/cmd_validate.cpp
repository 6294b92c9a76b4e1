// softlab validate CONFIG [--set KEY=VALUE]...: checks everything a run would check before
// training (config, model construction, the parameter groups' patterns against the model's
// parameter names) and prints the resolved config, then on stderr the recipe and the groups.
#include <iostream>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"

namespace softlab::cli {

int cmd_validate(int argc, char** argv) {
  cxxopts::Options opts("softlab validate", "Check a config and print it resolved (defaults filled in)");
  add_config_options(opts);
  opts.add_options()("h,help", "show this help");
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  Config cfg = config_from_args(r, "validate");
  check_precision_supported(cfg.train.precision);  // bf16 on a CPU without it: the run would fail
  // Building the model checks what only construction can (module parameters, shapes).
  auto model = build_model(cfg, cfg.model.num_classes > 0 ? cfg.model.num_classes : 10, 0);
  const std::string groups = param_groups_summary(cfg.train.optimizer, model->parameters());
  std::cout << cfg.resolved.dump(2) << "\n";
  std::cerr << recipe_summary(cfg) << groups << "ok: " << model->num_parameters() << " parameters\n";
  return 0;
}

}  // namespace softlab::cli
