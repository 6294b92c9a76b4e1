// Matrix products at the shapes a small ViT runs (batch 128 images), three ways side by side:
//   op_*       the public op layer (softlab::linear / softlab::matmul), forward only, no grad
//   kernels_*  softlab::kernels::gemm: the cached oneDNN matmul primitive, no op layer
//   sgemm_*    raw dnnl_sgemm (row-major), looped over the batch for batched products
// The suffix names the operand layout: nt = B stored [N, K] (x W^T, as linear's weight),
// nn = B stored [K, N], tn = A stored [K, M] (weight gradient g^T x).
// Names: matmul/<shape>/<variant>; shapes are M x K x N (x batch).
// GFLOPS counter = 2 M N K batch per iteration (x3 for forward + backward).
#include <oneapi/dnnl/dnnl.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "ops/gemm.hpp"
#include "softlab/autograd.hpp"
#include "softlab/ops.hpp"

namespace {
using softlab::Shape;
using softlab::Tensor;
using softlab_bench::rand_tensor;

void set_flops(benchmark::State& st, double flops) {
  st.counters["GFLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
  st.counters["flop_per_iter"] = flops;  // constant: lets bench/summarize.py rate the min time
}

void reg(const std::string& shape, const std::string& variant, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(("matmul/" + shape + "/" + variant).c_str(), fn)
      ->UseRealTime()
      ->ComputeStatistics("min", softlab_bench::min_of);
}

void sgemm_or_die(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float* C, int64_t ldc) {
  if (dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc) != dnnl_success) std::abort();
}

// ---- 2-D products of a linear layer: [M, K] x W -> [M, N] ---------------------------------
void register_linear(const std::string& name, int64_t M, int64_t K, int64_t N) {
  const double flops = 2.0 * M * N * K;
  auto x = std::make_shared<Tensor>(rand_tensor(Shape{M, K}, 1));
  auto w_nk = std::make_shared<Tensor>(rand_tensor(Shape{N, K}, 2));  // linear's weight [out, in]
  auto b_kn = std::make_shared<Tensor>(rand_tensor(Shape{K, N}, 3));  // matmul's b [K, N]
  auto bias = std::make_shared<Tensor>(rand_tensor(Shape{N}, 4));
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(M * N));

  reg(name, "op_linear_nt", [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    for (auto _ : st) {
      Tensor y = softlab::linear(*x, *w_nk);
      benchmark::DoNotOptimize(y.data());
    }
    set_flops(st, flops);
  });
  reg(name, "op_linear_nt_bias", [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    for (auto _ : st) {
      Tensor y = softlab::linear(*x, *w_nk, *bias);
      benchmark::DoNotOptimize(y.data());
    }
    set_flops(st, flops);
  });
  reg(name, "op_matmul_nn", [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    for (auto _ : st) {
      Tensor y = softlab::matmul(*x, *b_kn);
      benchmark::DoNotOptimize(y.data());
    }
    set_flops(st, flops);
  });
  reg(name, "kernels_nt", [=](benchmark::State& st) {
    softlab::kernels::GemmArgs g;
    g.m = M, g.n = N, g.k = K, g.trans_b = true, g.b_shared = true;
    g.a = x->data(), g.b = w_nk->data(), g.c = out->data();
    for (auto _ : st) {
      softlab::kernels::gemm(g);
      benchmark::DoNotOptimize(out->data());
    }
    set_flops(st, flops);
  });
  reg(name, "kernels_nn", [=](benchmark::State& st) {
    softlab::kernels::GemmArgs g;
    g.m = M, g.n = N, g.k = K, g.b_shared = true;
    g.a = x->data(), g.b = b_kn->data(), g.c = out->data();
    for (auto _ : st) {
      softlab::kernels::gemm(g);
      benchmark::DoNotOptimize(out->data());
    }
    set_flops(st, flops);
  });
  reg(name, "sgemm_nt", [=](benchmark::State& st) {
    for (auto _ : st) {
      sgemm_or_die('N', 'T', M, N, K, x->data(), K, w_nk->data(), K, out->data(), N);
      benchmark::DoNotOptimize(out->data());
    }
    set_flops(st, flops);
  });
  reg(name, "sgemm_nn", [=](benchmark::State& st) {
    for (auto _ : st) {
      sgemm_or_die('N', 'N', M, N, K, x->data(), K, b_kn->data(), N, out->data(), N);
      benchmark::DoNotOptimize(out->data());
    }
    set_flops(st, flops);
  });
}

