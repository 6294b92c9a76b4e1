// The softlab command. Only this file turns softlab::Error into exit codes: 2 for bad input,
// 1 for an internal fault; `train` returns 3 when the run diverged and 130 when interrupted
// (cli/commands.hpp).
//
// Under mpirun every rank runs this main. An error that every rank knows of (thrown by
// dist::agree) ends each rank with its exit code, printed by rank 0 only; an error on one
// rank alone ends the whole job (dist::abort_job), since the others would wait for it.
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "softlab/distributed.hpp"
#include "softlab/softlab.hpp"

namespace {
void usage(std::ostream& os) {
  os << "usage: softlab <verb> [options]\n"
        "\n"
        "  train CONFIG [--set KEY=VALUE]... [--out DIR] [--resume] [--threads N]\n"
        "                          train a model; leaves a run directory\n"
        "  eval RUN_DIR | --checkpoint FILE\n"
        "                          test loss and accuracy of a trained model\n"
        "  predict --checkpoint FILE INPUT...\n"
        "                          classify PGM/PPM images, IDX image files or CIFAR record files\n"
        "  sweep SWEEP.json [--jobs N]\n"
        "                          run a grid of configs x seeds; results.csv, .json and .md\n"
        "  report SWEEP_DIR        tables and SVG plots of a sweep's results\n"
        "  validate CONFIG [--set KEY=VALUE]...\n"
        "                          check a config and print it resolved\n"
        "  bench CONFIG [--mode train|infer]\n"
        "                          speed of the config's model on random inputs, with its GEMM-only time\n"
        "  info [--params CONFIG | --list attention|heads]\n"
        "                          version, build, threads, attention modules and heads; a config's\n"
        "                          parameters; the registered names\n"
        "\n"
        "Every verb that reads a config or a checkpoint takes --plugin LIB (repeatable): a shared\n"
        "library that adds attention modules and heads (docs/extending.md).\n"
        "\n"
        "Run 'softlab <verb> --help' for a verb's options.\n";
}
}  // namespace

namespace {
// Prints an error (rank 0 only, when every rank has it) and returns its exit code; ends the
// job when this rank alone has it.
int fail(const std::string& text, int code) {
  namespace dist = softlab::dist;
  if (dist::active() && !dist::error_is_shared()) {
    std::cerr << "softlab: rank " << dist::rank() << ": " << text << "\n";
    dist::abort_job(code);
  }
  if (dist::is_root()) std::cerr << "softlab: " << text << "\n";
  dist::finalize();
  return code;
}

int run(int argc, char** argv);
}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 2) {
      const std::string verb = argv[1];
      // Before MPI starts: the OpenMP set-up may execute the program again.
      if (verb == "train" || verb == "eval" || verb == "predict" || verb == "bench") softlab::cli::configure_openmp_env(argv);
    }
    softlab::dist::init(&argc, &argv);
    const int code = run(argc, argv);
    softlab::dist::finalize();
    return code;
  } catch (const softlab::Error& e) {
    return fail(std::string("error: ") + e.what(), e.kind() == softlab::Error::Kind::BadInput ? 2 : 1);
  } catch (const cxxopts::exceptions::exception& e) {
    return fail(std::string(e.what()) + " (see --help)", 2);
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the user gave that cannot be created, read or written: bad input, with the path
    // (what() names the operation, the path and the system's reason).
    return fail(std::string("error: ") + e.what(), 2);
  } catch (const std::exception& e) {
    return fail(std::string("internal error: ") + e.what(), 1);
  }
}

namespace {
int run(int argc, char** argv) {
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  const std::string verb = argv[1];
  if (verb == "--help" || verb == "-h" || verb == "help") {
    usage(std::cout);
    return 0;
  }
  if (verb == "--version") {
    std::cout << "softlab " << softlab::version() << "\n";
    return 0;
  }
  using Fn = int (*)(int, char**);
  const std::pair<const char*, Fn> verbs[] = {{"train", softlab::cli::cmd_train},
                                              {"eval", softlab::cli::cmd_eval},
                                              {"predict", softlab::cli::cmd_predict},
                                              {"validate", softlab::cli::cmd_validate},
                                              {"info", softlab::cli::cmd_info},
                                              {"bench", softlab::cli::cmd_bench},
                                              {"sweep", softlab::cli::cmd_sweep},
                                              {"report", softlab::cli::cmd_report}};
  for (const auto& [name, fn] : verbs)
    if (verb == name) return fn(argc - 1, argv + 1);
  std::cerr << "softlab: unknown verb '" << verb << "'\n\n";
  usage(std::cerr);
  return 2;
}
}  // namespace
