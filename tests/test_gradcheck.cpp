// Finite-difference gradient checks for every differentiable op in softlab/ops.hpp.
//
// One table, one row per (op, shapes, options): each row names the function under test and
// how to make its inputs, and becomes its own parameterised test, so a failure reports the
// row by name. All rows keep the default tolerances of gradcheck.hpp (eps 1e-3, atol 2e-3,
// rtol 2e-2); the WrongBackward tests below show that those tolerances catch wrong
// gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "ops/fused.hpp"

using namespace softlab;

namespace {

// How the values of an input are drawn.
enum class Init {
  Uniform,       // uniform in [lo, hi)
  AwayFromZero,  // uniform in [lo, hi), then pushed at least 0.05 away from 0 (kinks of relu/elu)
  Distinct,      // a shuffled ladder with steps of 0.05, so no eps-perturbation changes an argmax
};

struct In {
  Shape shape;
  float lo = -1.0f, hi = 1.0f;
  bool grad = true;  // requires_grad
  Init init = Init::Uniform;
};

struct Row {
  std::string name;
  test::Fn fn;
  std::vector<In> inputs;
};

Tensor make_input(const In& in, uint64_t seed) {
  Generator gen(seed);
  Tensor t = uniform(in.shape, gen, in.lo, in.hi);
  float* p = t.mutable_data();
  const int64_t n = t.numel();
  if (in.init == Init::AwayFromZero) {
    for (int64_t i = 0; i < n; ++i) {
      const float s = p[i] < 0.0f ? -1.0f : 1.0f;
      p[i] = s * (0.05f + std::fabs(p[i]));
    }
  } else if (in.init == Init::Distinct) {
    std::vector<int64_t> perm(static_cast<size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(gen.below(static_cast<uint64_t>(i + 1)))]);
    for (int64_t i = 0; i < n; ++i)
      p[i] = 0.05f * static_cast<float>(perm[static_cast<size_t>(i)] - n / 2);
  }
  t.set_requires_grad(in.grad);
  return t;
}

std::string shape_tag(const Shape& s) {
  if (s.rank() == 0) return "s";
  std::string r;
  for (size_t i = 0; i < s.dims().size(); ++i) r += (i ? "x" : "") + std::to_string(s.dims()[i]);
  return r;
}

// Two-input row helper: "<op>_<shape a>_<shape b>".
std::string tag2(const std::string& op, const Shape& a, const Shape& b) {
  return op + "_" + shape_tag(a) + "_" + shape_tag(b);
}

void add_matmul_rows(std::vector<Row>& rows) {
  struct MM {
    Shape a, b;
    bool ta, tb;
  };
  // Shapes as stored: with trans_a, a is [..., K, M]; with trans_b, b is [..., N, K].
  const std::vector<MM> cases = {
      // 2-D, all four transpose combinations, odd sizes.
      {{3, 4}, {4, 5}, false, false},
      {{4, 3}, {4, 5}, true, false},
      {{3, 4}, {5, 4}, false, true},
      {{4, 3}, {5, 4}, true, true},
      {{1, 1}, {1, 1}, false, false},
      {{7, 13}, {13, 3}, false, false},
      {{13, 7}, {3, 13}, true, true},
      {{1, 7}, {7, 1}, false, false},
      // batched 3-D, all four combinations
      {{2, 3, 4}, {2, 4, 5}, false, false},
      {{2, 4, 3}, {2, 4, 5}, true, false},
      {{2, 3, 4}, {2, 5, 4}, false, true},
      {{2, 4, 3}, {2, 5, 4}, true, true},
      // batched 4-D
      {{2, 3, 3, 4}, {2, 3, 4, 1}, false, false},
      {{2, 3, 4, 3}, {2, 3, 4, 5}, true, false},
      {{2, 3, 3, 4}, {2, 3, 5, 4}, false, true},
      {{2, 1, 4, 3}, {2, 1, 5, 4}, true, true},
      // batched a, shared 2-D b (batch folded into M unless trans_a)
      {{2, 3, 4}, {4, 5}, false, false},
      {{2, 4, 3}, {4, 5}, true, false},
      {{2, 3, 4}, {5, 4}, false, true},
      {{2, 4, 3}, {5, 4}, true, true},
      {{3, 2, 1, 4}, {4, 3}, false, false},
      {{3, 2, 4, 1}, {4, 3}, true, false},
      {{2, 2, 4, 3}, {5, 4}, true, true},
  };
  for (const MM& c : cases) {
    const bool ta = c.ta, tb = c.tb;
    const std::string t = std::string(ta ? "T" : "N") + (tb ? "T" : "N");
    auto fn = [ta, tb](const std::vector<Tensor>& x) { return matmul(x[0], x[1], ta, tb); };
    rows.push_back({tag2("matmul" + t, c.a, c.b), fn, {{c.a}, {c.b}}});
  }
  // Only one operand requires grad (the other's backward branch must not be needed).
  auto mm = [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); };
  rows.push_back({"matmul_only_a_2x3x4_4x5", mm, {{{2, 3, 4}}, {{4, 5}, -1, 1, false}}});
  rows.push_back({"matmul_only_b_2x3x4_4x5", mm, {{{2, 3, 4}, -1, 1, false}, {{4, 5}}}});
}

