// Every registered attention module at growing sequence length: forward (inference,
// NoGradGuard) and forward+backward time, and the peak bytes of tensor storage each
// allocates, for H = 4 and (B = 1, Dh = 32, N = 64 ... 4096; linear and MALA also 16384),
// plus the ViT shapes (docs/attention.md). Each module runs in its default config.
//
//   build-bench/bench/bench_attention [--benchmark_filter=softmax]
//
// "composed_softmax" is the same softmax attention built from primitive ops (matmul,
// scale, softmax, matmul), the path the fused kernel replaced: it materialises the
// B x H x N x N scores in both modes. A module that needs an image grid (caps.needs_grid:
// SOFT) gets one: N = side², no class token, and at N >= 256 a landmark ratio of side/8
// (64 landmarks).
// The first two shapes of each series are the ViTs of configs/ at batch 128.
// "<module>/bf16/..." runs the same call with train.precision = "bf16" (bf16 products,
// f32 accumulation) at the ViT shapes and N = 1024, on CPUs that can (softlab info).
// Counters: peak_MB, the peak of live tensor bytes above what existed before the call
// (outputs, saved tensors, scratch, gradients); N2_MB, one B x H x N x N float tensor.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "softlab/attention.hpp"
#include "softlab/ops.hpp"
#include "softlab/softlab.hpp"

namespace {

using namespace softlab;

constexpr int64_t kH = 4;

bool needs_grid(const std::string& type) {
  const AttentionEntry* e = attention_registry().find(type);
  return e && e->caps.needs_grid;
}

std::unique_ptr<Attention> make(const std::string& type, int64_t n, int64_t dh, Generator& init) {
  AttentionContext ctx;
  ctx.dim = kH * dh;
  ctx.heads = kH;
  ctx.head_dim = dh;
  ctx.init = &init;
  ctx.seq_len = n;
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(n))));
  if (side * side == n) ctx.grid_h = ctx.grid_w = side;
  json cfg = {{"type", type}};
  // A grid module: its default ratio at the ViT shapes; 64 landmarks (8 x 8) in the
  // scaling series, so that its cost grows with N alone.
  const Schema& schema = attention_registry().get(type, "bench").schema;
  const bool has_ratio =
      std::any_of(schema.begin(), schema.end(), [](const ParamSpec& p) { return p.name == "ratio"; });
  if (needs_grid(type) && has_ratio && n >= 256) cfg["ratio"] = side / 8;
  return make_attention(cfg, ctx);
}

Tensor composed_softmax(const Tensor& q, const Tensor& k, const Tensor& v) {
  const auto dh = static_cast<float>(q.shape()[3]);
  return matmul(softmax(scale(matmul(q, k, false, true), 1.0f / std::sqrt(dh))), v);
}

void run(benchmark::State& state, const std::string& type, bool backward, Precision precision) {
  PrecisionGuard guard(precision);
  const int64_t n = state.range(0), batch = state.range(1), dh = state.range(2);
  Generator gen(1);
  std::unique_ptr<Attention> m;
  if (type != "composed_softmax") m = make(type, n, dh, gen);
  const Shape s{batch, kH, n, dh};
  Tensor q = uniform(s, gen, -1.0f, 1.0f), k = uniform(s, gen, -1.0f, 1.0f), v = uniform(s, gen, -1.0f, 1.0f);
  const Tensor dout = uniform(s, gen, -1.0f, 1.0f);
  for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(backward);
  auto step = [&] {
    Tensor o = m ? m->forward(q, k, v) : composed_softmax(q, k, v);
    if (backward) o.backward(dout);
    benchmark::DoNotOptimize(o.data());
    for (Tensor* t : {&q, &k, &v}) t->zero_grad();
    if (m)
      for (auto& p : m->parameters()) p.tensor.zero_grad();
  };
  int64_t peak = 0;
  {
    // One measured call for the memory counter, outside the timing loop.
    std::unique_ptr<NoGradGuard> ng = backward ? nullptr : std::make_unique<NoGradGuard>();
    reset_peak_tensor_memory();
    const int64_t live = tensor_memory().live_bytes;
    step();
    peak = tensor_memory().peak_bytes - live;
  }
  std::unique_ptr<NoGradGuard> ng = backward ? nullptr : std::make_unique<NoGradGuard>();
  for (auto _ : state) step();
  state.counters["peak_MB"] = static_cast<double>(peak) / 1e6;
  state.counters["N2_MB"] = static_cast<double>(batch * kH * n * n) * sizeof(float) / 1e6;
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(batch * n), benchmark::Counter::kIsRate);
}

// The modules whose time is linear in N, which also run at 16k tokens. Their caps do not
// say so; a module added here should keep O(N) time and memory.
bool linear_time(const std::string& type) { return type == "linear" || type == "mala"; }

void register_all() {
  std::vector<std::string> types = {"composed_softmax"};
  for (const auto& name : attention_registry().names()) types.push_back(name);
  for (const auto& t : types)
    for (bool bwd : {false, true}) {
      auto* b = benchmark::RegisterBenchmark((t + (bwd ? "/fwd_bwd" : "/fwd")).c_str(), [t, bwd](benchmark::State& st) {
        run(st, t, bwd, Precision::fp32);
      });
      // Args: N, B, Dh. First the ViT shapes of the configs (Fashion-MNIST: 16 patches +
      // class token, Dh 16; CIFAR-10: 64 patches + class token, Dh 64, with 4 heads instead of 3; batch 128), then the
      // scaling series at B = 1, Dh = 32. A grid module (SOFT) gets a square grid and no
      // class token: it runs at 16 and 64 tokens for the ViT shapes and at the square N of
      // the series.
      const bool grid = needs_grid(t);
      b->Args({grid ? 16 : 17, 128, 16});
      b->Args({grid ? 64 : 65, 128, 64});
      for (int64_t n : {64, 256, 512, 1024, 2048, 4096}) {
        const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(n))));
        if (grid && side * side != n) continue;
        b->Args({n, 1, 32});
      }
      // The linear-complexity kernels also at 16k tokens (their memory stays linear; one
      // B x H x N x N tensor would be 4.3 GB), where the quadratic modules take seconds.
      if (linear_time(t)) b->Args({16384, 1, 32});
      b->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", softlab_bench::min_of);
      if (!cpu_has_bf16() || t == "composed_softmax") continue;
      auto* h = benchmark::RegisterBenchmark((t + (bwd ? "/bf16/fwd_bwd" : "/bf16/fwd")).c_str(),
                                             [t, bwd](benchmark::State& st) { run(st, t, bwd, Precision::bf16); });
      h->Args({grid ? 16 : 17, 128, 16});
      h->Args({grid ? 64 : 65, 128, 64});
      h->Args({1024, 1, 32});  // a square grid for grid modules too
      h->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", softlab_bench::min_of);
    }
}

}  // namespace

SOFTLAB_BENCH_MAIN()
