// The convolutional stem: image_windows + Linear against a convolution written here in
// double from its definition, the whole stem against the same maths composed in double,
// its stage count, the ViT that uses it (learns, reloads) and the config rules.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include "config/memory_estimate.hpp"
#include "expect_error.hpp"
#include "softlab/softlab.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
using test::expect_error;
namespace fs = std::filesystem;

namespace {

// A channels-last image batch in double: x[((b*H + y)*W + x)*C + c].
struct Images {
  int64_t B, H, W, C;
  std::vector<double> v;
  double at(int64_t b, int64_t y, int64_t x, int64_t c) const {
    if (y < 0 || y >= H || x < 0 || x >= W) return 0.0;  // zero padding
    return v[static_cast<size_t>(((b * H + y) * W + x) * C + c)];
  }
};

Images from_tensor(const Tensor& t) {  // [B, H, W, C]
  Images im{t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3], {}};
  im.v.assign(t.data(), t.data() + t.numel());
  return im;
}

// out[b, oy, ox, o] = bias[o] + sum_{c, i, j} w[o, c, i, j] x[b, oy*s - p + i, ox*s - p + j, c]:
// the convolution as PyTorch's Conv2d defines it, with its [out, in, k, k] weight.
Images conv(const Images& x, const std::vector<double>& w, const std::vector<double>& bias, int64_t out, int64_t k,
            int64_t s, int64_t p) {
  const int64_t Ho = (x.H + 2 * p - k) / s + 1, Wo = (x.W + 2 * p - k) / s + 1;
  Images y{x.B, Ho, Wo, out, std::vector<double>(static_cast<size_t>(x.B * Ho * Wo * out))};
  for (int64_t b = 0; b < x.B; ++b)
    for (int64_t oy = 0; oy < Ho; ++oy)
      for (int64_t ox = 0; ox < Wo; ++ox)
        for (int64_t o = 0; o < out; ++o) {
          double acc = bias[static_cast<size_t>(o)];
          for (int64_t c = 0; c < x.C; ++c)
            for (int64_t i = 0; i < k; ++i)
              for (int64_t j = 0; j < k; ++j)
                acc += w[static_cast<size_t>(((o * x.C + c) * k + i) * k + j)] *
                       x.at(b, oy * s - p + i, ox * s - p + j, c);
          y.v[static_cast<size_t>(((b * Ho + oy) * Wo + ox) * out + o)] = acc;
        }
  return y;
}

// softlab's Linear weight over image_windows rows, [out, (i, j, c)], from a Conv2d weight.
Tensor window_weight(const std::vector<double>& w, int64_t out, int64_t in, int64_t k) {
  Tensor t = zeros({out, k * k * in});
  float* d = t.mutable_data();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < in; ++c)
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j)
          d[o * k * k * in + (i * k + j) * in + c] = static_cast<float>(w[static_cast<size_t>(((o * in + c) * k + i) * k + j)]);
  return t;
}

std::vector<double> random_values(size_t n, uint64_t seed) {
  Generator g(seed);
  const Tensor t = uniform({static_cast<int64_t>(n)}, g, -1.0f, 1.0f);
  return std::vector<double>(t.data(), t.data() + t.numel());
}

void expect_near_all(const Tensor& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got.data()[i], want[i], tol * (1.0 + std::abs(want[i]))) << "element " << i;
}

double gelu_tanh(double x) {
  const double c = std::sqrt(2.0 / 3.14159265358979323846);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}

// Randomises a parameter in place (the norms start at ones and zeros, which would hide a
// mix-up of gain and bias).
void randomise(Tensor& t, uint64_t seed) {
  const std::vector<double> v = random_values(static_cast<size_t>(t.numel()), seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_data()[i] = static_cast<float>(v[static_cast<size_t>(i)]);
}

}  // namespace

TEST(ImageWindows, AndALinearLayerAreAStridedConvolution) {
  struct Case {
    int64_t k, s, p;
  };
  for (const Case cs : {Case{3, 2, 1}, Case{3, 1, 1}, Case{2, 2, 0}, Case{3, 3, 2}}) {
    SCOPED_TRACE("k " + std::to_string(cs.k) + " stride " + std::to_string(cs.s) + " pad " + std::to_string(cs.p));
    const int64_t B = 2, H = 7, W = 6, C = 3, O = 4;
    Generator g(11);
    const Tensor x = uniform({B, H, W, C}, g, -1.0f, 1.0f);
    const std::vector<double> w = random_values(static_cast<size_t>(O * C * cs.k * cs.k), 12);
    const std::vector<double> bias = random_values(static_cast<size_t>(O), 13);
    Tensor b = zeros({O});
    for (int64_t o = 0; o < O; ++o) b.mutable_data()[o] = static_cast<float>(bias[static_cast<size_t>(o)]);
    const Tensor got = linear(image_windows(x, cs.k, cs.s, cs.p), window_weight(w, O, C, cs.k), b);
    const Images want = conv(from_tensor(x), w, bias, O, cs.k, cs.s, cs.p);
    ASSERT_EQ(got.shape(), Shape({B, want.H * want.W, O}));
    expect_near_all(got, want.v, 1e-5);
  }
}