void add_linear_rows(std::vector<Row>& rows) {
  auto with_bias = [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); };
  auto no_bias = [](const std::vector<Tensor>& x) { return linear(x[0], x[1]); };
  rows.push_back({"linear_bias_3x4", with_bias, {{{3, 4}}, {{5, 4}}, {{5}}}});
  rows.push_back({"linear_bias_2x3x4", with_bias, {{{2, 3, 4}}, {{5, 4}}, {{5}}}});
  rows.push_back({"linear_bias_1d_7", with_bias, {{{7}}, {{3, 7}}, {{3}}}});
  rows.push_back({"linear_bias_7x13", with_bias, {{{7, 13}}, {{3, 13}}, {{3}}}});
  rows.push_back({"linear_nobias_3x4", no_bias, {{{3, 4}}, {{5, 4}}}});
  rows.push_back({"linear_nobias_2x3x4", no_bias, {{{2, 3, 4}}, {{1, 4}}}});
  rows.push_back({"linear_bias_no_x_grad", with_bias, {{{2, 3, 4}, -1, 1, false}, {{5, 4}}, {{5}}}});
  rows.push_back({"linear_bias_only_x_grad", with_bias, {{{2, 3, 4}}, {{5, 4}, -1, 1, false}, {{5}, -1, 1, false}}});
}

void add_binary_rows(std::vector<Row>& rows) {
  struct Op {
    const char* name;
    Tensor (*f)(const Tensor&, const Tensor&);
  };
  const Op ops[] = {{"add", &add}, {"sub", &sub}, {"mul", &mul}, {"div", &div}};
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 4}, {3, 4}},              // same shape
      {{}, {3, 4}},                  // scalar on the left
      {{3, 4}, {}},                  // scalar on the right
      {{4, 3}, {3}},                 // trailing-dim broadcast
      {{3}, {4, 3}},                 // the same, swapped
      {{2, 1, 3}, {2, 4, 1}},        // middle broadcast, both sides expand
      {{2, 3, 4}, {3, 1}},           // rank mismatch with a size-1 axis
      {{1}, {2, 3}},                 // rank mismatch, [1]
      {{1, 1}, {7, 13}},             // [1, 1] against odd sizes
      {{7, 1, 13}, {1, 3, 1}},       // odd sizes, both sides expand
      {{13}, {13}},
  };
  for (const Op& op : ops) {
    auto f = op.f;
    auto fn = [f](const std::vector<Tensor>& x) { return f(x[0], x[1]); };
    const bool is_div = std::string(op.name) == "div";
    for (const auto& [sa, sb] : shapes) {
      In b{sb};
      if (is_div) b.lo = 0.5f, b.hi = 2.0f;  // denominators away from 0
      rows.push_back({tag2(op.name, sa, sb), fn, {{sa}, b}});
    }
    // One side without grad.
    In b{{3}};
    if (is_div) b.lo = 0.5f, b.hi = 2.0f;
    In b_nograd = b;
    b_nograd.grad = false;
    rows.push_back({std::string(op.name) + "_only_a_4x3_3", fn, {{{4, 3}}, b_nograd}});
    rows.push_back({std::string(op.name) + "_only_b_4x3_3", fn, {{{4, 3}, -1, 1, false}, b}});
  }
  auto dv = [](const std::vector<Tensor>& x) { return div(x[0], x[1]); };
  rows.push_back({"div_negative_denominator", dv, {{{3, 4}}, {{4}, -2.0f, -0.5f}}});
}

