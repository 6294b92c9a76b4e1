// oneDNN matmul with a primitive cache keyed by shape and layout.
#include "ops/gemm.hpp"

#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include <oneapi/dnnl/dnnl.hpp>

#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/precision.hpp"

namespace softlab::kernels {

namespace {
using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

struct Engine {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};
Engine& eng() {
  static Engine e;
  return e;
}

// The thread count is part of the key: a oneDNN primitive fixes its thread count when it is
// created (brgemm matmul keeps nthr from primitive creation), so a primitive created under
// set_num_threads(1) would stay single-threaded after set_num_threads(2), and vice versa.
// The precision is part of it too: a bf16 product is another primitive (bf16 A and B, f32 C).
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, bool, bool, bool, bool, int, Precision>;
// The primitive with its memory objects and argument list, built once per shape. A call
// only points the memory objects at the caller's buffers (under g_mutex, held through
// execution), so no memory object or argument map is created per call.
struct Entry {
  dnnl::matmul prim;
  dnnl::memory a, b, c, bias;
  std::unordered_map<int, dnnl::memory> args;
};
std::mutex g_mutex;
std::map<Key, Entry> g_cache;

Entry make_entry(const GemmArgs& g, Precision p) {
  const int64_t B = g.batch, M = g.m, N = g.n, K = g.k;
  const dt in = p == Precision::bf16 ? dt::bf16 : dt::f32;  // C and the bias stay f32
  // Strides express the transposes, so no operand is ever copied (in bf16 each is rounded
  // into a buffer of the same layout).
  dnnl::memory::desc a(dims{B, M, K}, in,
                       g.trans_a ? dims{M * K, 1, M} : dims{M * K, K, 1});
  const int64_t bb = g.b_shared ? 1 : B;
  dnnl::memory::desc b(dims{bb, K, N}, in,
                       g.trans_b ? dims{N * K, 1, K} : dims{N * K, N, 1});
  dnnl::memory::desc c(dims{B, M, N}, dt::f32, dims{M * N, N, 1});
  dnnl::memory::desc bias;
  if (g.bias) bias = dnnl::memory::desc(dims{1, 1, N}, dt::f32, dims{N, N, 1});
  dnnl::primitive_attr attr;
  if (g.accumulate) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  auto pd = g.bias ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, bias, c), attr, eng().engine)
                   : dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, eng().engine);
  const dnnl::engine& e = eng().engine;
  Entry entry{dnnl::matmul(pd), dnnl::memory(a, e, nullptr), dnnl::memory(b, e, nullptr), dnnl::memory(c, e, nullptr),
              g.bias ? dnnl::memory(bias, e, nullptr) : dnnl::memory(), {}};
  entry.args = {{DNNL_ARG_SRC, entry.a}, {DNNL_ARG_WEIGHTS, entry.b}, {DNNL_ARG_DST, entry.c}};
  if (g.bias) entry.args.emplace(DNNL_ARG_BIAS, entry.bias);
  return entry;
}
}  // namespace

namespace {
std::vector<GemmArgs>* g_trace = nullptr;

// The bf16 copies of A and B for one call (guarded by g_mutex, grown, never shrunk).
std::vector<unsigned short> g_a16, g_b16;

// Rounds n floats to bf16 in parallel: a memory-bound pass, split so both cores stream.
void round_operand(const float* src, std::vector<unsigned short>& dst, int64_t n) {
  if (static_cast<int64_t>(dst.size()) < n) dst.resize(static_cast<size_t>(n));
  unsigned short* d = dst.data();
  parallel_for(0, n, 1 << 15, [&](int64_t b, int64_t e) { to_bf16(src + b, d + b, static_cast<long>(e - b)); });
}
}  // namespace

void set_gemm_trace(std::vector<GemmArgs>* sink) { g_trace = sink; }

void gemm(const GemmArgs& g) {
  if (g_trace) g_trace->push_back(g);
  SOFTLAB_ASSERT(g.batch >= 0 && g.m >= 0 && g.n >= 0 && g.k >= 0, "gemm: negative size");
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  if (g.k == 0) {  // empty sum: C = bias (or unchanged when accumulating)
    for (int64_t i = 0; i < g.batch * g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j)
        if (!g.accumulate) g.c[i * g.n + j] = g.bias ? g.bias[j] : 0.0f;
        else if (g.bias) g.c[i * g.n + j] += g.bias[j];
    return;
  }
  const int threads = num_threads();  // also makes sure the OpenMP thread count is set before oneDNN reads it
  const Precision p = matmul_precision();
  const Key key{g.batch, g.m, g.n, g.k, g.trans_a, g.trans_b, g.b_shared, g.accumulate, g.bias != nullptr, threads, p};
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_cache.find(key);
  if (it == g_cache.end()) it = g_cache.emplace(key, make_entry(g, p)).first;
  const Entry& e = it->second;
  if (p == Precision::bf16) {
    round_operand(g.a, g_a16, g.batch * g.m * g.k);
    round_operand(g.b, g_b16, (g.b_shared ? 1 : g.batch) * g.k * g.n);
    e.a.set_data_handle(g_a16.data());
    e.b.set_data_handle(g_b16.data());
  } else {
    e.a.set_data_handle(const_cast<float*>(g.a));
    e.b.set_data_handle(const_cast<float*>(g.b));
  }
  e.c.set_data_handle(g.c);
  if (g.bias) e.bias.set_data_handle(const_cast<float*>(g.bias));
  auto& E = eng();
  e.prim.execute(E.stream, e.args);
  E.stream.wait();
}

int64_t gemm_cache_size() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return static_cast<int64_t>(g_cache.size());
}

void gemm_reference(const GemmArgs& g) {
  const int64_t M = g.m, N = g.n, K = g.k;
  for (int64_t p = 0; p < g.batch; ++p) {
    const float* A = g.a + p * M * K;
    const float* B = g.b + (g.b_shared ? 0 : p * N * K);
    float* C = g.c + p * M * N;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = g.bias ? g.bias[j] : 0.0;
        for (int64_t l = 0; l < K; ++l) {
          const double av = g.trans_a ? A[l * M + i] : A[i * K + l];
          const double bv = g.trans_b ? B[j * K + l] : B[l * N + j];
          s += av * bv;
        }
        C[i * N + j] = static_cast<float>(g.accumulate ? C[i * N + j] + s : s);
      }
  }
}

}  // namespace softlab::kernels
