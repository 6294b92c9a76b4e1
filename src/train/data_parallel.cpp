// Data parallelism under an MPI job (train/data_parallel.hpp).
#include "train/data_parallel.hpp"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "softlab/distributed.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"
#include "softlab/version.hpp"

namespace softlab::detail {

namespace {
// FNV-1a, 64 bits: enough to tell two configs or weight sets apart, not a security hash.
uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}
uint64_t fnv1a(const std::string& s) { return fnv1a(s.data(), s.size()); }

// Every component of state(), cloned, broadcast from rank 0; loaded on the other ranks.
template <class Component>
void broadcast_component(Component& c, const char* what) {
  nn::NamedTensors st;
  for (const auto& [n, t] : c.state()) st.emplace_back(n, t.clone());
  for (auto& [n, t] : st) dist::broadcast(t.mutable_data(), t.numel(), what);
  if (!dist::is_root()) c.load_state(st);
}
}  // namespace

void check_batch_splits(const Config& cfg) {
  const int n = dist::size();
  SOFTLAB_CHECK(cfg.train.batch_size % n == 0, "train.batch_size = ", cfg.train.batch_size,
                " does not split evenly over ", n, " ranks (", cfg.train.batch_size, " / ", n, " leaves ",
                cfg.train.batch_size % n, "): choose a batch size that is a multiple of the number of ranks, so that the "
                "data order stays that of one process");
}

std::string rank_fingerprint(const TrainRun& r) {
  json cfg = r.cfg.resolved;
  if (cfg.contains("train")) cfg["train"].erase("threads");  // may differ from machine to machine
  uint64_t weights = 0xcbf29ce484222325ULL;
  for (const auto& [n, t] : r.model->state()) weights = fnv1a(t.data(), sizeof(float) * static_cast<size_t>(t.numel()), weights);
  return cat("config ", fnv1a(cfg.dump()), "|build ", fnv1a(version() + " " + build_info()), "|data ",
             fnv1a(r.meta_data.dump()), "|initial weights ", weights);
}

void check_ranks_agree(const std::string& fingerprint) {
  dist::agree("comparing the ranks' jobs", [&] {
    const auto all = dist::allgather(fingerprint, "comparing the ranks' jobs");
    std::string bad;
    for (size_t r = 1; r < all.size(); ++r) {
      if (all[r] == all[0]) continue;
      // Name the first component that differs: config, build, data or initial weights.
      std::string what = "the job";
      size_t a = 0;
      while (a < all[0].size()) {
        const size_t e0 = all[0].find('|', a), e1 = all[r].find('|', a);
        const std::string p0 = all[0].substr(a, e0 - a), p1 = all[r].substr(a, e1 - a);
        if (p0 != p1) {
          what = p0.substr(0, p0.rfind(' '));
          break;
        }
        if (e0 == std::string::npos) break;
        a = e0 + 1;
      }
      bad += cat(bad.empty() ? "" : "; ", "rank ", r, " has another ", what);
    }
    SOFTLAB_CHECK(bad.empty(), "the ranks of this MPI job do not run the same training: ", bad,
                  " than rank 0. Every rank needs the same config and --set values, the same softlab build and the "
                  "same data files");
  });
}

void broadcast_state(TrainRun& r) {
  if (!dist::active()) return;
  broadcast_component(*r.model, "broadcasting the weights");
  broadcast_component(*r.optimizer, "broadcasting the optimiser state");
  if (r.ema) broadcast_component(*r.ema, "broadcasting the weight EMA");
  std::string pos = r.pos.as_json().dump();
  dist::broadcast(pos, "broadcasting the position");
  r.pos = Position::parse(json::parse(pos));
  if (r.saved) r.saved = r.pos;
}

void share_cores_between_ranks(TrainRun& r) {
  if (!dist::active() || r.cfg.train.threads != 0 || std::getenv("OMP_NUM_THREADS")) return;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string key = std::string(host) + "|";
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof mask, &mask) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c) key += CPU_ISSET(c, &mask) ? '1' : '0';
  int sharing = 0;
  for (const auto& k : dist::allgather(key, "comparing the ranks' cores")) sharing += k == key;
  if (sharing <= 1) return;
  const int threads = std::max(1, num_threads() / sharing);
  r.progress.line(cat(sharing, " ranks share this machine's cores: ", threads, threads == 1 ? " thread" : " threads",
                      " each (--threads sets the count)"));
  set_num_threads(threads);
}

Batch shard_batch(const Batch& b, int rank, int size) {
  const int64_t n = b.images.shape()[0];
  const int64_t lo = rank * n / size, hi = (rank + 1) * n / size;
  auto rows = [&](const Tensor& t) {
    if (!t.defined()) return Tensor();
    std::vector<int64_t> dims = t.shape().dims();
    const int64_t row = n ? t.numel() / n : 0;
    dims[0] = hi - lo;
    Tensor out = empty(Shape(dims));
    if (hi > lo) std::memcpy(out.mutable_data(), t.data() + lo * row, sizeof(float) * static_cast<size_t>((hi - lo) * row));
    return out;
  };
  Batch out;
  out.images = rows(b.images);
  out.targets = rows(b.targets);
  const size_t per = n ? b.labels.size() / static_cast<size_t>(n) : 0;
  out.labels.assign(b.labels.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(lo) * per),
                    b.labels.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(hi) * per));
  out.index = b.index;
  return out;
}

}  // namespace softlab::detail