void add_unary_rows(std::vector<Row>& rows) {
  struct U {
    std::string name;
    std::function<Tensor(const Tensor&)> f;
    float lo, hi;
    Init init;
  };
  const std::vector<U> ops = {
      {"neg", [](const Tensor& x) { return neg(x); }, -1, 1, Init::Uniform},
      {"scale_2p5", [](const Tensor& x) { return scale(x, 2.5f); }, -1, 1, Init::Uniform},
      {"scale_m0p5", [](const Tensor& x) { return scale(x, -0.5f); }, -1, 1, Init::Uniform},
      {"add_scalar", [](const Tensor& x) { return add_scalar(x, 3.0f); }, -1, 1, Init::Uniform},
      {"exp", [](const Tensor& x) { return exp(x); }, -2, 2, Init::Uniform},
      {"log", [](const Tensor& x) { return log(x); }, 0.2f, 3, Init::Uniform},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.2f, 3, Init::Uniform},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -2, 2, Init::Uniform},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -4, 4, Init::Uniform},
      {"softplus", [](const Tensor& x) { return softplus(x); }, -4, 4, Init::Uniform},
      {"relu", [](const Tensor& x) { return relu(x); }, -1, 1, Init::AwayFromZero},
      {"elu", [](const Tensor& x) { return elu(x); }, -2, 2, Init::AwayFromZero},
      {"elu_alpha0p5", [](const Tensor& x) { return elu(x, 0.5f); }, -2, 2, Init::AwayFromZero},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, GeluKind::Tanh); }, -3, 3, Init::Uniform},
      {"gelu_exact", [](const Tensor& x) { return gelu(x, GeluKind::Exact); }, -3, 3, Init::Uniform},
  };
  const std::vector<Shape> shapes = {{13}, {2, 3, 4}, {}};
  for (const U& u : ops)
    for (const Shape& s : shapes) {
      auto f = u.f;
      rows.push_back({u.name + "_" + shape_tag(s), [f](const std::vector<Tensor>& x) { return f(x[0]); },
                      {{s, u.lo, u.hi, true, u.init}}});
    }
}

void add_reduction_rows(std::vector<Row>& rows) {
  const std::vector<Shape> shapes = {{13}, {3, 4}, {2, 3, 5}, {1, 7}};
  for (const Shape& s : shapes) {
    const std::string st = shape_tag(s);
    const In u{s};
    const In d{s, -1, 1, true, Init::Distinct};
    rows.push_back({"sum_all_" + st, [](const std::vector<Tensor>& x) { return sum(x[0]); }, {u}});
    rows.push_back({"mean_all_" + st, [](const std::vector<Tensor>& x) { return mean(x[0]); }, {u}});
    rows.push_back({"max_all_" + st, [](const std::vector<Tensor>& x) { return max(x[0]); }, {d}});
    for (int64_t axis = -1; axis < s.rank(); ++axis) {
      for (bool keep : {false, true}) {
        const std::string tail = "_" + st + "_axis" + (axis < 0 ? "m1" : std::to_string(axis)) + (keep ? "_keep" : "");
        rows.push_back({"sum" + tail, [axis, keep](const std::vector<Tensor>& x) { return sum(x[0], axis, keep); }, {u}});
        rows.push_back({"mean" + tail, [axis, keep](const std::vector<Tensor>& x) { return mean(x[0], axis, keep); }, {u}});
        rows.push_back({"max" + tail, [axis, keep](const std::vector<Tensor>& x) { return max(x[0], axis, keep); }, {d}});
      }
    }
  }
  rows.push_back({"sum_all_scalar", [](const std::vector<Tensor>& x) { return sum(x[0]); }, {{Shape{}}}});
}

void add_softmax_rows(std::vector<Row>& rows) {
  const std::vector<Shape> shapes = {{7}, {3, 7}, {2, 3, 5}, {4, 1}, {1, 1}, {2, 13}};
  for (const Shape& s : shapes) {
    rows.push_back({"softmax_" + shape_tag(s), [](const std::vector<Tensor>& x) { return softmax(x[0]); },
                    {{s, -3, 3}}});
    rows.push_back({"log_softmax_" + shape_tag(s), [](const std::vector<Tensor>& x) { return log_softmax(x[0]); },
                    {{s, -3, 3}}});
  }
}

