// Data parallelism under an MPI job (train/data_parallel.hpp).
#include "train/data_parallel.hpp"

#include <cstdlib>

#include "softlab/distributed.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"
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
  for (const auto& [n, t] : r.st->model->state())
    weights = fnv1a(t.data(), sizeof(float) * static_cast<size_t>(t.numel()), weights);
  // In the order a difference is named: the first that differs explains the others.
  return json::array({json::array({"config", fnv1a(cfg.dump())}),
                      json::array({"build", fnv1a(version() + " " + build_info())}),
                      json::array({"data", fnv1a(r.st->data_meta.dump())}), json::array({"initial weights", weights})})
      .dump();
}

void check_ranks_agree(const std::string& fingerprint) {
  dist::agree("comparing the ranks' jobs", [&] {
    const auto all = dist::allgather(fingerprint, "comparing the ranks' jobs");
    const json root = json::parse(all[0]);
    std::string bad;
    for (size_t r = 1; r < all.size(); ++r) {
      const json mine = json::parse(all[r]);
      for (size_t k = 0; k < root.size(); ++k)
        if (mine.at(k) != root[k]) {
          bad += cat(bad.empty() ? "" : "; ", "rank ", r, " has another ", root[k][0].get<std::string>());
          break;
        }
    }
    SOFTLAB_CHECK(bad.empty(), "the ranks of this MPI job do not run the same training: ", bad,
                  " than rank 0. Every rank needs the same config and --set values, the same softlab build and the "
                  "same data files");
  });
}

void broadcast_state(TrainRun& r) {
  if (!dist::active()) return;
  broadcast_component(*r.st->model, "broadcasting the weights");
  broadcast_component(*r.st->optimizer, "broadcasting the optimiser state");
  if (r.st->ema) broadcast_component(*r.st->ema, "broadcasting the weight EMA");
  std::string pos = r.st->pos.to_json().dump();
  dist::broadcast(pos, "broadcasting the position");
  r.st->pos = RunPosition::from_json(json::parse(pos));
}

void share_cores_between_ranks(TrainRun& r) {
  if (!dist::active() || r.cfg.train.threads != 0 || std::getenv("OMP_NUM_THREADS")) return;
  const int sharing = dist::ranks_sharing_cores();
  if (sharing <= 1) return;
  const int threads = std::max(1, num_threads() / sharing);
  r.progress.line(cat(sharing, " ranks share this machine's cores: ", threads, threads == 1 ? " thread" : " threads",
                      " each (--threads sets the count)"));
  set_num_threads(threads);
}

Batch shard_batch(const Batch& b, int rank, int size) {
  const int64_t n = b.images.shape()[0];
  const int64_t lo = rank * n / size, hi = (rank + 1) * n / size;
  Batch out;  // the tensors are views of the global batch's rows, not copies
  out.images = slice(b.images, 0, lo, hi);
  if (b.targets.defined()) out.targets = slice(b.targets, 0, lo, hi);
  const size_t per = n ? b.labels.size() / static_cast<size_t>(n) : 0;
  out.labels.assign(b.labels.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(lo) * per),
                    b.labels.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(hi) * per));
  out.index = b.index;
  return out;
}

}  // namespace softlab::detail
