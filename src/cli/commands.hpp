#pragma once
// One function per verb of the softlab command; each returns the process exit code and
// lets softlab::Error propagate to main.cpp, which maps it to exit code 2 (bad input) or 1.
#include <string>

#include "cli/options.hpp"

#include "softlab/config.hpp"

namespace softlab::cli {
// The exit codes besides 0, 1 (a bug) and 2 (bad input); docs/reliability.md lists them all.
inline constexpr int kExitDiverged = 3;      // train: a non-finite loss, gradient, evaluation or weight
inline constexpr int kExitInterrupted = 130;  // train: SIGINT/SIGTERM; last.ckpt saved, --resume continues
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_predict(int argc, char** argv);
int cmd_validate(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_sweep(int argc, char** argv);
int cmd_report(int argc, char** argv);
// Sets OpenMP's wait policy from the machine's load and re-executes the process (once).
void configure_openmp_env(char** argv);
std::string openmp_wait_description();
double openmp_probe_other_load();  // cores the start-up probe found busy (0 when it did not run)

// opts.parse, plus an error (exit 2) for arguments no option took: a second config file, or
// anything after "--", would otherwise be dropped without a word. Loads the --plugin
// libraries when the verb has that option.
cxxopts::ParseResult parse_args(cxxopts::Options& opts, int argc, char** argv);

// --plugin LIB (repeatable): shared libraries that register attention modules and heads.
void add_plugin_option(cxxopts::Options& opts);
// The CONFIG positional, --set and --plugin options shared by train, validate and bench.
void add_config_options(cxxopts::Options& opts);
// Loads the config named by those options; `extra` overrides come after the user's.
Config config_from_args(const cxxopts::ParseResult& r, const char* verb, std::vector<std::string> extra = {});
// eval and predict: `--set KEY=VALUE` for the keys that may change when running a saved
// model. Today that is train.precision alone (the checkpoint is f32 either way); any other
// key is an error naming it. Adds --plugin too. Returns the precision to run in (fp32 when not set).
void add_inference_set_option(cxxopts::Options& opts);
Precision inference_precision(const cxxopts::ParseResult& r, const char* verb);
// The --set assignments other than train.precision, for load_model (which checks that each
// is an inference-safe key of the run's modules).
std::vector<std::string> inference_model_sets(const cxxopts::ParseResult& r);
}  // namespace softlab::cli