void add_layer_norm_rows(std::vector<Row>& rows) {
  const std::vector<Shape> shapes = {{3, 7}, {2, 3, 5}, {1, 13}, {4, 1}, {6}};
  for (const Shape& s : shapes) {
    const Shape d{s[-1]};
    const std::string st = shape_tag(s);
    rows.push_back({"layer_norm_affine_" + st,
                    [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2]); },
                    {{s, -2, 2}, {d, 0.5f, 1.5f}, {d}}});
    rows.push_back({"layer_norm_plain_" + st,
                    [](const std::vector<Tensor>& x) { return layer_norm(x[0], Tensor(), Tensor()); }, {{s, -2, 2}}});
  }
  rows.push_back({"layer_norm_gamma_only_3x7",
                  [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], Tensor()); },
                  {{{3, 7}, -2, 2}, {{7}, 0.5f, 1.5f}}});
  rows.push_back({"layer_norm_beta_only_3x7",
                  [](const std::vector<Tensor>& x) { return layer_norm(x[0], Tensor(), x[1]); },
                  {{{3, 7}, -2, 2}, {{7}}}});
  rows.push_back({"layer_norm_params_only_3x7",
                  [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2]); },
                  {{{3, 7}, -2, 2, false}, {{7}, 0.5f, 1.5f}, {{7}}}});
  rows.push_back({"layer_norm_eps0p1_3x7",
                  [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 0.1f); },
                  {{{3, 7}, -2, 2}, {{7}, 0.5f, 1.5f}, {{7}}}});
}

