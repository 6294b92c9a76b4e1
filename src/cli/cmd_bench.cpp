// softlab bench CONFIG [--mode train|infer]: measures a config's model on random inputs of
// the config's shape, no data set needed.
//   train: images/s of full training steps (forward, backward, clipping, optimiser), and,
//          from the same run, the GEMM-only time of a step: every matrix product the step
//          makes (recorded by a trace), each timed on its own. gemm_share = GEMM time / step
//          time says how much of a step is spent outside the matrix products.
//   infer: batch-1 latency and batch-256 throughput in eval mode without autograd.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "ops/gemm.hpp"
#include "softlab/optim.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"

namespace softlab::cli {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct Inputs {
  Tensor images;
  std::vector<int32_t> labels;
};

Inputs random_inputs(const Config& cfg, int64_t batch, int64_t classes, uint64_t seed) {
  Generator g(seed);
  Inputs in;
  if (cfg.model.type == "seq") {  // random token ids at the training length, a target at every position
    const SyntheticOptions so = synthetic_options(cfg);
    const int64_t N = synthetic_train_length(so), V = synthetic_vocab(so);
    in.images = empty({batch, N});
    for (int64_t i = 0; i < batch * N; ++i) {
      in.images.mutable_data()[i] = static_cast<float>(g.below(static_cast<uint64_t>(V)));
      in.labels.push_back(static_cast<int32_t>(g.below(static_cast<uint64_t>(classes))));
    }
    return in;
  }
  in.images = randn({batch, cfg.model.channels, cfg.model.image_size, cfg.model.image_size}, g);
  for (int64_t i = 0; i < batch; ++i) in.labels.push_back(static_cast<int32_t>(g.below(static_cast<uint64_t>(classes))));
  return in;
}

// Times each recorded GEMM alone (median of `reps` runs after one warm-up) on fresh buffers.
double gemm_only_ms(const std::vector<kernels::GemmArgs>& calls, int reps, json* shapes) {
  std::map<std::string, std::pair<int, double>> by_shape;
  double total = 0.0;
  for (const auto& c0 : calls) {
    kernels::GemmArgs c = c0;
    const int64_t bb = c.b_shared ? 1 : c.batch;
    std::vector<float> a(static_cast<size_t>(c.batch * c.m * c.k), 0.5f), b(static_cast<size_t>(bb * c.k * c.n), 0.25f),
        out(static_cast<size_t>(c.batch * c.m * c.n), 0.0f), bias(static_cast<size_t>(c.n), 0.1f);
    c.a = a.data();
    c.b = b.data();
    c.c = out.data();
    c.bias = c0.bias ? bias.data() : nullptr;
    kernels::gemm(c);
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      const auto s = Clock::now();
      kernels::gemm(c);
      t.push_back(ms_since(s));
    }
    const double m = median(t);
    total += m;
    const std::string key = detail::cat(c.batch, "x", c.m, "x", c.n, "x", c.k, c.trans_a ? " tA" : "", c.trans_b ? " tB" : "",
                                        c.accumulate ? " +=" : "", c0.bias ? " +bias" : "");
    by_shape[key].first += 1;
    by_shape[key].second += m;
  }
  if (shapes)
    for (const auto& [k, v] : by_shape) (*shapes)[k] = {{"calls", v.first}, {"ms", v.second}};
  return total;
}
}  // namespace

