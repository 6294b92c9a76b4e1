// Classifier heads: forward + backward time of each head's loss from pooled features
// [B, D] at the Fashion-MNIST ViT's shape (B = 128, D = 64, C = 10) and a wider one
// (B = 128, D = 192, C = 100), against "linear_only", the head's linear layer with a
// plain sum as the loss (the part every head shares). docs/heads.md quotes the ratios.
//
//   build-release/bench/bench_heads [--benchmark_filter=fourier]
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "softlab/head.hpp"
#include "softlab/ops.hpp"
#include "softlab/softlab.hpp"

namespace {

using namespace softlab;

void run(benchmark::State& state, const json& cfg) {
  const int64_t batch = state.range(0), dim = state.range(1), classes = state.range(2);
  Generator init(1), gen(2);
  HeadContext ctx;
  ctx.in_dim = dim;
  ctx.num_classes = classes;
  ctx.train_size = 60000;
  ctx.init = &init;
  const bool linear_only = cfg["type"] == "linear_only";
  std::unique_ptr<Head> head = make_head(linear_only ? json{{"type", "softmax"}} : cfg, ctx);
  Tensor h = uniform({batch, dim}, gen, -1.0f, 1.0f);
  h.set_requires_grad(true);
  std::vector<int32_t> labels;
  for (int64_t n = 0; n < batch; ++n) labels.push_back(static_cast<int32_t>(gen.below(static_cast<uint64_t>(classes))));
  auto params = head->parameters();
  for (auto _ : state) {
    Tensor loss = linear_only ? sum(head->forward(h, {}).scores) : head->forward(h, labels).loss;
    loss.backward();
    benchmark::DoNotOptimize(loss.data());
    h.zero_grad();
    for (auto& p : params) p.tensor.zero_grad();
  }
}

void register_all() {
  const std::vector<std::pair<std::string, json>> heads = {
      {"linear_only", {{"type", "linear_only"}}},
      {"softmax", {{"type", "softmax"}}},
      {"svm", {{"type", "svm"}}},
      {"svm_agarap2017", {{"type", "svm"}, {"preset", "agarap2017"}}},
      {"zloss", {{"type", "zloss"}}},
      {"ebv", {{"type", "ebv"}}},
      {"fourier", {{"type", "fourier"}}},
      {"stablemax", {{"type", "stablemax"}}},
      {"cosine", {{"type", "cosine"}}},
  };
  for (const auto& [name, cfg] : heads) {
    auto* b = benchmark::RegisterBenchmark(name.c_str(), [cfg](benchmark::State& st) { run(st, cfg); });
    b->Args({128, 64, 10});
    b->Args({128, 192, 100});
    b->Unit(benchmark::kMicrosecond)->UseRealTime()->ComputeStatistics("min", softlab_bench::min_of);
  }
}

}  // namespace

SOFTLAB_BENCH_MAIN()