// ---- weight gradient dW = g^T x: g [R, N], x [R, K] -> [N, K] (M = N_out, K = R) ----------
void register_weight_grad(const std::string& name, int64_t rows, int64_t out_f, int64_t in_f) {
  const int64_t M = out_f, N = in_f, K = rows;
  const double flops = 2.0 * M * N * K;
  auto g = std::make_shared<Tensor>(rand_tensor(Shape{rows, out_f}, 5));
  auto x = std::make_shared<Tensor>(rand_tensor(Shape{rows, in_f}, 6));
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(M * N));
  reg(name, "op_matmul_tn", [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    for (auto _ : st) {
      Tensor y = softlab::matmul(*g, *x, /*trans_a=*/true, false);
      benchmark::DoNotOptimize(y.data());
    }
    set_flops(st, flops);
  });
  reg(name, "kernels_tn", [=](benchmark::State& st) {
    softlab::kernels::GemmArgs a;
    a.m = M, a.n = N, a.k = K, a.trans_a = true, a.b_shared = true;
    a.a = g->data(), a.b = x->data(), a.c = out->data();
    for (auto _ : st) {
      softlab::kernels::gemm(a);
      benchmark::DoNotOptimize(out->data());
    }
    set_flops(st, flops);
  });
  reg(name, "sgemm_tn", [=](benchmark::State& st) {
    for (auto _ : st) {
      sgemm_or_die('T', 'N', M, N, K, g->data(), M, x->data(), N, out->data(), N);
      benchmark::DoNotOptimize(out->data());
    }
    set_flops(st, flops);
  });
}

// ---- batched per-head products: [B, M, K] x [B, K, N] (or [B, N, K] with trans_b) ---------
void register_batched(const std::string& name, int64_t B, int64_t M, int64_t K, int64_t N, bool trans_b) {
  const double flops = 2.0 * M * N * K * B;
  auto a = std::make_shared<Tensor>(rand_tensor(Shape{B, M, K}, 7));
  auto b = std::make_shared<Tensor>(rand_tensor(trans_b ? Shape{B, N, K} : Shape{B, K, N}, 8));
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(B * M * N));
  const std::string lay = trans_b ? "nt" : "nn";
  reg(name, "op_matmul_" + lay, [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    for (auto _ : st) {
      Tensor y = softlab::matmul(*a, *b, false, trans_b);
      benchmark::DoNotOptimize(y.data());
    }
    set_flops(st, flops);
  });
  reg(name, "kernels_" + lay, [=](benchmark::State& st) {
    softlab::kernels::GemmArgs g;
    g.batch = B, g.m = M, g.n = N, g.k = K, g.trans_b = trans_b;
    g.a = a->data(), g.b = b->data(), g.c = out->data();
    for (auto _ : st) {
      softlab::kernels::gemm(g);
      benchmark::DoNotOptimize(out->data());
    }
    set_flops(st, flops);
  });
  reg(name, "sgemm_" + lay, [=](benchmark::State& st) {
    const float* pa = a->data();
    const float* pb = b->data();
    float* pc = out->data();
    for (auto _ : st) {
      for (int64_t p = 0; p < B; ++p)
        sgemm_or_die('N', trans_b ? 'T' : 'N', M, N, K, pa + p * M * K, K, pb + p * K * N, trans_b ? K : N,
                     pc + p * M * N, N);
      benchmark::DoNotOptimize(pc);
    }
    set_flops(st, flops);
  });
}

