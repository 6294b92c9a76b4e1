// softmax, log_softmax and layer_norm (last axis) at a small ViT's shapes, batch 128 images.
// Names: <op>/<rows>x<cols>/<fwd|fwd_bwd>. bytes_per_second counts the compulsory traffic
// of one pass over each array, 4 bytes per float:
//   forward: read x, write y (2 arrays); forward + backward: forward, then read y (or x)
//   and the upstream gradient and write dx (5 arrays). Parameters (gamma, beta) are negligible.
// copy/<rows>x<cols> is std::memcpy of x (2 arrays, one thread) as a bandwidth yardstick.
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "softlab/autograd.hpp"
#include "softlab/ops.hpp"

namespace {
using softlab::Shape;
using softlab::Tensor;
using softlab_bench::rand_tensor;

std::string dims(int64_t r, int64_t c) { return std::to_string(r) + "x" + std::to_string(c); }

void reg(const std::string& name, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), fn)
      ->UseRealTime()
      ->ComputeStatistics("min", softlab_bench::min_of);
}

void set_bytes(benchmark::State& st, int64_t rows, int64_t cols, int arrays) {
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * rows * cols * 4 * arrays);
  st.counters["bytes_per_iter"] = static_cast<double>(rows * cols * 4 * arrays);  // constant
}

template <Tensor (*Op)(const Tensor&)>
void register_softmax(const std::string& op, int64_t rows, int64_t cols) {
  auto x = std::make_shared<Tensor>(rand_tensor(Shape{rows, cols}, 1));
  auto gy = std::make_shared<Tensor>(rand_tensor(Shape{rows, cols}, 2));
  reg(op + "/" + dims(rows, cols) + "/fwd", [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    for (auto _ : st) {
      Tensor y = Op(*x);
      benchmark::DoNotOptimize(y.data());
    }
    set_bytes(st, rows, cols, 2);
  });
  reg(op + "/" + dims(rows, cols) + "/fwd_bwd", [=](benchmark::State& st) {
    Tensor xx = x->detach();
    xx.set_requires_grad(true);
    for (auto _ : st) {
      xx.zero_grad();
      Tensor y = Op(xx);
      y.backward(*gy);
      benchmark::DoNotOptimize(xx.grad().data());
    }
    set_bytes(st, rows, cols, 5);
  });
}

void register_layer_norm(int64_t rows, int64_t cols) {
  auto x = std::make_shared<Tensor>(rand_tensor(Shape{rows, cols}, 3));
  auto gamma = std::make_shared<Tensor>(rand_tensor(Shape{cols}, 4));
  auto beta = std::make_shared<Tensor>(rand_tensor(Shape{cols}, 5));
  auto gy = std::make_shared<Tensor>(rand_tensor(Shape{rows, cols}, 6));
  reg("layer_norm/" + dims(rows, cols) + "/fwd", [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    for (auto _ : st) {
      Tensor y = softlab::layer_norm(*x, *gamma, *beta);
      benchmark::DoNotOptimize(y.data());
    }
    set_bytes(st, rows, cols, 2);
  });
  reg("layer_norm/" + dims(rows, cols) + "/fwd_bwd", [=](benchmark::State& st) {
    Tensor xx = x->detach(), gg = gamma->detach(), bb = beta->detach();
    xx.set_requires_grad(true);
    gg.set_requires_grad(true);
    bb.set_requires_grad(true);
    for (auto _ : st) {
      xx.zero_grad();
      gg.zero_grad();
      bb.zero_grad();
      Tensor y = softlab::layer_norm(xx, gg, bb);
      y.backward(*gy);
      benchmark::DoNotOptimize(xx.grad().data());
      benchmark::DoNotOptimize(gg.grad().data());
    }
    set_bytes(st, rows, cols, 5);
  });
}

void register_copy(int64_t rows, int64_t cols) {
  static std::set<std::string> done;
  if (!done.insert(dims(rows, cols)).second) return;
  auto src = std::make_shared<std::vector<float>>(static_cast<size_t>(rows * cols), 1.0f);
  auto dst = std::make_shared<std::vector<float>>(static_cast<size_t>(rows * cols));
  reg("copy/" + dims(rows, cols), [=](benchmark::State& st) {
    for (auto _ : st) {
      std::memcpy(dst->data(), src->data(), src->size() * sizeof(float));
      benchmark::DoNotOptimize(dst->data());
    }
    set_bytes(st, rows, cols, 2);
  });
}

void register_all() {
  constexpr int64_t kImages = 128;
  // Attention scores: one row per (image, head, query token), one column per key token.
  const int64_t mnist_scores = kImages * 4 * 17, cifar_scores = kImages * 3 * 65;
  const int64_t mnist_tokens = kImages * 17, cifar_tokens = kImages * 65;
  for (auto [r, c] : {std::pair<int64_t, int64_t>{mnist_scores, 17}, {cifar_scores, 65}, {cifar_tokens, 192}}) {
    register_softmax<softlab::softmax>("softmax", r, c);
    register_softmax<softlab::log_softmax>("log_softmax", r, c);
    register_copy(r, c);
  }
  for (auto [r, c] : {std::pair<int64_t, int64_t>{mnist_tokens, 64}, {cifar_tokens, 192}}) {
    register_layer_norm(r, c);
    register_copy(r, c);
  }
}
}  // namespace

SOFTLAB_BENCH_MAIN()