int cmd_bench(int argc, char** argv) {
  cxxopts::Options opts("softlab bench", "Measure a config's model on random inputs (no data set needed)");
  add_config_options(opts);
  opts.add_options()("mode", "train or infer", cxxopts::value<std::string>()->default_value("train"))(
      "steps", "timed steps (train) or batches (infer)", cxxopts::value<int>()->default_value("20"))(
      "warmup", "untimed steps first", cxxopts::value<int>()->default_value("3"))(
      "threads", "threads (0 = physical cores)", cxxopts::value<int>()->default_value("0"))(
      "json", "print the result as JSON only")("h,help", "show this help");
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  Config cfg = config_from_args(r, "bench");
  const std::string mode = r["mode"].as<std::string>();
  SOFTLAB_CHECK(mode == "train" || mode == "infer", "--mode: expected train or infer, got '", mode, "'");
  const int steps = r["steps"].as<int>(), warmup = r["warmup"].as<int>();
  SOFTLAB_CHECK(steps > 0 && warmup >= 0, "--steps must be > 0 and --warmup >= 0");
  set_num_threads(r["threads"].as<int>());
  const PrecisionGuard precision(cfg.train.precision);
  const int64_t classes = cfg.model.num_classes > 0 ? cfg.model.num_classes
                          : cfg.data.dataset == "cifar100"  ? 100
                          : is_synthetic(cfg.data.dataset)  ? synthetic_classes(synthetic_options(cfg))
                                                            : 10;
  auto model = build_model(cfg, classes, 50000);
  json out = {{"config", cfg.name}, {"mode", mode}, {"threads", num_threads()},
              {"precision", precision_name(cfg.train.precision)}, {"openmp_wait", openmp_wait_description()},
              {"params", model->num_parameters()}, {"build", build_info()}};
  std::ifstream la("/proc/loadavg");
  std::string load_before;
  std::getline(la, load_before);
  out["loadavg_before"] = load_before;

  if (mode == "train") {
    const int64_t B = cfg.train.batch_size;
    Inputs in = random_inputs(cfg, B, classes, 1);
    const auto params = model->parameters();
    auto opt = make_optimizer(cfg.train.optimizer, params);
    model->train();
    auto step = [&] {
      HeadOutput o = model->forward(in.images, in.labels);
      o.loss.backward();
      clip_grad_norm(params, cfg.train.grad_clip);
      opt->step(1e-4);
      opt->zero_grad();
    };
    for (int i = 0; i < warmup; ++i) step();
    std::vector<double> t;
    for (int i = 0; i < steps; ++i) {
      const auto s = Clock::now();
      step();
      t.push_back(ms_since(s));
    }
    std::vector<kernels::GemmArgs> calls;
    kernels::set_gemm_trace(&calls);
    step();
    kernels::set_gemm_trace(nullptr);
    json shapes = json::object();
    const double step_ms = median(t), gemm_ms = gemm_only_ms(calls, 10, &shapes);
    out.update({{"batch_size", B}, {"step_ms", step_ms}, {"images_per_sec", 1000.0 * static_cast<double>(B) / step_ms},
                {"gemm_calls", calls.size()}, {"gemm_ms", gemm_ms}, {"gemm_share", gemm_ms / step_ms},
                {"gemm_ceiling_images_per_sec", 1000.0 * static_cast<double>(B) / gemm_ms}, {"gemm_shapes", shapes}});
  } else {
    NoGradGuard no_grad;
    model->eval();
    Inputs one = random_inputs(cfg, 1, classes, 1), many = random_inputs(cfg, 256, classes, 2);
    for (int i = 0; i < warmup; ++i) model->forward(one.images), model->forward(many.images);
    std::vector<double> t1, t256;
    for (int i = 0; i < std::max(steps, 50); ++i) {
      const auto s = Clock::now();
      model->forward(one.images);
      t1.push_back(ms_since(s));
    }
    for (int i = 0; i < steps; ++i) {
      const auto s = Clock::now();
      model->forward(many.images);
      t256.push_back(ms_since(s));
    }
    out.update({{"batch1_ms", median(t1)}, {"batch256_ms", median(t256)},
                {"batch256_images_per_sec", 256000.0 / median(t256)}});
  }
  std::ifstream la2("/proc/loadavg");
  std::string load_after;
  std::getline(la2, load_after);
  out["loadavg_after"] = load_after;
  if (r.count("json")) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  if (mode == "train")
    std::cout << detail::cat(cfg.name, ": train step ", out["step_ms"].get<double>(), " ms (batch ", cfg.train.batch_size,
                             ") = ", out["images_per_sec"].get<double>(), " images/s; GEMM-only ",
                             out["gemm_ms"].get<double>(), " ms in ", out["gemm_calls"].get<int64_t>(), " products = ",
                             100.0 * out["gemm_share"].get<double>(), "% of the step (ceiling ",
                             out["gemm_ceiling_images_per_sec"].get<double>(), " images/s)\n");
  else
    std::cout << detail::cat(cfg.name, ": inference batch 1: ", out["batch1_ms"].get<double>(), " ms/image; batch 256: ",
                             out["batch256_images_per_sec"].get<double>(), " images/s\n");
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace softlab::cli
