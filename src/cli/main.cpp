// The softlab command. Only this file turns softlab::Error into exit codes:
// 2 for bad input, 1 for an internal fault.
#include <iostream>
#include <string>

#include <cxxopts.hpp>

#include "softlab/softlab.hpp"

namespace {
int run_info() {
  std::cout << "softlab " << softlab::version() << "\n"
            << "build: " << softlab::build_info() << "\n"
            << "threads: " << softlab::num_threads() << " (default: physical cores = "
            << softlab::default_num_threads() << ")\n";
  return 0;
}

void usage(std::ostream& os) {
  os << "usage: softlab <verb> [options]\n"
        "verbs:\n"
        "  info       version, build flags, thread count\n"
        "run 'softlab <verb> --help' for a verb's options\n";
}
}  // namespace

int main(int argc, char** argv) {
  try {
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
    if (verb == "info") {
      cxxopts::Options opts("softlab info", "Print version, build flags and thread count");
      opts.add_options()("h,help", "show this help");
      auto r = opts.parse(argc - 1, argv + 1);
      if (r.count("help")) {
        std::cout << opts.help() << "\n";
        return 0;
      }
      return run_info();
    }
    std::cerr << "softlab: unknown verb '" << verb << "'\n";
    usage(std::cerr);
    return 2;
  } catch (const softlab::Error& e) {
    std::cerr << "softlab: error: " << e.what() << "\n";
    return e.kind() == softlab::Error::Kind::BadInput ? 2 : 1;
  } catch (const cxxopts::exceptions::exception& e) {
    std::cerr << "softlab: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "softlab: internal error: " << e.what() << "\n";
    return 1;
  }
}
