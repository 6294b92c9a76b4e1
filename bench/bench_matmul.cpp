// Matrix products at the shapes a small ViT runs (batch 128 images), three ways side by side:
//   op_*       the public op layer (softlab::linear / softlab::matmul), forward only, no grad
//   kernels_*  softlab::kernels::gemm: the cached oneDNN matmul primitive, no op layer
//   sgemm_*    raw dnnl_sgemm (row-major), looped over the batch for batched products
// The suffix names the operand layout: nt = B stored [N, K] (x W^T, as linear's weight),
// nn = B stored [K, N], tn = A stored [K, M] (weight gradient g^T x).
// Names: matmul/<shape>/<variant>; shapes are M x K x N (x batch).
// GFLOPS counter = 2 M N K batch per iteration (x3 for forward + backward).
//
// onednn_gemm_* is a oneDNN matmul primitive pinned (next_impl) to its "gemm:" implementation,
// the one built on the same GEMM as dnnl_sgemm, instead of the one oneDNN picks first
// (brg:avx512_core on this machine): it shows what the primitive would give with that choice.
//
// matmul/<shape>/paired_<op variant> runs the op, kernels and sgemm variants of one layout
// back to back in every iteration (rotating their order) and reports the median over the
// iterations of the per-iteration time ratios op/sgemm and op/kernels: outside load on a
// shared machine then hits all three alike, so the ratio is far steadier than a ratio of
// two separately timed benchmarks.
#include <oneapi/dnnl/dnnl.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_common.hpp"
#include "ops/gemm.hpp"
#include "softlab/autograd.hpp"
#include "softlab/ops.hpp"