void add_shape_rows(std::vector<Row>& rows) {
  // reshape (explicit dims; -1 is covered by the disabled Reshape.InferredDim test below)
  rows.push_back({"reshape_3x4_to_6x2", [](const std::vector<Tensor>& x) { return reshape(x[0], Shape{6, 2}); },
                  {{{3, 4}}}});
  rows.push_back({"reshape_2x3x4_to_4x1x6",
                  [](const std::vector<Tensor>& x) { return reshape(x[0], Shape{4, 1, 6}); }, {{{2, 3, 4}}}});
  rows.push_back({"reshape_then_scale",  // the gradient flows through the view into another op
                  [](const std::vector<Tensor>& x) { return scale(reshape(x[0], Shape{13}), 3.0f); }, {{{13, 1}}}});

  rows.push_back({"transpose_3x4_01", [](const std::vector<Tensor>& x) { return transpose(x[0], 0, 1); },
                  {{{3, 4}}}});
  rows.push_back({"transpose_2x3x4_02", [](const std::vector<Tensor>& x) { return transpose(x[0], 0, 2); },
                  {{{2, 3, 4}}}});
  rows.push_back({"transpose_2x3x4_m1m2", [](const std::vector<Tensor>& x) { return transpose(x[0], -1, -2); },
                  {{{2, 3, 4}}}});
  rows.push_back({"transpose_7x1x3_02", [](const std::vector<Tensor>& x) { return transpose(x[0], 0, 2); },
                  {{{7, 1, 3}}}});

  const std::vector<std::pair<Shape, std::vector<int64_t>>> perms = {
      {{2, 3, 4}, {2, 0, 1}}, {{2, 3, 4}, {1, 2, 0}}, {{2, 3, 4}, {0, 2, 1}},
      {{2, 3, 1, 4}, {3, 1, 0, 2}}, {{2, 3, 2, 3}, {0, 2, 1, 3}}, {{2, 3, 2, 3}, {-1, 0, -2, 1}},
  };
  for (const auto& [s, order] : perms) {
    std::string name = "permute_" + shape_tag(s) + "_";
    for (int64_t o : order) name += o < 0 ? "m" + std::to_string(-o) : std::to_string(o);
    const auto ord = order;
    rows.push_back({name, [ord](const std::vector<Tensor>& x) { return permute(x[0], ord); }, {{s}}});
  }

  struct Sl {
    Shape s;
    int64_t axis, start, end;
  };
  const std::vector<Sl> slices = {
      {{5, 4}, 0, 1, 4},     {{5, 4}, 1, 0, 1},     {{5, 4}, -1, 3, 4},   {{5, 4}, 0, 0, 5},
      {{2, 5, 3}, 1, 0, 5},  {{2, 5, 3}, 1, 2, 2},  {{2, 5, 3}, 2, 2, 3}, {{2, 5, 3}, 0, 1, 2},
      {{2, 5, 3}, 1, 4, 5},  {{13}, 0, 5, 12},
  };
  for (const Sl& c : slices) {
    const int64_t axis = c.axis, st = c.start, en = c.end;
    rows.push_back({"slice_" + shape_tag(c.s) + "_axis" + (axis < 0 ? "m1" : std::to_string(axis)) + "_" +
                        std::to_string(st) + "_" + std::to_string(en),
                    [axis, st, en](const std::vector<Tensor>& x) { return slice(x[0], axis, st, en); }, {{c.s}}});
  }

  auto cat0 = [](const std::vector<Tensor>& x) { return concat(x, 0); };
  auto cat1 = [](const std::vector<Tensor>& x) { return concat(x, 1); };
  auto catm1 = [](const std::vector<Tensor>& x) { return concat(x, -1); };
  rows.push_back({"concat_axis0_3_inputs", cat0, {{{2, 3}}, {{1, 3}}, {{4, 3}}}});
  rows.push_back({"concat_axis1_3_inputs", cat1, {{{2, 1, 3}}, {{2, 3, 3}}, {{2, 2, 3}}}});
  rows.push_back({"concat_axis1_middle_nograd", cat1, {{{2, 1, 3}}, {{2, 3, 3}, -1, 1, false}, {{2, 2, 3}}}});
  rows.push_back({"concat_axis0_first_nograd", cat0, {{{2, 3}, -1, 1, false}, {{1, 3}}, {{4, 3}}}});
  rows.push_back({"concat_axism1_3_inputs", catm1, {{{2, 3, 1}}, {{2, 3, 2}}, {{2, 3, 4}}}});
  rows.push_back({"concat_axis0_single", cat0, {{{3, 2}}}});

  const std::vector<int32_t> idx = {0, 4, 4, 2, 0};
  rows.push_back({"index_select_5x3_repeated",
                  [idx](const std::vector<Tensor>& x) { return index_select(x[0], idx, Shape{5}); }, {{{5, 3}}}});
  const std::vector<int32_t> idx2 = {3, 1, 3, 3, 0, 1};
  rows.push_back({"index_select_4x2x3_index2x3",
                  [idx2](const std::vector<Tensor>& x) { return index_select(x[0], idx2, Shape{2, 3}); },
                  {{{4, 2, 3}}}});
  const std::vector<int32_t> idx3 = {2};
  rows.push_back({"index_select_7_scalar_index",
                  [idx3](const std::vector<Tensor>& x) { return index_select(x[0], idx3, Shape{}); }, {{{7}}}});
  const std::vector<int32_t> tok = {5, 0, 5, 1, 1, 5};
  rows.push_back({"embedding_6x4_tokens2x3",
                  [tok](const std::vector<Tensor>& x) { return embedding(x[0], tok, Shape{2, 3}); }, {{{6, 4}}}});
  // A small theta so that every pair turns by a sizeable angle over 5 positions.
  rows.push_back({"rope_2x3x5x4_theta10",
                  [](const std::vector<Tensor>& x) { return rope(x[0], 10.0f); }, {{{2, 3, 5, 4}}}});
  rows.push_back({"rope_7x6", [](const std::vector<Tensor>& x) { return rope(x[0]); }, {{{7, 6}}}});
  // Depthwise conv over a token grid: per channel with bias and a class token, per head
  // (kernels shared by channel groups) without bias, a kernel wider than the grid.
  rows.push_back({"grid_conv_k3_channel_cls_3x4",
                  [](const std::vector<Tensor>& x) { return grid_depthwise_conv(x[0], x[1], x[2], 3, 4, 1); },
                  {{{2, 13, 4}}, {{4, 3, 3}}, {{4}}}});
  rows.push_back({"grid_conv_k3_head_4x3",
                  [](const std::vector<Tensor>& x) { return grid_depthwise_conv(x[0], x[1], Tensor(), 4, 3, 0); },
                  {{{2, 12, 6}}, {{2, 3, 3}}}});
  rows.push_back({"grid_conv_k5_head_cls_3x3",
                  [](const std::vector<Tensor>& x) { return grid_depthwise_conv(x[0], x[1], x[2], 3, 3, 1); },
                  {{{1, 10, 4}}, {{2, 5, 5}}, {{4}}}});
  // Image windows (im2col): overlapping at stride 2 with padding on an odd, non-square image
  // (edge windows read padding, interior pixels are read by up to four windows), stride 1,
  // and non-overlapping without padding (every pixel read once).
  rows.push_back({"image_windows_k3_s2_p1_5x4x2",
                  [](const std::vector<Tensor>& x) { return image_windows(x[0], 3, 2, 1); }, {{{2, 5, 4, 2}}}});
  rows.push_back({"image_windows_k3_s1_p1_4x4x1",
                  [](const std::vector<Tensor>& x) { return image_windows(x[0], 3, 1, 1); }, {{{1, 4, 4, 1}}}});
  rows.push_back({"image_windows_k2_s2_p0_4x6x3",
                  [](const std::vector<Tensor>& x) { return image_windows(x[0], 2, 2, 0); }, {{{2, 4, 6, 3}}}});
}

