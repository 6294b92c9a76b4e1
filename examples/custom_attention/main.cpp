// A program linked with softlab that registers this project's two modules itself (no
// plugin), then trains a small sequence model with each: the way to use custom modules
// from C++ code. Prints each run's test accuracy and fails if either did not learn.
//   custom_attention_train CONFIG [RUN_ROOT]
#include <cstdio>
#include <fstream>
#include <string>

#include <softlab/softlab.hpp>

#include "modules.hpp"

int main(int argc, char** argv) {
  using namespace softlab;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [RUN_ROOT]\n", argv[0]);
    return 2;
  }
  const std::string root = argc > 2 ? argv[2] : "runs";
  try {
    register_attention(taylor_attention_entry());
    register_attention(relu_linear_attention_entry());
    bool learned = true;
    // relu_linear has no causal form, so it runs with model.causal = false.
    for (const auto& [type, causal] : {std::pair{"taylor", "true"}, std::pair{"relu_linear", "false"}}) {
      const Config cfg = load_config(argv[1], {std::string("model.attention.type=") + type,
                                               std::string("model.causal=") + causal,
                                               "output.dir=" + root + "/" + type});
      TrainOptions opt;
      opt.quiet = true;
      const TrainResult r = train(cfg, opt);
      // The run directory's metrics.jsonl has one line per epoch.
      std::ifstream metrics(r.run_dir + "/metrics.jsonl");
      std::string line, first_line, last_line;
      while (std::getline(metrics, line))
        if (!line.empty()) (first_line.empty() ? first_line : last_line) = line;
      const double first = json::parse(first_line)["train_loss"].get<double>();
      const double last = json::parse(last_line.empty() ? first_line : last_line)["train_loss"].get<double>();
      std::printf("%s: train loss %.4f -> %.4f, test accuracy %.4f\n", type, first, last,
                  r.summary["test_accuracy"].get<double>());
      learned = learned && last < first;
    }
    if (!learned) return 1;
    std::printf("both modules learned\n");
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
