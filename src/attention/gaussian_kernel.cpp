// The Gaussian kernel matrix kappa(a, b) = exp(-||a_i - b_j||^2 / 2), forward and
// backward side by side (see gaussian_kernel.hpp). Parallel over the batch elements
// (batch x head): each thread owns whole [N, M] blocks of the output and whole [N, D] /
// [M, D] blocks of the gradients, so results do not depend on the thread count.
#include "attention/gaussian_kernel.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {

struct KernelDims {
  int64_t batch = 1, N = 0, M = 0, D = 0;
};

KernelDims kernel_dims(const Tensor& a, const Tensor& b) {
  SOFTLAB_CHECK(a.defined() && b.defined(), "gaussian_kernel: undefined argument");
  SOFTLAB_CHECK(a.rank() >= 2 && a.rank() == b.rank(), "gaussian_kernel: a and b must be [..., N, D] and [..., M, D] ",
                "with the same leading axes, got a ", a.shape(), " and b ", b.shape());
  KernelDims k;
  for (int64_t i = 0; i + 2 < a.rank(); ++i) {
    SOFTLAB_CHECK(a.shape()[i] == b.shape()[i], "gaussian_kernel: leading axes differ: a ", a.shape(), ", b ",
                  b.shape());
    k.batch *= a.shape()[i];
  }
  SOFTLAB_CHECK(a.shape()[-1] == b.shape()[-1], "gaussian_kernel: feature sizes differ: a ", a.shape(), ", b ",
                b.shape());
  k.N = a.shape()[-2];
  k.M = b.shape()[-2];
  k.D = a.shape()[-1];
  return k;
}

// ---- forward: K_ij = exp(-max(sum_c (a_ic - b_jc)^2, 0) / 2) -------------------------------
void kernel_forward(const KernelDims& k, const float* pa, const float* pb, float* pk) {
  const int64_t N = k.N, M = k.M, D = k.D;
  parallel_for(0, k.batch, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* A = pa + t * N * D;
      const float* B = pb + t * M * D;
      float* K = pk + t * N * M;
      for (int64_t i = 0; i < N; ++i) {
        const float* ai = A + i * D;
        for (int64_t j = 0; j < M; ++j) {
          const float* bj = B + j * D;
          float d2 = 0.0f;
#pragma omp simd reduction(+ : d2)
          for (int64_t c = 0; c < D; ++c) {
            const float diff = ai[c] - bj[c];
            d2 += diff * diff;
          }
          K[i * M + j] = std::exp(-0.5f * std::max(d2, 0.0f));
        }
      }
    }
  });
}

// ---- backward: w_ij = G_ij K_ij, da_i = sum_j w_ij (b_j - a_i), db_j = -sum_i w_ij (b_j - a_i)
// The difference b_j - a_i is formed per element (as in the forward), not as
// sum_j w_ij b_j - (sum_j w_ij) a_i, which cancels when a and b are large and close.
void kernel_backward(const KernelDims& k, const float* pa, const float* pb, const float* pk, const float* pg,
                     float* pda, float* pdb) {
  const int64_t N = k.N, M = k.M, D = k.D;
  parallel_for(0, k.batch, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* A = pa + t * N * D;
      const float* B = pb + t * M * D;
      const float* K = pk + t * N * M;
      const float* G = pg + t * N * M;
      float* dA = pda ? pda + t * N * D : nullptr;
      float* dB = pdb ? pdb + t * M * D : nullptr;
      if (dA) std::fill(dA, dA + N * D, 0.0f);
      if (dB) std::fill(dB, dB + M * D, 0.0f);
      for (int64_t i = 0; i < N; ++i) {
        const float* ai = A + i * D;
        for (int64_t j = 0; j < M; ++j) {
          const float w = G[i * M + j] * K[i * M + j];
          if (w == 0.0f) continue;  // exact: the pair contributes nothing
          const float* bj = B + j * D;
          if (dA) {
            float* dai = dA + i * D;
#pragma omp simd
            for (int64_t c = 0; c < D; ++c) dai[c] += w * (bj[c] - ai[c]);
          }
          if (dB) {
            float* dbj = dB + j * D;
#pragma omp simd
            for (int64_t c = 0; c < D; ++c) dbj[c] -= w * (bj[c] - ai[c]);
          }
        }
      }
    }
  });
}

struct GaussianKernelNode final : Node {
  Saved a, b, k;  // inputs and the output kappa
  KernelDims dims;
  const char* name() const override { return "gaussian_kernel"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& A = a.get();
    const Tensor& B = b.get();
    const Tensor& K = k.get();
    Tensor da, db;
    if (inputs[0]) da = empty(A.shape());
    if (inputs[1]) db = empty(B.shape());
    kernel_backward(dims, A.data(), B.data(), K.data(), g.data(), da.defined() ? da.mutable_data() : nullptr,
                    db.defined() ? db.mutable_data() : nullptr);
    return {da, db};
  }
};

}  // namespace

Tensor gaussian_kernel(const Tensor& a, const Tensor& b) {
  const KernelDims dims = kernel_dims(a, b);
  std::vector<int64_t> od(a.shape().dims().begin(), a.shape().dims().end() - 1);
  od.push_back(dims.M);
  Tensor out = empty(Shape(od));
  kernel_forward(dims, a.data(), b.data(), out.mutable_data());
  if (needs_grad({&a, &b})) {
    auto node = std::make_shared<GaussianKernelNode>();
    node->a = Saved(a);
    node->b = Saved(b);
    node->k = Saved(out);
    node->dims = dims;
    attach(out, node, {&a, &b});
  }
  return out;
}

}  // namespace softlab