void add_dropout_rows(std::vector<Row>& rows) {
  // A generator seeded afresh on every call: each forward of the finite differences draws
  // the same mask, so the function is deterministic and linear in x.
  for (float p : {0.0f, 0.3f, 0.7f}) {
    rows.push_back({"dropout_p" + std::to_string(static_cast<int>(p * 10)) + "_3x7",
                    [p](const std::vector<Tensor>& x) {
                      Generator gen(77);
                      return dropout(x[0], p, gen);
                    },
                    {{{3, 7}}}});
  }
}

void add_loss_rows(std::vector<Row>& rows) {
  const std::vector<int32_t> l4 = {0, 4, 2, 2};
  const std::vector<int32_t> l1 = {0};
  const std::vector<int32_t> l3 = {6, 0, 3};
  rows.push_back({"cross_entropy_4x5", [l4](const std::vector<Tensor>& x) { return cross_entropy(x[0], l4); },
                  {{{4, 5}, -3, 3}}});
  rows.push_back({"cross_entropy_4x5_smooth0p1",
                  [l4](const std::vector<Tensor>& x) { return cross_entropy(x[0], l4, 0.1f); }, {{{4, 5}, -3, 3}}});
  rows.push_back({"cross_entropy_1x1", [l1](const std::vector<Tensor>& x) { return cross_entropy(x[0], l1); },
                  {{{1, 1}, -3, 3}}});
  rows.push_back({"cross_entropy_3x7_smooth0p2",
                  [l3](const std::vector<Tensor>& x) { return cross_entropy(x[0], l3, 0.2f); }, {{{3, 7}, -3, 3}}});
  rows.push_back({"cross_entropy_3x7_scaled",  // upstream gradient != 1 reaches the loss
                  [l3](const std::vector<Tensor>& x) { return scale(cross_entropy(x[0], l3), 3.0f); },
                  {{{3, 7}, -3, 3}}});
}

void add_composed_rows(std::vector<Row>& rows) {
  rows.push_back({"composed_x_times_x_plus_exp_x",
                  [](const std::vector<Tensor>& x) { return add(mul(x[0], x[0]), exp(x[0])); }, {{{3, 4}}}});
  rows.push_back({"composed_x_plus_x", [](const std::vector<Tensor>& x) { return add(x[0], x[0]); }, {{{7}}}});
  rows.push_back({"composed_x_div_x_squared",
                  [](const std::vector<Tensor>& x) { return div(x[0], mul(x[0], x[0])); }, {{{5}, 0.5f, 2.0f}}});
  // A small transformer-ish block: layer_norm -> linear -> gelu -> linear + residual -> softmax.
  rows.push_back({"composed_mlp_block",
                  [](const std::vector<Tensor>& x) {
                    Tensor h = layer_norm(x[0], x[1], x[2]);
                    h = gelu(linear(h, x[3], x[4]));
                    h = add(linear(h, x[5]), x[0]);
                    return softmax(h);
                  },
                  {{{2, 3, 4}, -2, 2}, {{4}, 0.5f, 1.5f}, {{4}}, {{6, 4}}, {{6}}, {{4, 6}}}});
  const std::vector<int32_t> lab = {1, 0, 2};
  rows.push_back({"composed_attention_scores_ce",
                  [lab](const std::vector<Tensor>& x) {
                    Tensor s = matmul(x[0], x[1], false, true);                 // [3, 3]
                    Tensor p = softmax(scale(s, 0.5f));
                    Tensor o = matmul(p, x[1]);                                 // [3, 4]
                    return cross_entropy(slice(concat({o, x[0]}, 1), 1, 0, 3), lab);
                  },
                  {{{3, 4}}, {{3, 4}}}});
}

