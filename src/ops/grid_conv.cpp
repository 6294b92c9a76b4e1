// Depthwise k x k convolution over the image grid of a token sequence, the positional term
// that MALA (LePE, per channel) and SOFT (per head) add to the attention output
// (docs/attention.md, "Block extras").
//
// x [B, N, C]: tokens [prefix, prefix + gh*gw) are the grid in row-major order; the others
// (the class token) are not on it and get an output of 0. With p = k/2 and zero padding:
//
//   y[b, t(r, c), ch] = bias[ch] + sum_{i, j < k} w[grp(ch), i, j] x[b, t(r + i - p, c + j - p), ch]
//
// where t(r, c) = prefix + r*gw + c and grp(ch) = ch / (C / G) for a weight [G, k, k]: G = C
// is one kernel per channel, G = heads one per head shared by its C/G channels.
//
// Backward: the same sum read the other way. dx at a grid position gathers g from the
// positions whose window covers it (a correlation with the kernel mirrored), so every
// output element is written by one thread; dw[grp, i, j] = sum_b sum_(r,c) g x(shifted),
// reduced per example first (partials [B, k*k, C]) and then over the batch and the group;
// dbias = sum of g over the batch and the grid. Both directions loop channels innermost,
// contiguous in memory, with the kernel expanded to one tap row per channel [k*k, C].
#include <vector>

#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {

struct GridGeom {
  int64_t B, N, C, G, k, gh, gw, prefix;
};

// The kernel as taps x channels: wexp[t * C + ch] = w[grp(ch) * k*k + t].
std::vector<float> expand_taps(const float* w, const GridGeom& g) {
  const int64_t kk = g.k * g.k, per = g.C / g.G;
  std::vector<float> wexp(static_cast<size_t>(kk * g.C));
  for (int64_t t = 0; t < kk; ++t)
    for (int64_t ch = 0; ch < g.C; ++ch) wexp[static_cast<size_t>(t * g.C + ch)] = w[(ch / per) * kk + t];
  return wexp;
}

// out[t(r, c)] = (bias) + sum over taps (i, j) of wexp[i*k + j] * in[t(r + sign (i - p), c + sign (j - p))]
// for every grid row of every example; prefix rows of out are zeroed. sign = +1 is the
// forward; sign = -1 is the backward's gather for dx (position s receives tap (i, j) from
// the output at s - (i - p, j - p), whose window read s through that tap).
void conv_grid(const float* in, const float* wexp, const float* bias, float* out, const GridGeom& g, int sign) {
  const int64_t C = g.C, p = g.k / 2;
  parallel_for(0, g.B * g.N, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / g.N, tok = row % g.N, pos = tok - g.prefix;
      float* y = out + row * C;
      if (pos < 0 || pos >= g.gh * g.gw) {
        for (int64_t ch = 0; ch < C; ++ch) y[ch] = 0.0f;
        continue;
      }
      const int64_t r = pos / g.gw, c = pos % g.gw;
      for (int64_t ch = 0; ch < C; ++ch) y[ch] = bias ? bias[ch] : 0.0f;
      for (int64_t i = 0; i < g.k; ++i) {
        const int64_t rr = r + sign * (i - p);
        if (rr < 0 || rr >= g.gh) continue;
        for (int64_t j = 0; j < g.k; ++j) {
          const int64_t cc = c + sign * (j - p);
          if (cc < 0 || cc >= g.gw) continue;
          const float* xs = in + (b * g.N + g.prefix + rr * g.gw + cc) * C;
          const float* w = wexp + (i * g.k + j) * C;
          for (int64_t ch = 0; ch < C; ++ch) y[ch] += w[ch] * xs[ch];
        }
      }
    }
  });
}

