// softlab predict --checkpoint FILE INPUT...: classifies PGM/PPM images, IDX image files
// (MNIST format, plain or gzip) and CIFAR binary record files. One line per image:
// input, index, predicted class id, class name, score (or JSON with --json).
#include <algorithm>
#include <iostream>
#include <limits>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "softlab/image_io.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"

namespace softlab::cli {

int cmd_predict(int argc, char** argv) {
  cxxopts::Options opts("softlab predict", "Classify images with a trained model");
  opts.positional_help("INPUT...");
  opts.add_options()("checkpoint", "a checkpoint file (last.ckpt or best.ckpt of a run)", cxxopts::value<std::string>())(
      "inputs", "PGM/PPM images, IDX image files, CIFAR .bin files", cxxopts::value<std::vector<std::string>>())(
      "limit", "at most this many images per input file (0 = all)", cxxopts::value<int64_t>()->default_value("0"))(
      "json", "print one JSON object per image")("ema", "use the checkpoint's weight EMA (train.ema)")("threads", "threads (0 = physical cores)",
                                                  cxxopts::value<int>()->default_value("0"))("h,help", "show this help");
  add_inference_set_option(opts);
  opts.parse_positional({"inputs"});
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  SOFTLAB_CHECK(r.count("checkpoint"), "predict: --checkpoint FILE is required");
  SOFTLAB_CHECK(r.count("inputs"), "predict: no input files given");
  set_num_threads(r["threads"].as<int>());
  const PrecisionGuard precision(inference_precision(r, "predict"));
  LoadedModel m = load_model(r["checkpoint"].as<std::string>(), r.count("ema") > 0, inference_model_sets(r));
  SOFTLAB_CHECK(m.config.model.type == "vit", "predict: classifies image files, but ", r["checkpoint"].as<std::string>(),
                " holds a '", m.config.model.type, "' model; evaluate sequence models with softlab eval");
  const int64_t limit = r["limit"].as<int64_t>();
  const bool as_json = r.count("json") > 0;
  NoGradGuard no_grad;
  for (const auto& input : r["inputs"].as<std::vector<std::string>>()) {
    Dataset ds = read_image_file(input);
    if (limit > 0 && ds.size > limit) {
      ds.size = limit;
      ds.images.resize(static_cast<size_t>(limit * ds.image_bytes()));
      ds.labels.resize(static_cast<size_t>(limit));
    }
    const auto& mc = m.config.model;
    SOFTLAB_CHECK(ds.channels == mc.channels && ds.height == mc.image_size && ds.width == mc.image_size, "predict: ",
                  input, " holds ", ds.channels, "x", ds.height, "x", ds.width, " images, but the model expects ",
                  mc.channels, "x", mc.image_size, "x", mc.image_size);
    for (auto& l : ds.labels) l = std::max(l, 0);  // unlabelled images: the loader needs a valid label
    BatchLoader::Options lo;
    lo.batch_size = 256;
    lo.shuffle = false;
    lo.norm = m.norm;
    BatchLoader loader(ds, lo);
    loader.start_epoch(0);
    Batch b;
    int64_t index = 0;
    while (loader.next(b)) {
      HeadOutput out = m.model->forward(b.images);
      const auto pred = m.model->head->predict(out.scores);
      const Tensor probs = as_json ? m.model->head->probabilities(out.scores) : Tensor();
      const int64_t C = out.scores.shape()[1];
      for (size_t i = 0; i < pred.size(); ++i, ++index) {
        const int32_t c = pred[i];
        // kNoClass: the model's scores for this input are not finite (a diverged model).
        const std::string name = c == kNoClass ? "none (non-finite scores)"
                                 : c < static_cast<int32_t>(m.class_names.size()) ? m.class_names[static_cast<size_t>(c)]
                                                                                   : std::to_string(c);
        const float score = c == kNoClass ? std::numeric_limits<float>::quiet_NaN()
                                          : out.scores.data()[static_cast<int64_t>(i) * C + c];
        if (as_json) {
          json row = {{"input", input}, {"index", index}, {"class", c}, {"name", name}, {"score", score}};
          // The head's probabilities over the classes (Fourier: its density over the bins).
          if (probs.defined()) {
            const float* pr = probs.data() + static_cast<int64_t>(i) * C;
            row["probabilities"] = std::vector<float>(pr, pr + C);
          }
          std::cout << row.dump() << "\n";
        }
        else
          std::cout << input << "\t" << index << "\t" << c << "\t" << name << "\t" << score << "\n";
      }
    }
  }
  return 0;
}

}  // namespace softlab::cli