// Fused ops of the transformer block (ops/fused.hpp); their comparison against the
// primitive chains they replace is in test_fused_ops.cpp.
void add_fused_rows(std::vector<Row>& rows) {
  auto bg = [](const std::vector<Tensor>& x) { return bias_gelu(x[0], x[1]); };
  rows.push_back({"bias_gelu_2x3x4", bg, {{{2, 3, 4}, -3, 3}, {{4}}}});
  rows.push_back({"bias_gelu_7x13", bg, {{{7, 13}, -3, 3}, {{13}}}});
  rows.push_back({"bias_gelu_70x5", bg, {{{70, 5}, -3, 3}, {{5}}}});  // three row blocks, the last one short
  rows.push_back({"bias_gelu_1d_5", bg, {{{5}, -3, 3}, {{5}}}});
  rows.push_back({"bias_gelu_only_h", bg, {{{3, 4}, -3, 3}, {{4}, -1, 1, false}}});
  rows.push_back({"bias_gelu_only_bias", bg, {{{3, 4}, -3, 3, false}, {{4}}}});
}

std::vector<Row> all_rows() {
  std::vector<Row> rows;
  add_matmul_rows(rows);
  add_linear_rows(rows);
  add_binary_rows(rows);
  add_unary_rows(rows);
  add_reduction_rows(rows);
  add_softmax_rows(rows);
  add_layer_norm_rows(rows);
  add_shape_rows(rows);
  add_dropout_rows(rows);
  add_loss_rows(rows);
  add_composed_rows(rows);
  add_fused_rows(rows);
  return rows;
}

const std::vector<Row>& table() {
  static const std::vector<Row> rows = all_rows();
  return rows;
}

class OpGradcheck : public ::testing::TestWithParam<size_t> {};

TEST_P(OpGradcheck, MatchesFiniteDifferences) {
  const Row& row = table()[GetParam()];
  SCOPED_TRACE(row.name);
  std::vector<Tensor> inputs;
  for (size_t k = 0; k < row.inputs.size(); ++k)
    inputs.push_back(make_input(row.inputs[k], 1000 * (GetParam() + 1) + k));
  const int64_t live_before = Node::live_count();
  const auto r = test::gradcheck(row.fn, inputs);
  EXPECT_TRUE(r.ok) << row.name << "\n" << r.report;
  // Every input that requires grad got a gradient of its own shape (or none at all when
  // it does not reach the output, as in an empty slice).
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!inputs[k].requires_grad()) {
      EXPECT_FALSE(inputs[k].grad().defined()) << "input " << k << " has no requires_grad but got a gradient";
    } else if (inputs[k].grad().defined()) {
      EXPECT_EQ(inputs[k].grad().shape(), inputs[k].shape()) << "input " << k;
    }
  }
  EXPECT_EQ(Node::live_count(), live_before) << "graph nodes leaked";
}

std::string row_name(const ::testing::TestParamInfo<size_t>& info) {
  std::string n = table()[info.param].name;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Table, OpGradcheck, ::testing::Range<size_t>(0, table().size()), row_name);

TEST(OpGradcheckTable, RowNamesAreUnique) {
  std::vector<std::string> names;
  for (const Row& r : table()) names.push_back(r.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end())
      << "duplicate row " << *std::adjacent_find(names.begin(), names.end());
}

// The table covers every differentiable op of ops.hpp: a row name starts with the op.
TEST(OpGradcheckTable, CoversEveryOp) {
  const char* ops[] = {"matmul",  "linear",  "add",     "sub",        "mul",         "div",        "neg",
                       "scale",   "add_scalar", "exp",  "log",        "sqrt",        "tanh",       "sigmoid",
                       "softplus", "relu",   "elu",     "gelu_tanh",  "gelu_exact",  "sum",        "mean",
                       "max",     "softmax", "log_softmax", "layer_norm", "reshape", "transpose",  "permute",
                       "slice",   "concat",  "index_select", "embedding", "rope", "cross_entropy", "dropout",
                       "grid_conv", "image_windows"};
  for (const char* op : ops) {
    const std::string p = op;
    const bool found = std::any_of(table().begin(), table().end(),
                                   [&](const Row& r) { return r.name.rfind(p, 0) == 0; });
    EXPECT_TRUE(found) << "no gradcheck row for " << op;
  }
}