struct GridConvNode final : Node {
  Saved x, w;
  GridGeom geom;
  bool has_bias = false;
  const char* name() const override { return "grid_depthwise_conv"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const GridGeom& G = geom;
    const Tensor& X = x.get();
    const Tensor& W = w.get();
    const int64_t C = G.C, kk = G.k * G.k, p = G.k / 2, per = G.C / G.G;
    const std::vector<float> wexp = expand_taps(W.data(), G);
    Tensor dx = empty(X.shape());
    conv_grid(g.data(), wexp.data(), nullptr, dx.mutable_data(), G, -1);
    // Prefix tokens get no gradient: they were never read (their rows are zero already).

    // dw per example, taps x channels, then summed over the batch and each group's channels.
    std::vector<float> part(static_cast<size_t>(G.B * kk * C), 0.0f);
    std::vector<float> bpart(static_cast<size_t>(G.B * C), 0.0f);
    const float *pg = g.data(), *px = X.data();
    parallel_for(0, G.B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* pw = part.data() + b * kk * C;
        float* pb = bpart.data() + b * C;
        for (int64_t pos = 0; pos < G.gh * G.gw; ++pos) {
          const int64_t r = pos / G.gw, c = pos % G.gw;
          const float* gr = pg + (b * G.N + G.prefix + pos) * C;
          for (int64_t ch = 0; ch < C; ++ch) pb[ch] += gr[ch];
          for (int64_t i = 0; i < G.k; ++i) {
            const int64_t rr = r + i - p;
            if (rr < 0 || rr >= G.gh) continue;
            for (int64_t j = 0; j < G.k; ++j) {
              const int64_t cc = c + j - p;
              if (cc < 0 || cc >= G.gw) continue;
              const float* xs = px + (b * G.N + G.prefix + rr * G.gw + cc) * C;
              float* acc = pw + (i * G.k + j) * C;
              for (int64_t ch = 0; ch < C; ++ch) acc[ch] += gr[ch] * xs[ch];
            }
          }
        }
      }
    });
    Tensor dw = zeros(W.shape());
    float* pdw = dw.mutable_data();
    for (int64_t b = 0; b < G.B; ++b)
      for (int64_t t = 0; t < kk; ++t)
        for (int64_t ch = 0; ch < C; ++ch) pdw[(ch / per) * kk + t] += part[static_cast<size_t>((b * kk + t) * C + ch)];
    Tensor db;
    if (has_bias) {
      db = zeros({C});
      float* pdb = db.mutable_data();
      for (int64_t b = 0; b < G.B; ++b)
        for (int64_t ch = 0; ch < C; ++ch) pdb[ch] += bpart[static_cast<size_t>(b * C + ch)];
    }
    return {dx, dw, db};
  }
};

}  // namespace

Tensor grid_depthwise_conv(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t grid_h, int64_t grid_w,
                           int64_t prefix) {
  detail::check_defined(x, "grid_depthwise_conv", "x");
  detail::check_defined(weight, "grid_depthwise_conv", "weight");
  SOFTLAB_CHECK(x.rank() == 3, "grid_depthwise_conv: x must be [B, N, C], got shape ", x.shape());
  SOFTLAB_CHECK(weight.rank() == 3 && weight.shape()[1] == weight.shape()[2] && weight.shape()[1] % 2 == 1,
                "grid_depthwise_conv: weight must be [groups, k, k] with k odd, got shape ", weight.shape());
  const GridGeom g{x.shape()[0], x.shape()[1], x.shape()[2], weight.shape()[0], weight.shape()[1], grid_h, grid_w,
                   prefix};
  SOFTLAB_CHECK(g.G > 0 && g.C % g.G == 0, "grid_depthwise_conv: ", g.G, " kernels do not divide the ", g.C,
                " channels of x (shape ", x.shape(), ", weight ", weight.shape(), ")");
  SOFTLAB_CHECK(grid_h > 0 && grid_w > 0 && prefix >= 0 && prefix + grid_h * grid_w <= g.N,
                "grid_depthwise_conv: a ", grid_h, "x", grid_w, " grid after ", prefix, " prefix tokens does not fit ",
                g.N, " tokens (x shape ", x.shape(), ")");
  if (bias.defined())
    SOFTLAB_CHECK(bias.rank() == 1 && bias.shape()[0] == g.C, "grid_depthwise_conv: bias must be [", g.C,
                  "], got shape ", bias.shape());
  Tensor y = empty(x.shape());
  const std::vector<float> wexp = expand_taps(weight.data(), g);
  if (x.numel() > 0) conv_grid(x.data(), wexp.data(), bias.defined() ? bias.data() : nullptr, y.mutable_data(), g, 1);
  if (needs_grad({&x, &weight, &bias})) {
    auto node = std::make_shared<GridConvNode>();
    node->x = Saved(x);
    node->w = Saved(weight);
    node->geom = g;
    node->has_bias = bias.defined();
    attach(y, node, {&x, &weight, &bias});
  }
  return y;
}

}  // namespace softlab
