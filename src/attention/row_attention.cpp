// make_row_attention: a user's RowMap in the fused row kernel. The kernel takes its map as a
// template argument (so built-in maps inline); here the argument is a forwarder to the
// virtual functions, one call per row, which costs nothing next to the row's N-wide loops.
#include "softlab/row_attention.hpp"

#include <mutex>
#include <set>

#include "attention/kernels.hpp"
#include "attention/row_kernel.hpp"

namespace softlab {

namespace {
struct VirtualMap {
  std::shared_ptr<const RowMap> map;
  void forward(const float* x, float* p, int64_t n) const { map->forward(x, p, n); }
  void backward(const float* x, const float* p, const float* dp, float d, float* dx, int64_t n) const {
    map->backward(x, p, dp, d, dx, n);
  }
};

// The kernel keeps its op name as a C string for the life of the module; names are few
// (one per registered module), so they are kept for the life of the process.
const char* interned(const std::string& name) {
  static std::mutex m;
  static std::set<std::string> names;
  std::lock_guard<std::mutex> lock(m);
  return names.insert(name).first->c_str();
}
}  // namespace

std::unique_ptr<Attention> make_row_attention(const std::string& name, float scale, bool causal,
                                              std::shared_ptr<const RowMap> map) {
  SOFTLAB_CHECK(map, "make_row_attention(", name, "): no map given");
  SOFTLAB_CHECK(scale >= 0.0f, "make_row_attention(", name, "): scale must be positive, or 0 for Dh^-1/2");
  return attention_kernel::row_map_attention(interned(name), scale, causal, VirtualMap{std::move(map)});
}

ParamSpec attention_scale_param() { return scale_param(); }
ParamSpec attention_causal_param() { return causal_param(); }
float attention_scale(const json& params) { return configured_scale(params); }

}  // namespace softlab
