// softlab eval RUN_DIR | --checkpoint FILE: test loss and accuracy of a trained model on
// the test split of the data set it was trained on (and, for a synthetic task, at each of
// its data.eval_lengths). --set KEY=VALUE changes an inference-safe module key for this
// evaluation only (LSSAR's re-weighting power: model.attention.p); the weights are unchanged.
#include <filesystem>
#include <iostream>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"

namespace softlab::cli {

int cmd_eval(int argc, char** argv) {
  cxxopts::Options opts("softlab eval", "Evaluate a trained model on its data set's test split");
  opts.positional_help("RUN_DIR");
  opts.add_options()("run_dir", "run directory (evaluates its last.ckpt, or best.ckpt with --best)",
                     cxxopts::value<std::string>())("checkpoint", "a checkpoint file", cxxopts::value<std::string>())(
      "best", "use best.ckpt of the run directory")("ema", "evaluate the checkpoint's weight EMA (train.ema)")("data-path", "read the data set from this directory",
                                                    cxxopts::value<std::string>())(
      "batch-size", "evaluation batch size", cxxopts::value<int64_t>()->default_value("256"))(
      "threads", "threads (0 = physical cores)", cxxopts::value<int>()->default_value("0"))("h,help", "show this help");
  add_inference_set_option(opts);
  opts.parse_positional({"run_dir"});
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  SOFTLAB_CHECK(r.count("run_dir") + r.count("checkpoint") == 1, "eval: give either RUN_DIR or --checkpoint FILE");
  std::string ckpt;
  if (r.count("checkpoint")) {
    ckpt = r["checkpoint"].as<std::string>();
  } else {
    const std::filesystem::path dir(r["run_dir"].as<std::string>());
    std::error_code ec;
    SOFTLAB_CHECK(std::filesystem::is_directory(dir, ec), "eval: ", dir.string(), " is not a run directory");
    ckpt = (dir / (r.count("best") ? "best.ckpt" : "last.ckpt")).string();
  }
  set_num_threads(r["threads"].as<int>());
  const PrecisionGuard precision(inference_precision(r, "eval"));
  const std::vector<std::string> sets = inference_model_sets(r);
  LoadedModel m = load_model(ckpt, r.count("ema") > 0, sets);
  const auto path = r.count("data-path") ? std::optional<std::string>(r["data-path"].as<std::string>()) : m.config.data.path;
  // A synthetic task is regenerated from the run's config and seed: the same test sets.
  DataSplit data = is_synthetic(m.config.data.dataset) ? make_synthetic(synthetic_options(m.config), m.config.seed)
                                                       : load_dataset(m.config.data.dataset, path);
  const int64_t bs = r["batch-size"].as<int64_t>();
  EvalResult e = evaluate(*m.model, data.test, m.norm, bs);
  json out = {{"checkpoint", ckpt}, {"weights", r.count("ema") ? "ema" : "model"}, {"dataset", m.config.data.dataset}, {"examples", e.count},
              {"test_loss", e.loss}, {"test_accuracy", e.accuracy}, {"test_top3_accuracy", e.top3},
              {"test_top5_accuracy", e.top5}};
  if (!sets.empty()) out["overrides"] = sets;  // what this evaluation changed
  for (const auto& [k, v] : e.extra) out["test_" + k] = v;
  if (const json by = evaluate_by_length(*m.model, data, e, bs); !by.empty()) out["test_by_length"] = by;
  if (dist::is_root()) std::cout << out.dump(2) << "\n";  // under mpirun the ranks share the work
  return 0;
}

}  // namespace softlab::cli
