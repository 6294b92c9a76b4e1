// dist::GradientReducer: the gradients of a step summed across ranks in buckets, each started
// while backward still runs (include/softlab/distributed.hpp).
//
// Buckets hold the parameters in reverse order, since backward finishes the last layers
// first. A bucket starts only after every earlier bucket has, so all ranks issue their
// non-blocking allreduces in the same order, as MPI requires, and the sum of each element
// is formed the same way on every run with the same number of ranks. A gradient is copied
// into its bucket when backward has finished it (BackwardHooks::leaf_done); after each node
// of backward the oldest running bucket is tested, which is what lets MPI move it on.
#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_map>

#include "dist/comm.hpp"
#include "softlab/autograd.hpp"
#include "softlab/distributed.hpp"
#include "softlab/error.hpp"

namespace softlab::dist {

struct GradientReducer::Impl {
  struct Slot {  // one parameter's place in a bucket
    Tensor param;
    int64_t bucket = 0, offset = 0;
    bool ready = false;
  };
  struct Bucket {
    std::vector<float> data;
    int64_t params = 0, ready = 0;
    int handle = -1;  // set once started
    bool done = false;
  };
  std::vector<Slot> slots;  // reverse parameter order
  std::unordered_map<const TensorImpl*, size_t> slot_of;
  std::vector<Bucket> buckets;
  int64_t next_start = 0;  // the first bucket not started yet
  int64_t next_done = 0;   // the first started bucket not known to be done
  std::optional<BackwardHookGuard> guard;

  void copy_in(Slot& s) {
    Bucket& b = buckets[static_cast<size_t>(s.bucket)];
    float* dst = b.data.data() + s.offset;
    const Tensor g = s.param.grad();
    if (g.defined())
      std::memcpy(dst, g.data(), sizeof(float) * static_cast<size_t>(g.numel()));
    else
      std::fill(dst, dst + s.param.numel(), 0.0f);
    s.ready = true;
    ++b.ready;
  }

  void start_ready_buckets() {
    while (next_start < static_cast<int64_t>(buckets.size())) {
      Bucket& b = buckets[static_cast<size_t>(next_start)];
      if (b.ready < b.params) return;
      b.handle = detail::start_sum(b.data.data(), static_cast<int64_t>(b.data.size()));
      ++next_start;
    }
  }

  void progress() {
    while (next_done < next_start) {
      Bucket& b = buckets[static_cast<size_t>(next_done)];
      if (!detail::test(b.handle)) return;
      b.done = true;
      ++next_done;
    }
  }
};

GradientReducer::GradientReducer(std::vector<Tensor> params, int64_t bucket_bytes) : impl_(std::make_unique<Impl>()) {
  SOFTLAB_CHECK(bucket_bytes >= 4, "gradient buckets must hold at least one float, got ", bucket_bytes, " bytes");
  Impl& m = *impl_;
  std::reverse(params.begin(), params.end());
  for (Tensor& p : params) {
    if (m.buckets.empty() || static_cast<int64_t>(m.buckets.back().data.size()) * 4 >= bucket_bytes)
      m.buckets.emplace_back();
    Impl::Bucket& b = m.buckets.back();
    m.slot_of[p.impl().get()] = m.slots.size();
    m.slots.push_back({p, static_cast<int64_t>(m.buckets.size()) - 1, static_cast<int64_t>(b.data.size()), false});
    b.data.resize(b.data.size() + static_cast<size_t>(p.numel()));
    ++b.params;
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::begin() {
  Impl& m = *impl_;
  for (auto& s : m.slots) s.ready = false;
  for (auto& b : m.buckets) {
    b.ready = 0;
    b.handle = -1;
    b.done = false;
  }
  m.next_start = m.next_done = 0;
  BackwardHooks hooks;
  hooks.leaf_done = [&m](TensorImpl& leaf) {
    const auto it = m.slot_of.find(&leaf);
    if (it == m.slot_of.end()) return;
    Impl::Slot& s = m.slots[it->second];
    if (s.ready) return;
    m.copy_in(s);
    m.start_ready_buckets();
  };
  hooks.after_node = [&m] { m.progress(); };
  m.guard.emplace(std::move(hooks));
}

void GradientReducer::finish() {
  Impl& m = *impl_;
  m.guard.reset();
  // Parameters this backward did not reach keep what earlier micro-batches gave them (or
  // count as zeros): every rank sends every bucket.
  for (auto& s : m.slots)
    if (!s.ready) m.copy_in(s);
  m.start_ready_buckets();
  for (auto& b : m.buckets)
    if (!b.done) detail::wait(b.handle, "the gradient allreduce");
  detail::release_all();
  for (auto& s : m.slots) {
    const float* src = m.buckets[static_cast<size_t>(s.bucket)].data.data() + s.offset;
    TensorImpl& p = *s.param.impl();
    if (!p.grad) p.grad = zeros(p.shape).impl();
    std::memcpy(Tensor(p.grad).mutable_data(), src, sizeof(float) * static_cast<size_t>(s.param.numel()));
  }
}

int64_t GradientReducer::buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }

int64_t GradientReducer::bytes() const {
  int64_t n = 0;
  for (const auto& b : impl_->buckets) n += static_cast<int64_t>(b.data.size());
  return 4 * n;
}

}  // namespace softlab::dist