namespace {
using softlab::Shape;
using softlab::Tensor;
using softlab_bench::rand_tensor;
using Fn = std::function<void()>;

void set_flops(benchmark::State& st, double flops) {
  st.counters["GFLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
  st.counters["flop_per_iter"] = flops;  // constant: lets bench/summarize.py rate the min time
}

benchmark::internal::Benchmark* reg(const std::string& shape, const std::string& variant,
                                    std::function<void(benchmark::State&)> fn) {
  return benchmark::RegisterBenchmark(("matmul/" + shape + "/" + variant).c_str(), fn)
      ->UseRealTime()
      ->ComputeStatistics("min", softlab_bench::min_of);
}

// One variant: fn is one product (ops run with grad mode off).
void reg_variant(const std::string& shape, const std::string& variant, double flops, Fn fn) {
  reg(shape, variant, [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    for (auto _ : st) fn();
    set_flops(st, flops);
  });
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

// The op, kernels (may be empty) and sgemm variants of one layout, timed back to back.
void reg_paired(const std::string& shape, const std::string& op_name, Fn op, Fn kernels, Fn sgemm) {
  reg(shape, "paired_" + op_name, [=](benchmark::State& st) {
    softlab::NoGradGuard ng;
    std::vector<Fn> fns{op, sgemm};
    if (kernels) fns.push_back(kernels);
    std::vector<double> t(fns.size());
    std::vector<double> op_sgemm, op_kernels;
    int64_t it = 0;
    for (auto _ : st) {
      for (size_t j = 0; j < fns.size(); ++j) {
        const size_t f = (j + static_cast<size_t>(it)) % fns.size();  // rotate the order
        const auto t0 = std::chrono::steady_clock::now();
        fns[f]();
        t[f] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      op_sgemm.push_back(t[0] / t[1]);
      if (kernels) op_kernels.push_back(t[0] / t[2]);
      ++it;
    }
    st.counters["op_over_sgemm"] = median(op_sgemm);
    if (kernels) st.counters["op_over_kernels"] = median(op_kernels);
  })->MinTime(0.3);
}

void sgemm_or_die(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float* C, int64_t ldc) {
  if (dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc) != dnnl_success) std::abort();
}

// A oneDNN matmul primitive on fixed buffers, pinned to the first implementation whose name
// starts with `prefix`; an empty function if there is none.
Fn pinned_primitive(const softlab::kernels::GemmArgs& g, const std::string& prefix) {
  using dims = dnnl::memory::dims;
  using dt = dnnl::memory::data_type;
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  static dnnl::stream stream(engine);
  const int64_t B = g.batch, M = g.m, N = g.n, K = g.k, bb = g.b_shared ? 1 : B;
  const dnnl::memory::desc a(dims{B, M, K}, dt::f32, g.trans_a ? dims{M * K, 1, M} : dims{M * K, K, 1});
  const dnnl::memory::desc b(dims{bb, K, N}, dt::f32, g.trans_b ? dims{N * K, 1, K} : dims{N * K, N, 1});
  const dnnl::memory::desc c(dims{B, M, N}, dt::f32, dims{M * N, N, 1});
  // The operation descriptor must outlive the iterator: oneDNN 2.6's next_impl() reads it
  // again (with a temporary it fails, or finds nothing, once the stack slot is reused).
  const dnnl::matmul::desc op(a, b, c);
  dnnl::matmul::primitive_desc pd(op, engine);
  while (std::string(pd.impl_info_str()).rfind(prefix, 0) != 0)
    if (!pd.next_impl()) return {};
  auto prim = std::make_shared<dnnl::matmul>(pd);
  auto args = std::make_shared<std::unordered_map<int, dnnl::memory>>(std::unordered_map<int, dnnl::memory>{
      {DNNL_ARG_SRC, dnnl::memory(a, engine, const_cast<float*>(g.a))},
      {DNNL_ARG_WEIGHTS, dnnl::memory(b, engine, const_cast<float*>(g.b))},
      {DNNL_ARG_DST, dnnl::memory(c, engine, g.c)}});
  float* out = g.c;
  return [prim, args, out] {
    prim->execute(stream, *args);
    stream.wait();
    benchmark::DoNotOptimize(out);
  };
}

void reg_pinned(const std::string& shape, const std::string& variant, double flops,
                const softlab::kernels::GemmArgs& g) {
  if (Fn f = pinned_primitive(g, "gemm:")) reg_variant(shape, variant, flops, f);
}

// ---- 2-D products of a linear layer: [M, K] x W -> [M, N] ---------------------------------
void register_linear(const std::string& name, int64_t M, int64_t K, int64_t N) {
  const double flops = 2.0 * M * N * K;
  auto x = std::make_shared<Tensor>(rand_tensor(Shape{M, K}, 1));
  auto w_nk = std::make_shared<Tensor>(rand_tensor(Shape{N, K}, 2));  // linear's weight [out, in]
  auto b_kn = std::make_shared<Tensor>(rand_tensor(Shape{K, N}, 3));  // matmul's b [K, N]
  auto bias = std::make_shared<Tensor>(rand_tensor(Shape{N}, 4));
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(M * N));

  const Fn op_linear = [=] {
    Tensor y = softlab::linear(*x, *w_nk);
    benchmark::DoNotOptimize(y.data());
  };
  const Fn op_linear_bias = [=] {
    Tensor y = softlab::linear(*x, *w_nk, *bias);
    benchmark::DoNotOptimize(y.data());
  };
  const Fn op_matmul = [=] {
    Tensor y = softlab::matmul(*x, *b_kn);
    benchmark::DoNotOptimize(y.data());
  };
  softlab::kernels::GemmArgs gnt;  // what linear passes to the kernel
  gnt.m = M, gnt.n = N, gnt.k = K, gnt.trans_b = true, gnt.b_shared = true;
  gnt.a = x->data(), gnt.b = w_nk->data(), gnt.c = out->data();
  softlab::kernels::GemmArgs gnn = gnt;  // what matmul passes (a 2-D b is shared)
  gnn.trans_b = false, gnn.b = b_kn->data();
  const Fn kernels_nt = [=] {
    softlab::kernels::gemm(gnt);
    benchmark::DoNotOptimize(out->data());
  };
  const Fn kernels_nn = [=] {
    softlab::kernels::gemm(gnn);
    benchmark::DoNotOptimize(out->data());
  };
  const Fn sgemm_nt = [=] {
    sgemm_or_die('N', 'T', M, N, K, x->data(), K, w_nk->data(), K, out->data(), N);
    benchmark::DoNotOptimize(out->data());
  };
  const Fn sgemm_nn = [=] {
    sgemm_or_die('N', 'N', M, N, K, x->data(), K, b_kn->data(), N, out->data(), N);
    benchmark::DoNotOptimize(out->data());
  };
  reg_variant(name, "op_linear_nt", flops, op_linear);
  reg_variant(name, "op_linear_nt_bias", flops, op_linear_bias);
  reg_variant(name, "op_matmul_nn", flops, op_matmul);
  reg_variant(name, "kernels_nt", flops, kernels_nt);
  reg_variant(name, "kernels_nn", flops, kernels_nn);
  reg_variant(name, "sgemm_nt", flops, sgemm_nt);
  reg_variant(name, "sgemm_nn", flops, sgemm_nn);
  reg_pinned(name, "onednn_gemm_nt", flops, gnt);
  reg_pinned(name, "onednn_gemm_nn", flops, gnn);
  reg_paired(name, "op_linear_nt", op_linear, kernels_nt, sgemm_nt);
  reg_paired(name, "op_matmul_nn", op_matmul, kernels_nn, sgemm_nn);
}

// ---- weight gradient dW = g^T x: g [R, N], x [R, K] -> [N, K] (M = N_out, K = R) ----------
void register_weight_grad(const std::string& name, int64_t rows, int64_t out_f, int64_t in_f) {
  const int64_t M = out_f, N = in_f, K = rows;
  const double flops = 2.0 * M * N * K;
  auto g = std::make_shared<Tensor>(rand_tensor(Shape{rows, out_f}, 5));
  auto x = std::make_shared<Tensor>(rand_tensor(Shape{rows, in_f}, 6));
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(M * N));
  const Fn op = [=] {
    Tensor y = softlab::matmul(*g, *x, /*trans_a=*/true, false);
    benchmark::DoNotOptimize(y.data());
  };
  softlab::kernels::GemmArgs a;
  a.m = M, a.n = N, a.k = K, a.trans_a = true, a.b_shared = true;
  a.a = g->data(), a.b = x->data(), a.c = out->data();
  const Fn kernels = [=] {
    softlab::kernels::gemm(a);
    benchmark::DoNotOptimize(out->data());
  };
  const Fn sgemm = [=] {
    sgemm_or_die('T', 'N', M, N, K, g->data(), M, x->data(), N, out->data(), N);
    benchmark::DoNotOptimize(out->data());
  };
  reg_variant(name, "op_matmul_tn", flops, op);
  reg_variant(name, "kernels_tn", flops, kernels);
  reg_variant(name, "sgemm_tn", flops, sgemm);
  reg_pinned(name, "onednn_gemm_tn", flops, a);
  reg_paired(name, "op_matmul_tn", op, kernels, sgemm);
}

// ---- batched per-head products: [B, M, K] x [B, K, N] (or [B, N, K] with trans_b) ---------
void register_batched(const std::string& name, int64_t B, int64_t M, int64_t K, int64_t N, bool trans_b) {
  const double flops = 2.0 * M * N * K * B;
  auto a = std::make_shared<Tensor>(rand_tensor(Shape{B, M, K}, 7));
  auto b = std::make_shared<Tensor>(rand_tensor(trans_b ? Shape{B, N, K} : Shape{B, K, N}, 8));
  auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(B * M * N));
  const std::string lay = trans_b ? "nt" : "nn";
  const Fn op = [=] {
    Tensor y = softlab::matmul(*a, *b, false, trans_b);
    benchmark::DoNotOptimize(y.data());
  };
  softlab::kernels::GemmArgs g;
  g.batch = B, g.m = M, g.n = N, g.k = K, g.trans_b = trans_b;
  g.a = a->data(), g.b = b->data(), g.c = out->data();
  const Fn kernels = [=] {
    softlab::kernels::gemm(g);
    benchmark::DoNotOptimize(out->data());
  };
  const Fn sgemm = [=] {
    const float* pa = a->data();
    const float* pb = b->data();
    float* pc = out->data();
    for (int64_t p = 0; p < B; ++p)
      sgemm_or_die('N', trans_b ? 'T' : 'N', M, N, K, pa + p * M * K, K, pb + p * K * N, trans_b ? K : N,
                   pc + p * M * N, N);
    benchmark::DoNotOptimize(pc);
  };
  reg_variant(name, "op_matmul_" + lay, flops, op);
  reg_variant(name, "kernels_" + lay, flops, kernels);
  reg_variant(name, "sgemm_" + lay, flops, sgemm);
  reg_pinned(name, "onednn_gemm_" + lay, flops, g);
  reg_paired(name, "op_matmul_" + lay, op, kernels, sgemm);
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
  reg_variant(name, "sgemm_fwd_bwd", flops, [=] {
    sgemm_or_die('N', 'T', M, N, K, x->data(), K, w->data(), K, y->data(), N);
    sgemm_or_die('N', 'N', M, K, N, gy->data(), N, w->data(), K, dx->data(), K);
    sgemm_or_die('T', 'N', N, K, M, gy->data(), N, x->data(), K, dw->data(), K);
    benchmark::DoNotOptimize(dw->data());
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