// ---- forward + backward of linear (x and weight require grad), for information -----------
void register_linear_fwd_bwd(const std::string& name, int64_t M, int64_t K, int64_t N) {
  const double flops = 3 * 2.0 * M * N * K;
  auto x = std::make_shared<Tensor>(rand_tensor(Shape{M, K}, 9));
  auto w = std::make_shared<Tensor>(rand_tensor(Shape{N, K}, 10));
  auto gy = std::make_shared<Tensor>(rand_tensor(Shape{M, N}, 11));
  reg(name, "op_linear_fwd_bwd", [=](benchmark::State& st) {
    Tensor xx = x->detach(), ww = w->detach();
    xx.set_requires_grad(true);
    ww.set_requires_grad(true);
    for (auto _ : st) {
      xx.zero_grad();
      ww.zero_grad();
      Tensor y = softlab::linear(xx, ww);
      y.backward(*gy);
      benchmark::DoNotOptimize(ww.grad().data());
    }
    set_flops(st, flops);
  });
  // The same three products through dnnl_sgemm: y = x W^T, dx = g W, dW = g^T x.
  auto y = std::make_shared<std::vector<float>>(static_cast<size_t>(M * N));
  auto dx = std::make_shared<std::vector<float>>(static_cast<size_t>(M * K));
  auto dw = std::make_shared<std::vector<float>>(static_cast<size_t>(N * K));
  reg(name, "sgemm_fwd_bwd", [=](benchmark::State& st) {
    for (auto _ : st) {
      sgemm_or_die('N', 'T', M, N, K, x->data(), K, w->data(), K, y->data(), N);
      sgemm_or_die('N', 'N', M, K, N, gy->data(), N, w->data(), K, dx->data(), K);
      sgemm_or_die('T', 'N', N, K, M, gy->data(), N, x->data(), K, dw->data(), K);
      benchmark::DoNotOptimize(dw->data());
    }
    set_flops(st, flops);
  });
}

void register_all() {
  constexpr int64_t kImages = 128;
  // A tiny product: time is almost all fixed per-call cost, so op - kernels - sgemm shows
  // what the op layer and the primitive wrapper add per call, in nanoseconds.
  register_linear("tiny_8x8x8", 8, 8, 8);
  // mnist_tiny: dim 64, 16 patches + cls = 17 tokens, 4 heads of 16, MLP 128.
  {
    const int64_t T = kImages * 17, D = 64, H = 4, Dh = 16, Nt = 17, mlp = 128;
    register_linear("mnist_qkv_2176x64x192", T, D, 3 * D);
    register_linear("mnist_mlp_up_2176x64x128", T, D, mlp);
    register_linear("mnist_mlp_down_2176x128x64", T, mlp, D);
    register_weight_grad("mnist_qkv_dW_192x2176x64", T, 3 * D, D);
    register_batched("mnist_attn_qk_512x17x16x17", kImages * H, Nt, Dh, Nt, /*trans_b=*/true);
    register_batched("mnist_attn_pv_512x17x17x16", kImages * H, Nt, Nt, Dh, /*trans_b=*/false);
    register_linear_fwd_bwd("mnist_qkv_2176x64x192", T, D, 3 * D);
  }
  // cifar_small: dim 192, 64 patches + cls = 65 tokens, 3 heads of 64, MLP 384.
  {
    const int64_t T = kImages * 65, D = 192, H = 3, Dh = 64, Nt = 65, mlp = 384;
    register_linear("cifar_qkv_8320x192x576", T, D, 3 * D);
    register_linear("cifar_mlp_up_8320x192x384", T, D, mlp);
    register_linear("cifar_mlp_down_8320x384x192", T, mlp, D);
    register_batched("cifar_attn_qk_384x65x64x65", kImages * H, Nt, Dh, Nt, /*trans_b=*/true);
    register_batched("cifar_attn_pv_384x65x65x64", kImages * H, Nt, Nt, Dh, /*trans_b=*/false);
  }
}
}  // namespace

SOFTLAB_BENCH_MAIN()
