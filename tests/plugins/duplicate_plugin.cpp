// A plugin that registers a name softlab already has: loading it must fail with a clear
// error (test_plugins.cpp).
#include <softlab/plugin.hpp>
#include <softlab/row_attention.hpp>

namespace {
struct Uniform final : softlab::RowMap {
  void forward(const float*, float* p, int64_t n) const override {
    for (int64_t j = 0; j < n; ++j) p[j] = 1.0f / static_cast<float>(n);
  }
  void backward(const float*, const float*, const float*, float, float* dx, int64_t n) const override {
    for (int64_t j = 0; j < n; ++j) dx[j] = 0.0f;
  }
};
}  // namespace

SOFTLAB_PLUGIN() {
  softlab::AttentionEntry e;
  e.name = "softmax";
  e.help = "a second softmax";
  e.schema = {softlab::attention_scale_param(), softlab::attention_causal_param()};
  e.caps = {.causal = true};
  e.factory = [](const softlab::json& p, const softlab::AttentionContext&) {
    return softlab::make_row_attention("uniform", softlab::attention_scale(p), p["causal"].get<bool>(),
                                       std::make_shared<Uniform>());
  };
  softlab::register_attention(e);
}