TEST(ImageWindows, RefusesBadGeometryNamingTheShape) {
  Generator g(1);
  const Tensor x = uniform({1, 2, 2, 1}, g, -1.0f, 1.0f);
  expect_error([&] { image_windows(x, 5, 1, 1); }, {"image_windows", "[1, 2, 2, 1]"});
  expect_error([&] { image_windows(x, 3, 0, 1); }, {"image_windows", "stride 0"});
  expect_error([&] { image_windows(reshape(x, {1, 4}), 1, 1, 0); }, {"image_windows", "[B, H, W, C]", "[1, 4]"});
}

TEST(ConvStem, HalvesUntilThePatchGrid) {
  EXPECT_EQ(nn::ConvStem::stages(28, 4), 3);  // 28 -> 14 -> 7 -> 4
  EXPECT_EQ(nn::ConvStem::stages(28, 7), 2);
  EXPECT_EQ(nn::ConvStem::stages(28, 14), 1);
  EXPECT_EQ(nn::ConvStem::stages(28, 1), 5);  // ... -> 4 -> 2 -> 1
  EXPECT_EQ(nn::ConvStem::stages(32, 8), 2);
  EXPECT_EQ(nn::ConvStem::stages(32, 4), 3);
  EXPECT_EQ(nn::ConvStem::stages(28, 28), 0);  // no halving at all
  EXPECT_EQ(nn::ConvStem::stages(30, 10), 0);  // 30 -> 15 -> 8 skips 10
}

// conv (3x3, stride 2, pad 1) -> LayerNorm over channels (eps 1e-6) -> GELU (tanh), per
// stage, then a 1x1 conv to dim, all in double from the module's own parameters.
TEST(ConvStem, MatchesTheComposedMathsInDouble) {
  struct Case {
    int64_t channels, image, grid, width, dim;
  };
  for (const Case cs : {Case{3, 8, 2, 4, 5}, Case{1, 7, 2, 3, 6}, Case{1, 28, 4, 4, 8}}) {
    SCOPED_TRACE("channels " + std::to_string(cs.channels) + " image " + std::to_string(cs.image));
    Generator init(5);
    nn::ConvStem stem(cs.channels, cs.image, cs.grid, cs.width, cs.dim, init);
    ASSERT_EQ(static_cast<int64_t>(stem.convs.size()), nn::ConvStem::stages(cs.image, cs.grid));
    uint64_t seed = 100;
    for (auto& p : stem.parameters()) randomise(p.tensor, seed++);
    Generator g(6);
    const Tensor images = uniform({2, cs.channels, cs.image, cs.image}, g, -1.0f, 1.0f);
    const Tensor got = stem.forward(images);

    Images x{2, cs.image, cs.image, cs.channels, std::vector<double>(static_cast<size_t>(images.numel()))};
    for (int64_t b = 0; b < 2; ++b)  // NCHW -> channels last
      for (int64_t c = 0; c < cs.channels; ++c)
        for (int64_t y = 0; y < cs.image; ++y)
          for (int64_t xx = 0; xx < cs.image; ++xx)
            x.v[static_cast<size_t>(((b * cs.image + y) * cs.image + xx) * cs.channels + c)] =
                images.data()[((b * cs.channels + c) * cs.image + y) * cs.image + xx];
    for (size_t s = 0; s < stem.convs.size(); ++s) {
      const Tensor& w = stem.convs[s]->weight;  // [out, (i, j, c)]
      const int64_t out = w.shape()[0], in = x.C;
      std::vector<double> w4(static_cast<size_t>(out * in * 9));  // -> [out, c, i, j]
      for (int64_t o = 0; o < out; ++o)
        for (int64_t c = 0; c < in; ++c)
          for (int64_t t = 0; t < 9; ++t) w4[static_cast<size_t>((o * in + c) * 9 + t)] = w.data()[o * 9 * in + t * in + c];
      const std::vector<double> bias(stem.convs[s]->bias.data(), stem.convs[s]->bias.data() + out);
      x = conv(x, w4, bias, out, 3, 2, 1);
      const float* gamma = stem.norms[s]->gamma.data();
      const float* beta = stem.norms[s]->beta.data();
      for (size_t r = 0; r < x.v.size(); r += static_cast<size_t>(out)) {
        double mean = 0, var = 0;
        for (int64_t o = 0; o < out; ++o) mean += x.v[r + static_cast<size_t>(o)] / static_cast<double>(out);
        for (int64_t o = 0; o < out; ++o) var += std::pow(x.v[r + static_cast<size_t>(o)] - mean, 2) / static_cast<double>(out);
        for (int64_t o = 0; o < out; ++o) {
          double& v = x.v[r + static_cast<size_t>(o)];
          v = gelu_tanh((v - mean) / std::sqrt(var + 1e-6) * gamma[o] + beta[o]);
        }
      }
    }
    ASSERT_EQ(x.H, cs.grid);
    const Tensor& pw = stem.proj->weight;  // [dim, in]
    std::vector<double> want(static_cast<size_t>(2 * cs.grid * cs.grid * cs.dim));
    for (size_t r = 0; r < want.size() / static_cast<size_t>(cs.dim); ++r)
      for (int64_t d = 0; d < cs.dim; ++d) {
        double acc = stem.proj->bias.data()[d];
        for (int64_t c = 0; c < x.C; ++c) acc += pw.data()[d * x.C + c] * x.v[r * static_cast<size_t>(x.C) + static_cast<size_t>(c)];
        want[r * static_cast<size_t>(cs.dim) + static_cast<size_t>(d)] = acc;
      }
    ASSERT_EQ(got.shape(), Shape({2, cs.grid * cs.grid, cs.dim}));
    expect_near_all(got, want, 2e-5);
  }
}

