// Rotary position embedding (Su et al. 2021, RoFormer), in the half-split layout of GPT-NeoX
// and Llama: for x [..., N, Dh] and pair j in [0, Dh/2), channels (j, j + Dh/2) of position n
// turn by the angle n * theta^(-2j/Dh):
//   y_j = x_j cos - x_{j+h} sin,   y_{j+h} = x_j sin + x_{j+h} cos        (h = Dh/2)
// A rotation's inverse is its transpose, so the backward turns the gradient back by -angle.
// q_n . k_m then depends on n - m only, which is what lets attention generalise across
// positions. The angles are computed in double once per call (N * Dh/2 values).
#include <cmath>

#include "ops/op_util.hpp"
#include "softlab/ops.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {

// cos and sin tables [N, Dh/2].
void rope_tables(int64_t N, int64_t Dh, float theta, std::vector<float>& c, std::vector<float>& s) {
  const int64_t h = Dh / 2;
  c.resize(static_cast<size_t>(N * h));
  s.resize(static_cast<size_t>(N * h));
  for (int64_t j = 0; j < h; ++j) {
    const double freq = std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(j) / static_cast<double>(Dh));
    for (int64_t n = 0; n < N; ++n) {
      const double a = static_cast<double>(n) * freq;
      c[static_cast<size_t>(n * h + j)] = static_cast<float>(std::cos(a));
      s[static_cast<size_t>(n * h + j)] = static_cast<float>(std::sin(a));
    }
  }
}

// out = rotate(in) by +angle (sign = 1) or -angle (sign = -1); rows are [N, Dh] blocks.
void rope_apply(const float* in, float* out, int64_t rows, int64_t N, int64_t Dh, const std::vector<float>& c,
                const std::vector<float>& s, float sign) {
  const int64_t h = Dh / 2;
  parallel_for(0, rows * N, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r % N;
      const float* x = in + r * Dh;
      float* y = out + r * Dh;
      const float* cn = c.data() + n * h;
      const float* sn = s.data() + n * h;
      for (int64_t j = 0; j < h; ++j) {
        const float x1 = x[j], x2 = x[j + h], sj = sign * sn[j];
        y[j] = x1 * cn[j] - x2 * sj;
        y[j + h] = x1 * sj + x2 * cn[j];
      }
    }
  });
}

struct RopeNode final : Node {
  Shape shape;
  std::vector<float> c, s;
  const char* name() const override { return "rope"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const int64_t N = shape[-2], Dh = shape[-1];
    Tensor dx = empty(shape);
    rope_apply(g.data(), dx.mutable_data(), shape.numel() / (N * Dh), N, Dh, c, s, -1.0f);
    return {dx};
  }
};

}  // namespace

Tensor rope(const Tensor& x, float theta) {
  detail::check_defined(x, "rope", "x");
  SOFTLAB_CHECK(x.rank() >= 2, "rope: expected [..., N, Dh], got shape ", x.shape());
  const int64_t N = x.shape()[-2], Dh = x.shape()[-1];
  SOFTLAB_CHECK(Dh % 2 == 0, "rope: the head size must be even (channels turn in pairs), got shape ", x.shape());
  SOFTLAB_CHECK(theta > 0.0f, "rope: theta must be > 0, got ", theta);
  Tensor y = empty(x.shape());
  std::vector<float> c, s;
  rope_tables(N, Dh, theta, c, s);
  if (x.numel() > 0) rope_apply(x.data(), y.mutable_data(), x.numel() / (N * Dh), N, Dh, c, s, 1.0f);
  if (needs_grad({&x})) {
    auto node = std::make_shared<RopeNode>();
    node->shape = x.shape();
    node->c = std::move(c);
    node->s = std::move(s);
    attach(y, node, {&x});
  }
  return y;
}

}  // namespace softlab