// reshape with an inferred (-1) dimension, as documented in ops.hpp (a braced list of
// dims, since a Shape cannot hold -1).
TEST(Reshape, InferredDimMinusOne) {
  Tensor x = make_input({{3, 4}}, 7);
  const auto r = test::gradcheck([](const std::vector<Tensor>& v) { return reshape(v[0], {-1, 2}); }, {x});
  EXPECT_TRUE(r.ok) << r.report;
  EXPECT_EQ(reshape(x, {2, -1, 3}).shape(), (Shape{2, 2, 3}));
  EXPECT_THROW(reshape(x, {-1, -1}), Error);
  EXPECT_THROW(reshape(x, {-1, 5}), Error);
  EXPECT_THROW(reshape(x, {-2, 6}), Error);
}

// ---- the tolerances catch wrong gradients ------------------------------------------------

// y = x * x with a backward that is selectable: right (2x), the classic mistake (x), off by
// 5 %, or of the wrong sign. Built exactly like a library op: forward, Saved, attach.
enum class SquareGrad { Right, ForgotFactor2, FivePercentOff, WrongSign };

struct TestSquareNode final : Node {
  Saved x;
  SquareGrad kind = SquareGrad::Right;
  const char* name() const override { return "test_square"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor& X = x.get();
    Tensor dx = empty(X.shape());
    float* d = dx.mutable_data();
    for (int64_t i = 0; i < X.numel(); ++i) {
      const float v = X.data()[i];
      float dydx = 2.0f * v;
      if (kind == SquareGrad::ForgotFactor2) dydx = v;
      if (kind == SquareGrad::FivePercentOff) dydx = 2.1f * v;
      if (kind == SquareGrad::WrongSign) dydx = -2.0f * v;
      d[i] = g.data()[i] * dydx;
    }
    return {dx};
  }
};

Tensor test_square(const Tensor& x, SquareGrad kind) {
  Tensor y = empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) y.mutable_data()[i] = x.data()[i] * x.data()[i];
  if (needs_grad({&x})) {
    auto node = std::make_shared<TestSquareNode>();
    node->x = Saved(x);
    node->kind = kind;
    attach(y, node, {&x});
  }
  return y;
}

test::GradcheckResult check_square(SquareGrad kind) {
  Tensor x = make_input({{3, 5}, 0.5f, 1.5f}, 99);
  return test::gradcheck([kind](const std::vector<Tensor>& v) { return test_square(v[0], kind); }, {x});
}

TEST(WrongBackward, CorrectSquarePasses) {
  const auto r = check_square(SquareGrad::Right);
  EXPECT_TRUE(r.ok) << r.report;
  EXPECT_LT(r.max_abs_err, 1e-3);
}

TEST(WrongBackward, ForgottenFactorFails) {
  const auto r = check_square(SquareGrad::ForgotFactor2);
  EXPECT_FALSE(r.ok) << "a backward of x instead of 2x passed gradcheck:\n" << r.report;
  EXPECT_NE(r.report.find("FAIL"), std::string::npos) << r.report;
}

TEST(WrongBackward, FivePercentErrorFails) {
  const auto r = check_square(SquareGrad::FivePercentOff);
  EXPECT_FALSE(r.ok) << "a gradient 5% too large passed gradcheck:\n" << r.report;
}

TEST(WrongBackward, WrongSignFails) {
  const auto r = check_square(SquareGrad::WrongSign);
  EXPECT_FALSE(r.ok) << r.report;
}

// The wrong node inside a larger graph is still caught (its error is not averaged away).
TEST(WrongBackward, FailsInsideComposedGraph) {
  Tensor x = make_input({{2, 3}, 0.5f, 1.5f}, 5);
  Tensor w = make_input({{4, 3}}, 6);
  const auto bad = test::gradcheck(
      [](const std::vector<Tensor>& v) { return softmax(linear(test_square(v[0], SquareGrad::ForgotFactor2), v[1])); },
      {x, w});
  EXPECT_FALSE(bad.ok) << bad.report;
  const auto good = test::gradcheck(
      [](const std::vector<Tensor>& v) { return softmax(linear(test_square(v[0], SquareGrad::Right), v[1])); },
      {x, w});
  EXPECT_TRUE(good.ok) << good.report;
}

}  // namespace