TEST(ConvStemViT, LearnsAndReloads) {
  const std::string root = test::temp_dir("conv_stem_vit"), data = root + "/data";
  test::write_learnable_mnist(data, 1000, 200);
  json j = test::tiny_config(data, root + "/run");
  apply_override(j, "model.stem=conv");
  apply_override(j, "model.stem_width=8");
  apply_override(j, "train.epochs=2");
  const TrainResult r = train(parse_config(resolve_config(j)), test::quiet());
  ASSERT_EQ(r.status, TrainStatus::Finished);
  EXPECT_GT(r.summary["test_accuracy"].get<double>(), 0.3) << r.summary.dump();
  EXPECT_EQ(r.summary["tokens"].get<int64_t>(), 17);  // the 4x4 grid of patch 7 and the class token
  LoadedModel lm = load_model((fs::path(r.run_dir) / "last.ckpt").string());
  std::set<std::string> names;
  for (const auto& p : lm.model->parameters()) names.insert(p.name);
  for (const char* n : {"stem.conv.0.weight", "stem.conv.0.bias", "stem.norm.0.weight", "stem.conv.2.weight",
                        "stem.norm.2.bias", "stem.proj.weight"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_FALSE(names.count("stem.conv.3.weight"));
  EXPECT_FALSE(names.count("patch_embed.proj.weight"));
  DataSplit d = load_dataset("mnist", data);
  EXPECT_DOUBLE_EQ(evaluate(*lm.model, d.test, lm.norm, 64).accuracy, r.summary["test_accuracy"].get<double>());
  fs::remove_all(root);
}

TEST(ConvStemConfig, DefaultsAndRules) {
  const json base = test::tiny_config("unused", "unused");
  const json r = resolve_config(base);
  EXPECT_EQ(r["model"]["stem"], "patch");
  EXPECT_EQ(r["model"]["stem_width"], 16);
  json j = base;
  apply_override(j, "model.stem=conv");
  apply_override(j, "model.patch_size=1");
  expect_error([&] { resolve_config(j); }, {"model.stem 'conv'", "never gives 28", "model.patch_size"});
  j = base;
  j["model"]["stem"] = "resnet";
  expect_error([&] { resolve_config(j); }, {"model.stem", "patch", "conv", "resnet"});
  j = base;
  j["model"]["stem_width"] = 0;
  expect_error([&] { resolve_config(j); }, {"model.stem_width"});
  json seq = base;
  seq["data"] = {{"dataset", "synthetic:recall"}};
  seq["model"] = {{"type", "seq"}, {"stem", "conv"}};
  expect_error([&] { resolve_config(seq); }, {"model.stem 'conv'", "only model.type 'vit'"});
}

// The memory estimate that resolve_config checks counts the stem's parameters exactly (the
// estimate's formula is written apart from the modules, so a mismatch shows here).
TEST(ConvStemConfig, MemoryEstimateCountsTheStem) {
  for (const char* stem : {"patch", "conv"}) {
    json j = test::tiny_config("unused", "unused");
    apply_override(j, std::string("model.stem=") + stem);
    apply_override(j, "model.num_classes=10");
    const json r = resolve_config(j);
    const auto model = build_model(parse_config(r), 10, 1000);
    int64_t count = 0;
    for (const auto& p : model->parameters()) count += p.tensor.numel();
    EXPECT_EQ(config_detail::estimate_memory(r).parameters, static_cast<double>(count)) << stem;
  }
}
