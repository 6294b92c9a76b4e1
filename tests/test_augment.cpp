// The data side of the training recipe: augmentation ops (src/data/augment.cpp,
// trivial_augment.cpp), batch mixing (mix.cpp), the class-balanced subset (datasets.cpp), the
// loader that runs them (loader.cpp) and the config keys that turn them on (config.cpp).
// Suites: AugmentLoader, AugmentOps, AugmentRrc, AugmentErasing, AugmentMix, AugmentSubset,
// AugmentConfig. Every statistical check states its tolerance (about 5 standard deviations,
// so a correct implementation fails it about once in a few million runs).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "cli_run.hpp"
#include "config/config_schema.hpp"
#include "config/registries.hpp"
#include "data/augment.hpp"
#include "data/mix.hpp"
#include "data/trivial_augment.hpp"
#include "softlab/config.hpp"
#include "softlab/data.hpp"
#include "softlab/error.hpp"
#include "softlab/head.hpp"
#include "softlab/random.hpp"
#include "expect_error.hpp"

using namespace softlab;
using namespace softlab::augment;

namespace {
using test::expect_error;

// Images with random pixels; label i % classes.
Dataset make_random(int64_t n, int64_t c, int64_t h, int64_t w, int classes, uint64_t seed) {
  Dataset ds;
  ds.name = "random";
  ds.size = n;
  ds.channels = c;
  ds.height = h;
  ds.width = w;
  ds.num_classes = classes;
  Generator g(seed);
  ds.images.resize(static_cast<size_t>(n * c * h * w));
  for (auto& p : ds.images) p = static_cast<uint8_t>(g.below(256));
  for (int64_t i = 0; i < n; ++i) ds.labels.push_back(static_cast<int32_t>(i % classes));
  return ds;
}

// Image k has every pixel equal to k and label k: a pixel of a batch says which image it came from.
Dataset make_constant_per_image(int64_t n, int64_t c, int64_t h, int64_t w) {
  Dataset ds = make_random(n, c, h, w, static_cast<int>(n), 0);
  const int64_t bytes = c * h * w;
  for (int64_t k = 0; k < n; ++k)
    std::fill_n(ds.images.begin() + k * bytes, bytes, static_cast<uint8_t>(k));
  return ds;
}

std::vector<Batch> all_batches(BatchLoader& loader, int64_t epoch, int64_t first = 0) {
  loader.start_epoch(epoch, first);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.index == b.index && a.labels == b.labels && same_tensor(a.images, b.images) &&
         same_tensor(a.targets, b.targets);
}

uint64_t fnv(uint64_t h, const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ULL;
  }
  return h;
}

// A 1-channel image from rows of values.
std::vector<uint8_t> image(const std::vector<std::vector<int>>& rows) {
  std::vector<uint8_t> v;
  for (const auto& r : rows)
    for (int x : r) v.push_back(static_cast<uint8_t>(x));
  return v;
}

std::vector<uint8_t> apply(std::vector<uint8_t> img, int64_t C, int64_t H, int64_t W, TaOp op, double m) {
  std::vector<uint8_t> scratch;
  apply_ta_op(img.data(), C, H, W, op, m, scratch);
  return img;
}

// in(r, c) = 1 + W r + c on an H x W grey image.
std::vector<uint8_t> ramp(int64_t H, int64_t W) {
  std::vector<uint8_t> v(static_cast<size_t>(H * W));
  for (int64_t i = 0; i < H * W; ++i) v[i] = static_cast<uint8_t>(1 + i);
  return v;
}

json image_config() {
  return json::parse(R"({"data": {"dataset": "fashion-mnist"}, "model": {"head": {"type": "softmax"}}})");
}

}  // namespace

// ------------------------------------------------------------------------------- loader

// Hashes of every batch of two epochs, computed with the loader as it was before the recipe
// keys existed (commit fee2122, src/data/loader.cpp), on the data set and options below. The
// recipe keys at their defaults must reproduce them bit for bit.
TEST(AugmentLoader, DefaultsAreBitIdenticalToTheLoaderBeforeTheRecipe) {
  Dataset ds = make_random(37, 3, 6, 7, 5, 11);
  const uint64_t expected[2] = {0x25b9cde68ce5dcffULL, 0x633d1b170c0cbbddULL};
  for (int cfg = 0; cfg < 2; ++cfg) {
    // The Augment the config layer builds, so the schema's defaults are checked too.
    json j = image_config();
    if (cfg == 1) j["data"]["augment"] = {{"random_crop", 2}, {"hflip", true}};
    BatchLoader::Options o;
    o.batch_size = 8;
    o.seed = 3;
    o.norm = compute_normalization(ds);
    o.augment = parse_config(j).data.augment;
    o.num_classes = 5;
    BatchLoader loader(ds, o);
    uint64_t h = 1469598103934665603ULL;
    for (int e = 0; e < 2; ++e)
      for (const Batch& b : all_batches(loader, e)) {
        EXPECT_FALSE(b.targets.defined());  // no mixing configured: no soft targets
        h = fnv(h, b.images.data(), sizeof(float) * b.images.numel());
        h = fnv(h, b.labels.data(), sizeof(int32_t) * b.labels.size());
      }
    EXPECT_EQ(h, expected[cfg]) << "config " << cfg;
  }
}

// Every op on: the batches depend only on (seed, epoch, batch), with or without prefetch,
// and a run resumed mid-epoch sees exactly the uninterrupted run's batches.
TEST(AugmentLoader, EveryOpOnIsDeterministicAndResumes) {
  const Dataset ds = make_random(90, 3, 8, 8, 10, 5);
  BatchLoader::Options opt{.batch_size = 8,
                           .augment = {.hflip = true, .translate = 2, .random_resized_crop = true,
                                       .trivial_augment = true, .random_erasing = 0.5, .mixup = 0.8,
                                       .cutmix = 1.0, .mix_prob = 0.8},
                           .norm = compute_normalization(ds),
                           .seed = 17,
                           .num_classes = 10};
  BatchLoader full(ds, opt);
  std::vector<std::vector<Batch>> epochs;
  for (int e = 0; e < 3; ++e) epochs.push_back(all_batches(full, e));
  for (const auto& b : epochs[1]) ASSERT_TRUE(b.targets.defined());
  for (bool prefetch : {true, false}) {
    opt.prefetch = prefetch;
    BatchLoader resumed(ds, opt);
    const auto rest = all_batches(resumed, 1, 5);
    ASSERT_EQ(rest.size(), epochs[1].size() - 5);
    for (size_t i = 0; i < rest.size(); ++i) EXPECT_TRUE(same_batch(rest[i], epochs[1][i + 5])) << prefetch << " " << i;
    const auto next = all_batches(resumed, 2);
    ASSERT_EQ(next.size(), epochs[2].size());
    for (size_t i = 0; i < next.size(); ++i) EXPECT_TRUE(same_batch(next[i], epochs[2][i])) << prefetch << " " << i;
    const auto first = all_batches(resumed, 0);
    for (size_t i = 0; i < first.size(); ++i) EXPECT_TRUE(same_batch(first[i], epochs[0][i])) << prefetch << " " << i;
  }
  // The augmentation really is random: another seed, other pixels.
  opt.seed = 18;
  BatchLoader other(ds, opt);
  EXPECT_FALSE(same_batch(all_batches(other, 1)[0], epochs[1][0]));
}

// Mixing draws from its own stream: turning it on changes nothing of the per-image
// augmentation, which is what lets the mixing tests compare against an unmixed loader.
TEST(AugmentLoader, MixingKeepsThePerImageAugmentation) {
  const Dataset ds = make_random(24, 1, 6, 6, 24, 2);
  BatchLoader::Options opt{.batch_size = 6, .augment = {.hflip = true, .trivial_augment = true, .random_erasing = 0.5},
                           .seed = 4, .num_classes = 24};
  BatchLoader plain(ds, opt);
  opt.augment.mixup = 1.0;
  opt.augment.mix_prob = 0.0;  // configured but never applied: one-hot targets, images unchanged
  BatchLoader mixed(ds, opt);
  const auto a = all_batches(plain, 0), b = all_batches(mixed, 0);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(same_tensor(a[i].images, b[i].images)) << i;
    EXPECT_EQ(a[i].labels, b[i].labels);
    ASSERT_TRUE(b[i].targets.defined());
    const int64_t B = b[i].images.dim(0);
    ASSERT_EQ(b[i].targets.shape(), (Shape{B, 24}));
    for (int64_t r = 0; r < B; ++r)
      for (int64_t c = 0; c < 24; ++c)
        EXPECT_EQ(b[i].targets.at({r, c}), c == b[i].labels[r] ? 1.0f : 0.0f);
  }
}

TEST(AugmentLoader, TranslateShiftsWithZeroFill) {
  const int64_t n = 60, H = 5, W = 6, t = 2;
  Dataset ds = make_random(n, 1, H, W, 1, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < H * W; ++k) ds.images[i * H * W + k] = static_cast<uint8_t>(1 + 4 * k);
  BatchLoader loader(ds, {.batch_size = 20, .augment = {.translate = t}, .seed = 8});
  std::set<std::pair<int64_t, int64_t>> shifts;
  for (const auto& b : all_batches(loader, 0))
    for (int64_t i = 0; i < b.images.dim(0); ++i) {
      int matches = 0;
      for (int64_t dy = -t; dy <= t; ++dy)
        for (int64_t dx = -t; dx <= t; ++dx) {
          bool ok = true;
          for (int64_t y = 0; y < H && ok; ++y)
            for (int64_t x = 0; x < W && ok; ++x) {
              const int64_t sy = y + dy, sx = x + dx;
              const int v = sy < 0 || sy >= H || sx < 0 || sx >= W ? 0 : 1 + 4 * static_cast<int>(sy * W + sx);
              ok = b.images.at({i, 0, y, x}) == static_cast<float>(v) / 255.0f;
            }
          if (ok) {
            ++matches;
            shifts.insert({dy, dx});
          }
        }
      EXPECT_EQ(matches, 1) << "batch " << b.index << " image " << i;
    }
  EXPECT_GT(shifts.size(), 15u);  // 25 possible shifts, 60 draws
}

// With TrivialAugment on, every image the loader yields is one op of the list, at one of its
// 31 magnitudes and a sign, applied to the original.
TEST(AugmentLoader, TrivialAugmentAppliesOneListedOp) {
  const int64_t n = 40, C = 3, H = 6, W = 6;
  const Dataset ds = make_random(n, C, H, W, 1, 3);
  BatchLoader loader(ds, {.batch_size = 40, .shuffle = false, .augment = {.trivial_augment = true}, .seed = 2});
  const Batch b = all_batches(loader, 0).at(0);
  std::set<TaOp> seen;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<uint8_t> orig(ds.images.begin() + i * C * H * W, ds.images.begin() + (i + 1) * C * H * W);
    std::vector<uint8_t> got(orig.size());
    for (size_t k = 0; k < got.size(); ++k) got[k] = static_cast<uint8_t>(std::lround(b.images.data()[i * C * H * W + k] * 255.0f));
    bool found = false;
    for (TaOp op : ta_ops(C)) {
      for (int bin = 0; bin < kTaBins && !found; ++bin)
        for (double sign : {1.0, -1.0}) {
          if (apply(orig, C, H, W, op, sign * ta_magnitude(op, bin, H, W)) == got) {
            found = true;
            seen.insert(op);
            break;
          }
        }
    }
    EXPECT_TRUE(found) << "image " << i << " is no listed op of the original";
  }
  EXPECT_GT(seen.size(), 6u);  // 40 draws over 14 ops
}

TEST(AugmentLoader, RejectsWhatCannotApply) {
  const Dataset ds = make_random(10, 1, 4, 4, 10, 1);
  auto make = [](const Dataset& d, BatchLoader::Options o) { BatchLoader l(d, std::move(o)); };
  expect_error([&] { make(ds, {.augment = {.mixup = 0.8}}); }, {"num_classes"});
  expect_error([&] { make(ds, {.augment = {.cutmix = 1.0}, .num_classes = 5}); }, {"label 5", "5 classes"});
  expect_error([&] { make(ds, {.augment = {.random_crop = 1, .translate = 1}}); }, {"translate", "random_crop"});
  expect_error([&] { make(ds, {.augment = {.rrc_scale = {0.9, 0.5}}}); }, {"rrc_scale"});
  expect_error([&] { make(ds, {.augment = {.random_erasing = 1.5}}); }, {"random_erasing"});
  Dataset seq;
  seq.name = "seq";
  seq.size = 4;
  seq.seq_len = 3;
  seq.vocab = 5;
  seq.tokens.assign(12, 1);
  seq.targets.assign(12, 0);
  expect_error([&] { make(seq, {.augment = {.hflip = true}}); }, {"token sequences"});
  EXPECT_NO_THROW(make(seq, {}));
}

// ------------------------------------------------------------------- TrivialAugment ops

TEST(AugmentOps, IdentityAndZeroMagnitudesAreExact) {
  const int64_t C = 3, H = 5, W = 7;
  const Dataset ds = make_random(1, C, H, W, 1, 9);
  const std::vector<uint8_t> orig = ds.images;
  EXPECT_EQ(apply(orig, C, H, W, TaOp::Identity, 0.0), orig);
  for (TaOp op : {TaOp::ShearX, TaOp::ShearY, TaOp::TranslateX, TaOp::TranslateY, TaOp::Rotate, TaOp::Brightness,
                  TaOp::Color, TaOp::Contrast, TaOp::Sharpness})
    EXPECT_EQ(apply(orig, C, H, W, op, 0.0), orig) << ta_op_name(op);
  EXPECT_EQ(apply(orig, C, H, W, TaOp::Posterize, 8.0), orig);
  EXPECT_EQ(apply(orig, C, H, W, TaOp::Solarize, 256.0), orig);
  // Translation keeps whole pixels: 0.9 is no shift (torchvision's int()).
  EXPECT_EQ(apply(orig, C, H, W, TaOp::TranslateX, 0.9), orig);
}

TEST(AugmentOps, TranslateMovesContentByWholePixels) {
  const int64_t H = 4, W = 5;
  const auto in = ramp(H, W);
  const auto right = apply(in, 1, H, W, TaOp::TranslateX, 2.7);   // 2 pixels right
  const auto up = apply(in, 1, H, W, TaOp::TranslateY, -1.0);     // 1 pixel up
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      EXPECT_EQ(right[y * W + x], x >= 2 ? in[y * W + x - 2] : 0) << y << "," << x;
      EXPECT_EQ(up[y * W + x], y + 1 < H ? in[(y + 1) * W + x] : 0) << y << "," << x;
    }
}

TEST(AugmentOps, ShearAboutTheTopLeftCorner) {
  // Shear x by m: row y reads from x + round(m (y + 1/2)) (torchvision's sign: positive m
  // moves lower rows left). For m = 0.5 the offsets of rows 0..3 are 0, 1, 1, 2; for -0.5 their
  // negatives. Shear y is the same with rows and columns exchanged.
  const int64_t H = 4, W = 6;
  const auto in = ramp(H, W);
  const int off[4] = {0, 1, 1, 2};
  const auto pos = apply(in, 1, H, W, TaOp::ShearX, 0.5), neg = apply(in, 1, H, W, TaOp::ShearX, -0.5);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const int64_t sp = x + off[y], sn = x - off[y];
      EXPECT_EQ(pos[y * W + x], sp < W ? in[y * W + sp] : 0) << y << "," << x;
      EXPECT_EQ(neg[y * W + x], sn >= 0 ? in[y * W + sn] : 0) << y << "," << x;
    }
  const auto in_t = ramp(W, H);  // 6 rows, 4 columns
  const auto sy = apply(in_t, 1, W, H, TaOp::ShearY, 0.5);
  for (int64_t y = 0; y < W; ++y)
    for (int64_t x = 0; x < H; ++x) {
      const int64_t s = y + off[x];
      EXPECT_EQ(sy[y * H + x], s < W ? in_t[s * H + x] : 0) << y << "," << x;
    }
}

TEST(AugmentOps, RotateTurnsCounterClockwiseAboutTheCentre) {
  const int64_t N = 4;
  const auto in = ramp(N, N);
  const auto r90 = apply(in, 1, N, N, TaOp::Rotate, 90.0), r180 = apply(in, 1, N, N, TaOp::Rotate, 180.0);
  const auto rm90 = apply(in, 1, N, N, TaOp::Rotate, -90.0);
  for (int64_t y = 0; y < N; ++y)
    for (int64_t x = 0; x < N; ++x) {
      EXPECT_EQ(r90[y * N + x], in[x * N + (N - 1 - y)]) << y << "," << x;  // the right column goes to the top
      EXPECT_EQ(rm90[y * N + x], in[(N - 1 - x) * N + y]) << y << "," << x;
      EXPECT_EQ(r180[y * N + x], in[(N - 1 - y) * N + (N - 1 - x)]) << y << "," << x;
    }
  // A small angle about the centre keeps the centre and fills the corners it uncovers with 0.
  const int64_t M = 9;
  std::vector<uint8_t> ones(M * M, 200);
  const auto r30 = apply(ones, 1, M, M, TaOp::Rotate, 30.0);
  EXPECT_EQ(r30[4 * M + 4], 200);
  EXPECT_EQ(r30[0], 0);
  EXPECT_EQ(r30[M * M - 1], 0);
}

TEST(AugmentOps, PhotometricOpsMatchHandComputedValues) {
  // Brightness: factor 1 + m times the pixel, clamped.
  EXPECT_EQ(apply(image({{100, 200, 0, 3}}), 1, 1, 4, TaOp::Brightness, 0.5), image({{150, 255, 0, 5}}));  // 4.5 -> 5
  EXPECT_EQ(apply(image({{100, 200, 0, 3}}), 1, 1, 4, TaOp::Brightness, -0.5), image({{50, 100, 0, 2}}));  // 1.5 -> 2
  // Contrast: blend with the mean (100 here).
  EXPECT_EQ(apply(image({{0, 100, 200, 100}}), 1, 1, 4, TaOp::Contrast, -0.5), image({{50, 100, 150, 100}}));
  EXPECT_EQ(apply(image({{0, 100, 200, 100}}), 1, 1, 4, TaOp::Contrast, 1.0), image({{0, 100, 255, 100}}));
  // Solarize: values at or above the threshold are inverted.
  EXPECT_EQ(apply(image({{0, 127, 128, 200, 255}}), 1, 1, 5, TaOp::Solarize, 128.0), image({{0, 127, 127, 55, 0}}));
  // Posterize 3 bits: keep the top three bits (mask 0xE0).
  EXPECT_EQ(apply(image({{255, 31, 100, 224}}), 1, 1, 4, TaOp::Posterize, 3.0), image({{224, 0, 96, 224}}));
  // Autocontrast: 50..150 stretched to 0..255 (110 -> 60 * 2.55 = 153).
  EXPECT_EQ(apply(image({{50, 110, 150}}), 1, 1, 3, TaOp::AutoContrast, 0.0), image({{0, 153, 255}}));
  EXPECT_EQ(apply(image({{7, 7, 7}}), 1, 1, 3, TaOp::AutoContrast, 0.0), image({{7, 7, 7}}));  // flat: unchanged
  // Sharpness on a 3x3 image with one bright centre: the smoothed centre is 5 * 130 / 13 = 50,
  // so factor 2 gives 50 + 2 (130 - 50) = 210; the border is never smoothed.
  EXPECT_EQ(apply(image({{0, 0, 0}, {0, 130, 0}, {0, 0, 0}}), 1, 3, 3, TaOp::Sharpness, 1.0),
            image({{0, 0, 0}, {0, 210, 0}, {0, 0, 0}}));
  // Colour on one RGB pixel (100, 50, 0): grey 0.299*100 + 0.587*50 = 59.25. Factor 0 greys it,
  // factor 2 pushes each channel away from grey: 140.75, 40.75, -59.25.
  EXPECT_EQ(apply(image({{100}, {50}, {0}}), 3, 1, 1, TaOp::Color, -1.0), image({{59}, {59}, {59}}));
  EXPECT_EQ(apply(image({{100}, {50}, {0}}), 3, 1, 1, TaOp::Color, 1.0), image({{141}, {41}, {0}}));
  // Equalize (PIL's rule) on 1024 pixels: 512 at 0, 256 at 100, 256 at 200. The step is
  // (1024 - 256) / 255 = 3; value v maps to (1 + pixels below v) / 3: 0 -> 0, 100 -> 513 / 3 =
  // 171, 200 -> 769 / 3 = 256, clamped to 255.
  std::vector<uint8_t> eq(1024, 0);
  std::fill(eq.begin() + 512, eq.begin() + 768, 100);
  std::fill(eq.begin() + 768, eq.end(), 200);
  const auto out = apply(eq, 1, 32, 32, TaOp::Equalize, 0.0);
  EXPECT_EQ(out[0], 0);
  EXPECT_EQ(out[600], 171);
  EXPECT_EQ(out[900], 255);
  // Too few pixels to spread (step 0): unchanged.
  EXPECT_EQ(apply(image({{10, 10, 20, 30}}), 1, 1, 4, TaOp::Equalize, 0.0), image({{10, 10, 20, 30}}));
}

TEST(AugmentOps, DrawsCoverTheListUniformlyWithinRanges) {
  // The op list: 13 for grey (no colour), 14 for RGB; the magnitude table's end points.
  EXPECT_EQ(ta_ops(1).size(), 13u);
  EXPECT_EQ(ta_ops(3).size(), 14u);
  const std::vector<TaOp> grey = ta_ops(1);
  EXPECT_EQ(std::count(grey.begin(), grey.end(), TaOp::Color), 0);
  EXPECT_DOUBLE_EQ(ta_magnitude(TaOp::ShearX, 30, 28, 28), kTaMaxShear);
  EXPECT_DOUBLE_EQ(ta_magnitude(TaOp::TranslateX, 30, 28, 32), 150.0 / 331.0 * 32);
  EXPECT_DOUBLE_EQ(ta_magnitude(TaOp::Rotate, 15, 28, 28), 15.0);
  EXPECT_DOUBLE_EQ(ta_magnitude(TaOp::Posterize, 0, 28, 28), 8.0);
  EXPECT_DOUBLE_EQ(ta_magnitude(TaOp::Posterize, 30, 28, 28), 2.0);
  EXPECT_DOUBLE_EQ(ta_magnitude(TaOp::Solarize, 0, 28, 28), 255.0);
  EXPECT_DOUBLE_EQ(ta_magnitude(TaOp::Solarize, 30, 28, 28), 0.0);
  // 13,000 draws on grey images: each op 1/13 of them, tolerance 5 sd (sqrt(1000 * 12/13)).
  Generator g(1);
  std::map<TaOp, int> count;
  int negative = 0, signed_draws = 0;
  const int draws = 13000;
  for (int i = 0; i < draws; ++i) {
    const TaDraw d = draw_trivial_augment(g, 1, 28, 28);
    ++count[d.op];
    const double a = std::fabs(d.magnitude);
    switch (d.op) {
      case TaOp::ShearX: case TaOp::ShearY: EXPECT_LE(a, kTaMaxShear + 1e-12); break;
      case TaOp::TranslateX: case TaOp::TranslateY: EXPECT_LE(a, kTaMaxTranslate * 28 + 1e-9); break;
      case TaOp::Rotate: EXPECT_LE(a, kTaMaxRotate + 1e-9); break;
      case TaOp::Posterize: EXPECT_TRUE(d.magnitude >= 2 && d.magnitude <= 8) << d.magnitude; break;
      case TaOp::Solarize: EXPECT_TRUE(d.magnitude >= 0 && d.magnitude <= 255) << d.magnitude; break;
      case TaOp::Identity: case TaOp::AutoContrast: case TaOp::Equalize: EXPECT_EQ(d.magnitude, 0.0); break;
      default: EXPECT_LE(a, kTaMaxEnhance + 1e-12); break;
    }
    if (ta_signed(d.op) && d.magnitude != 0.0) {
      ++signed_draws;
      negative += d.magnitude < 0.0;
    }
  }
  EXPECT_EQ(count.count(TaOp::Color), 0u);
  EXPECT_EQ(count.size(), 13u);
  for (const auto& [op, c] : count) EXPECT_NEAR(c, 1000, 5 * 30.4) << ta_op_name(op);
  EXPECT_NEAR(static_cast<double>(negative) / signed_draws, 0.5, 5 * 0.5 / std::sqrt(signed_draws));
  Generator rgb(2);
  std::set<TaOp> ops3;
  for (int i = 0; i < 2000; ++i) ops3.insert(draw_trivial_augment(rgb, 3, 32, 32).op);
  EXPECT_EQ(ops3.size(), 14u);
}

// ------------------------------------------------------------------ random-resized crop

TEST(AugmentRrc, BilinearResamplingMatchesHandValues) {
  // One row [0, 100, 200, 250]: a 2-pixel box upsampled to 4 pixels samples at source
  // coordinates 0 (clamped from -0.25), 0.25, 0.75, 1.25 (clamped to the last pixel).
  const auto in = image({{0, 100, 200, 250}});
  std::vector<uint8_t> out(4);
  resized_crop(in.data(), out.data(), 1, 1, 4, Box{.top = 0, .left = 0, .height = 1, .width = 2});
  EXPECT_EQ(out, image({{0, 25, 75, 100}}));
  resized_crop(in.data(), out.data(), 1, 1, 4, Box{.top = 0, .left = 2, .height = 1, .width = 2});
  EXPECT_EQ(out, image({{200, 213, 238, 250}}));  // 212.5 and 237.5 round up
  // The whole image as the box: itself.
  const Dataset ds = make_random(1, 3, 5, 6, 1, 4);
  std::vector<uint8_t> same(ds.images.size());
  resized_crop(ds.images.data(), same.data(), 3, 5, 6, Box{.top = 0, .left = 0, .height = 5, .width = 6});
  EXPECT_EQ(same, ds.images);
}

TEST(AugmentRrc, BoxesFitTheImageAndTheRanges) {
  // Over many draws, every box lies in the image and its rounded sides are consistent with an
  // area in scale and a width / height in ratio: sqrt(area * ratio) rounds to w, so
  // (w - 1/2)(h - 1/2) <= area <= (w + 1/2)(h + 1/2), and similarly for the ratio.
  Generator g(5);
  const int64_t H = 28, W = 28;
  const std::array<double, 2> scale{0.35, 1.0}, ratio{0.75, 4.0 / 3.0};
  double min_area = 1, max_area = 0, min_ratio = 10, max_ratio = 0;
  for (int i = 0; i < 5000; ++i) {
    const Box b = draw_resized_crop_box(g, H, W, scale, ratio);
    ASSERT_TRUE(b.top >= 0 && b.left >= 0 && b.height > 0 && b.width > 0 && b.top + b.height <= H &&
                b.left + b.width <= W);
    const double w = static_cast<double>(b.width), h = static_cast<double>(b.height), A = H * W;
    EXPECT_LE((w - 0.5) * (h - 0.5), scale[1] * A);
    EXPECT_GE((w + 0.5) * (h + 0.5), scale[0] * A);
    EXPECT_LE((w - 0.5) / (h + 0.5), ratio[1]);
    EXPECT_GE((w + 0.5) / (h - 0.5), ratio[0]);
    min_area = std::min(min_area, w * h / A);
    max_area = std::max(max_area, w * h / A);
    min_ratio = std::min(min_ratio, w / h);
    max_ratio = std::max(max_ratio, w / h);
  }
  EXPECT_LT(min_area, 0.4);  // the draws cover the range
  EXPECT_GT(max_area, 0.9);
  EXPECT_LT(min_ratio, 0.8);
  EXPECT_GT(max_ratio, 1.25);
  // Scale (1, 1) and ratio (1, 1) on a square image: the whole image, every time.
  for (int i = 0; i < 50; ++i) {
    const Box b = draw_resized_crop_box(g, H, W, {1.0, 1.0}, {1.0, 1.0});
    EXPECT_TRUE(b.top == 0 && b.left == 0 && b.height == H && b.width == W);
  }
}

TEST(AugmentRrc, LoaderKeepsTheSizeAndUnitRangesAreTheIdentity) {
  const Dataset ds = make_random(20, 3, 8, 8, 4, 6);
  const Normalization norm = compute_normalization(ds);
  BatchLoader plain(ds, {.batch_size = 5, .augment = {.hflip = true}, .norm = norm, .seed = 1});
  BatchLoader unit(ds, {.batch_size = 5,
                        .augment = {.hflip = true, .random_resized_crop = true, .rrc_scale = {1.0, 1.0},
                                    .rrc_ratio = {1.0, 1.0}},
                        .norm = norm, .seed = 1});
  BatchLoader rrc(ds, {.batch_size = 5, .augment = {.random_resized_crop = true}, .norm = norm, .seed = 1});
  const auto a = all_batches(plain, 0), b = all_batches(unit, 0), c = all_batches(rrc, 0);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    // The crop draws come before the flip's, so the flips differ: compare up to mirroring.
    for (int64_t k = 0; k < a[i].images.dim(0); ++k) {
      bool same = true, mirror = true;
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t y = 0; y < 8; ++y)
          for (int64_t x = 0; x < 8; ++x) {
            const float v = b[i].images.at({k, ch, y, x});
            same = same && v == a[i].images.at({k, ch, y, x});
            mirror = mirror && v == a[i].images.at({k, ch, y, 7 - x});
          }
      EXPECT_TRUE(same || mirror) << i << " " << k;
    }
    EXPECT_EQ(c[i].images.shape(), a[i].images.shape());
    EXPECT_FALSE(same_tensor(c[i].images, a[i].images));
  }
}

// ----------------------------------------------------------------------- random erasing

TEST(AugmentErasing, BoxesWithinTheAreaAndRatioBounds) {
  Generator g(7);
  const int64_t H = 28, W = 28;
  const double A = H * W;
  double min_area = 1, max_area = 0, min_ratio = 10, max_ratio = 0;
  int placed = 0;
  for (int i = 0; i < 5000; ++i) {
    const EraseDraw e = draw_erase_box(g, H, W, 1.0);
    ASSERT_TRUE(e.gated);
    if (!e.placed) continue;
    ++placed;
    const Box& b = e.box;
    ASSERT_TRUE(b.height < H && b.width < W && b.top >= 0 && b.left >= 0 && b.top + b.height <= H &&
                b.left + b.width <= W);
    const double h = static_cast<double>(b.height), w = static_cast<double>(b.width);
    // Rounded sides of an area in [0.02, 1/3] of the image and a height / width in [0.3, 1/0.3].
    EXPECT_LE((h - 0.5) * (w - 0.5), kEraseMaxArea * A);
    EXPECT_GE((h + 0.5) * (w + 0.5), kEraseMinArea * A);
    EXPECT_LE((h - 0.5) / (w + 0.5), kEraseMaxRatio);
    EXPECT_GE((h + 0.5) / (w - 0.5), kEraseMinRatio);
    min_area = std::min(min_area, h * w / A);
    max_area = std::max(max_area, h * w / A);
    min_ratio = std::min(min_ratio, h / w);
    max_ratio = std::max(max_ratio, h / w);
  }
  EXPECT_GT(placed, 4990);  // ten tries almost never all miss
  EXPECT_LT(min_area, 0.03);
  EXPECT_GT(max_area, 0.3);
  EXPECT_LT(min_ratio, 0.4);
  EXPECT_GT(max_ratio, 2.5);
  // The gate: 20,000 draws at p = 0.3, tolerance 5 sd (sd = sqrt(0.3 * 0.7 / 20000) = 0.0032).
  int gated = 0;
  for (int i = 0; i < 20000; ++i) gated += draw_erase_box(g, H, W, 0.3).gated;
  EXPECT_NEAR(gated / 20000.0, 0.3, 0.016);
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(draw_erase_box(g, H, W, 0.0).gated);
}

TEST(AugmentErasing, LoaderErasesWithTheProbabilityInNormalisedSpace) {
  // Constant images (value 128): an erased pixel holds a normal draw, never exactly 128/255.
  const int64_t n = 2000, H = 16, W = 16;
  Dataset ds = make_random(n, 2, H, W, 1, 0);
  std::fill(ds.images.begin(), ds.images.end(), 128);
  BatchLoader loader(ds, {.batch_size = 250, .augment = {.random_erasing = 0.4}, .seed = 3});
  const float base = 128.0f / 255.0f;
  int erased = 0;
  double sum = 0, sum_sq = 0;
  int64_t count = 0;
  for (const auto& b : all_batches(loader, 0))
    for (int64_t i = 0; i < b.images.dim(0); ++i) {
      int64_t y0 = H, y1 = -1, x0 = W, x1 = -1, changed = 0;
      for (int64_t c = 0; c < 2; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) {
            const float v = b.images.at({i, c, y, x});
            if (v == base) continue;
            ++changed;
            sum += v;
            sum_sq += static_cast<double>(v) * v;
            ++count;
            y0 = std::min(y0, y), y1 = std::max(y1, y), x0 = std::min(x0, x), x1 = std::max(x1, x);
          }
      if (changed == 0) continue;
      ++erased;
      // One rectangle, in every channel.
      EXPECT_EQ(changed, 2 * (y1 - y0 + 1) * (x1 - x0 + 1));
    }
  // Tolerance 5 sd: sqrt(0.4 * 0.6 / 2000) = 0.011.
  EXPECT_NEAR(erased / 2000.0, 0.4, 0.055);
  // The fill is standard normal: mean 0, variance 1 (tolerances far above sampling error).
  ASSERT_GT(count, 10000);
  EXPECT_NEAR(sum / count, 0.0, 0.05);
  EXPECT_NEAR(sum_sq / count, 1.0, 0.05);
}

// ------------------------------------------------------------------------------- mixing

TEST(AugmentMix, BetaSamplerMoments) {
  // 40,000 draws each: mean within 5 sd of a / (a + b), variance within 5% of
  // ab / ((a + b)^2 (a + b + 1)).
  for (auto [a, b] : std::vector<std::pair<double, double>>{{0.8, 0.8}, {1.0, 1.0}, {2.0, 5.0}, {0.2, 0.2}}) {
    Generator g(11);
    const int n = 40000;
    double s = 0, q = 0;
    for (int i = 0; i < n; ++i) {
      const double x = sample_beta(g, a, b);
      ASSERT_TRUE(x >= 0.0 && x <= 1.0) << x;
      s += x;
      q += x * x;
    }
    const double mean = s / n, var = q / n - mean * mean;
    const double m = a / (a + b), v = a * b / ((a + b) * (a + b) * (a + b + 1));
    EXPECT_NEAR(mean, m, 5 * std::sqrt(v / n)) << a << "," << b;
    EXPECT_NEAR(var, v, 0.05 * v) << a << "," << b;
  }
}

TEST(AugmentMix, MixupBlendsEachImageWithItsReversedPartner) {
  const int64_t n = 64, C = 2, H = 4, W = 4, B = 8;
  const Dataset ds = make_random(n, C, H, W, static_cast<int>(n), 12);  // label = index: partners differ
  const Normalization norm = compute_normalization(ds);
  BatchLoader::Options opt{.batch_size = B, .augment = {.hflip = true}, .norm = norm, .seed = 6, .num_classes = n};
  BatchLoader plain(ds, opt);
  opt.augment.mixup = 0.8;
  BatchLoader mixed(ds, opt);
  const auto a = all_batches(plain, 0), m = all_batches(mixed, 0);
  ASSERT_EQ(a.size(), m.size());
  std::set<float> lambdas;
  for (size_t bi = 0; bi < a.size(); ++bi) {
    const Batch &x = a[bi], &y = m[bi];
    ASSERT_TRUE(y.targets.defined());
    ASSERT_EQ(y.targets.shape(), (Shape{B, n}));
    const float lam = y.targets.at({0, x.labels[0]});
    EXPECT_GT(lam, 0.0f);
    EXPECT_LT(lam, 1.0f);
    lambdas.insert(lam);
    for (int64_t i = 0; i < B; ++i) {
      const int64_t j = B - 1 - i;
      double row = 0;
      for (int64_t c = 0; c < n; ++c) row += y.targets.at({i, c});
      EXPECT_NEAR(row, 1.0, 1e-6);
      EXPECT_FLOAT_EQ(y.targets.at({i, x.labels[i]}), lam);
      EXPECT_NEAR(y.targets.at({i, x.labels[j]}), 1.0 - lam, 1e-6);
      EXPECT_EQ(y.labels[i], lam >= 0.5f ? x.labels[i] : x.labels[j]);  // the larger share
      for (int64_t k = 0; k < C * H * W; ++k) {
        const float va = x.images.data()[i * C * H * W + k], vb = x.images.data()[j * C * H * W + k];
        EXPECT_NEAR(y.images.data()[i * C * H * W + k], lam * va + (1.0f - lam) * vb, 1e-5) << bi << " " << i;
      }
    }
  }
  EXPECT_EQ(lambdas.size(), a.size());  // one lambda per batch, a new one each batch
}

TEST(AugmentMix, CutMixPastesThePartnersBoxAndLambdaIsTheKeptArea) {
  // Image k is all k: each pixel of a mixed row says whether it is the row's own or its partner's.
  const int64_t n = 120, H = 12, W = 10, B = 6;
  const Dataset ds = make_constant_per_image(n, 3, H, W);
  BatchLoader loader(ds, {.batch_size = B, .augment = {.cutmix = 1.0}, .seed = 21, .num_classes = n});
  BatchLoader plain(ds, {.batch_size = B, .seed = 21});  // the same order, unmixed
  const auto unmixed = all_batches(plain, 0);
  int boxes = 0;
  for (const auto& b : all_batches(loader, 0)) {
    const std::vector<int32_t>& own = unmixed.at(b.index).labels;  // = each row's image value
    int64_t y0 = H, y1 = -1, x0 = W, x1 = -1, pasted = 0;
    for (int64_t i = 0; i < B; ++i) {
      const int partner = own[B - 1 - i];
      int64_t row_pasted = 0;
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) {
            const int v = static_cast<int>(std::lround(b.images.at({i, c, y, x}) * 255));
            ASSERT_TRUE(v == own[i] || v == partner) << "pixel from neither image";
            if (v == own[i]) continue;
            ++row_pasted;
            if (i == 0) y0 = std::min(y0, y), y1 = std::max(y1, y), x0 = std::min(x0, x), x1 = std::max(x1, x);
            // The same box in every row.
            if (i > 0) {
              EXPECT_TRUE(y >= y0 && y <= y1 && x >= x0 && x <= x1) << "row " << i;
            }
          }
      if (i == 0) pasted = row_pasted;
      EXPECT_EQ(row_pasted, pasted) << "row " << i;
    }
    const float lam = b.targets.at({0, own[0]});
    if (pasted == 0) {  // an empty box: the batch stays as it is, one-hot
      EXPECT_EQ(lam, 1.0f);
      continue;
    }
    ++boxes;
    const int64_t area = (y1 - y0 + 1) * (x1 - x0 + 1);
    EXPECT_EQ(pasted, 3 * area);  // one rectangle, in every channel
    EXPECT_FLOAT_EQ(lam, 1.0f - static_cast<float>(area) / static_cast<float>(H * W));
    EXPECT_NEAR(b.targets.at({0, own[B - 1]}), 1.0f - lam, 1e-6);
    EXPECT_EQ(b.labels[0], lam >= 0.5f ? own[0] : own[B - 1]);
  }
  EXPECT_GT(boxes, 10);  // of 20 batches
}

TEST(AugmentMix, MixProbAndSwitchProbAreRespected) {
  // 4,000 draws each, tolerance 5 sd (sd <= sqrt(0.25 / 4000) = 0.0079).
  Augment a{.mixup = 0.8, .cutmix = 1.0, .mix_prob = 0.6, .switch_prob = 0.3};
  Generator g(3);
  int mixed = 0, cut = 0;
  for (int i = 0; i < 4000; ++i) {
    const MixDraw m = draw_mix(g, a, 32, 32);
    if (!m.cutmix && m.lambda == 1.0) continue;  // the mix_prob draw said no
    ++mixed;
    cut += m.cutmix;
  }
  EXPECT_NEAR(mixed / 4000.0, 0.6, 0.04);
  EXPECT_NEAR(static_cast<double>(cut) / mixed, 0.3, 0.05);
  // Only one of them on: no switching. Mixup mixes every batch (mix_prob 1); CutMix too,
  // except when its box rounds to nothing (lambda near 1), which leaves the batch unmixed.
  int empty_boxes = 0;
  for (auto [mx, cm] : std::vector<std::pair<double, double>>{{0.5, 0.0}, {0.0, 0.5}})
    for (int i = 0; i < 200; ++i) {
      const MixDraw m = draw_mix(g, Augment{.mixup = mx, .cutmix = cm}, 32, 32);
      EXPECT_EQ(m.cutmix, cm > 0.0);
      EXPECT_TRUE(m.lambda >= 0.0 && m.lambda <= 1.0);
      EXPECT_EQ(m.mixed, m.lambda < 1.0);
      if (mx > 0.0) {
        EXPECT_TRUE(m.mixed);
      }
      empty_boxes += m.cutmix && m.box.height * m.box.width == 0;
      if (m.cutmix) {
        EXPECT_EQ(m.mixed, m.box.height * m.box.width > 0);
      }
    }
  EXPECT_LT(empty_boxes, 100);
  // CutMix's lambda is the kept share of its box, exactly.
  for (int i = 0; i < 200; ++i) {
    const MixDraw m = draw_mix(g, Augment{.cutmix = 1.0}, 28, 28);
    EXPECT_DOUBLE_EQ(m.lambda, 1.0 - static_cast<double>(m.box.height * m.box.width) / (28.0 * 28.0));
    EXPECT_TRUE(m.box.top >= 0 && m.box.left >= 0 && m.box.top + m.box.height <= 28 && m.box.left + m.box.width <= 28);
  }
}

TEST(AugmentMix, OddBatchMiddleRowKeepsItsImage) {
  const int64_t B = 5, n = 4;
  std::vector<float> x(B * n);
  for (size_t k = 0; k < x.size(); ++k) x[k] = static_cast<float>(k);
  const std::vector<float> before = x;
  std::vector<int32_t> labels{0, 1, 2, 3, 4};
  std::vector<float> targets(B * 5);
  apply_mix(MixDraw{.mixed = true, .cutmix = false, .lambda = 0.25}, x.data(), B, 1, 2, 2, labels, targets.data(), 5);
  for (int64_t k = 0; k < n; ++k) EXPECT_EQ(x[2 * n + k], before[2 * n + k]);
  EXPECT_FLOAT_EQ(targets[2 * 5 + 2], 1.0f);
  EXPECT_EQ(labels, (std::vector<int32_t>{4, 3, 2, 1, 0}));  // lambda < 1/2: the partner's class
  for (int64_t k = 0; k < n; ++k) EXPECT_FLOAT_EQ(x[k], 0.25f * before[k] + 0.75f * before[4 * n + k]);
}

// ------------------------------------------------------------------------------- subset

TEST(AugmentSubset, BalancedDeterministicAndInDataSetOrder) {
  // 10 classes with 30..39 images each; image bytes encode the image's index.
  Dataset ds = make_random(0, 1, 2, 2, 10, 0);
  for (int c = 0; c < 10; ++c)
    for (int k = 0; k < 30 + c; ++k) ds.labels.push_back(c);
  std::shuffle(ds.labels.begin(), ds.labels.end(), std::mt19937(1));
  ds.size = static_cast<int64_t>(ds.labels.size());
  for (int64_t i = 0; i < ds.size; ++i)
    for (uint8_t byte : {static_cast<uint8_t>(i & 255), static_cast<uint8_t>(i >> 8), uint8_t{7}, uint8_t{9}})
      ds.images.push_back(byte);
  ds.class_names = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};

  const Dataset s = class_balanced_subset(ds, 53, 7);
  EXPECT_EQ(s.size, 53);
  EXPECT_EQ(s.labels.size(), 53u);
  EXPECT_EQ(s.images.size(), 53u * 4);
  EXPECT_EQ(s.num_classes, 10);
  EXPECT_EQ(s.class_names, ds.class_names);
  std::vector<int> counts(10, 0);
  for (int32_t l : s.labels) ++counts[l];
  EXPECT_EQ(counts, (std::vector<int>{6, 6, 6, 5, 5, 5, 5, 5, 5, 5}));  // remainder 3 to classes 0..2
  // Each kept image is one of the originals with its own label, each at most once, in order.
  int64_t last = -1;
  for (int64_t i = 0; i < s.size; ++i) {
    int64_t found = -1;
    for (int64_t k = last + 1; k < ds.size && found < 0; ++k)
      if (std::equal(s.images.begin() + i * 4, s.images.begin() + i * 4 + 4, ds.images.begin() + k * 4) &&
          ds.labels[k] == s.labels[i])
        found = k;
    ASSERT_GE(found, 0) << "subset image " << i << " is not a later original image";
    last = found;
  }
  const Dataset again = class_balanced_subset(ds, 53, 7), other = class_balanced_subset(ds, 53, 8);
  EXPECT_EQ(again.images, s.images);
  EXPECT_EQ(again.labels, s.labels);
  EXPECT_NE(other.images, s.images);  // another seed, other images
  // A balanced set asked for whole: itself, in its order.
  const Dataset balanced = make_random(40, 1, 3, 3, 4, 2);
  const Dataset all = class_balanced_subset(balanced, 40, 7);
  EXPECT_EQ(all.images, balanced.images);
  EXPECT_EQ(all.labels, balanced.labels);
}

TEST(AugmentSubset, ErrorsNameTheKeyTheNumbersAndTheClass) {
  Dataset ds = make_random(20, 1, 2, 2, 4, 1);  // 5 images per class
  ds.labels[0] = 1;                             // class 0: 4 images, class 1: 6
  ds.class_names = {"zero", "one", "two", "three"};
  expect_error([&] { class_balanced_subset(ds, 21, 0); }, {"data.subset = 21", "holds 20 images"});
  expect_error([&] { class_balanced_subset(ds, 0, 0); }, {"data.subset = 0"});
  expect_error([&] { class_balanced_subset(ds, 20, 0); }, {"data.subset = 20", "class 0 ('zero')", "needs 5", "only 4"});
  EXPECT_NO_THROW(class_balanced_subset(ds, 16, 0));  // 4 of each
  // 17: the remainder goes to the lowest class, which is the short one.
  expect_error([&] { class_balanced_subset(ds, 17, 0); }, {"data.subset = 17", "class 0", "needs 5", "only 4"});
  Dataset seq;
  seq.name = "seq";
  seq.size = 2;
  seq.seq_len = 2;
  expect_error([&] { class_balanced_subset(seq, 1, 0); }, {"data.subset", "token sequences"});
}

// ------------------------------------------------------------------------------- config

TEST(AugmentConfig, KeysParseAndDefaultToOff) {
  const Config d = parse_config(image_config());
  const Augment off;
  const Augment& a = d.data.augment;
  EXPECT_EQ(a.translate, off.translate);
  EXPECT_EQ(a.random_resized_crop, off.random_resized_crop);
  EXPECT_EQ(a.rrc_scale, off.rrc_scale);
  EXPECT_EQ(a.rrc_ratio, off.rrc_ratio);
  EXPECT_EQ(a.trivial_augment, off.trivial_augment);
  EXPECT_EQ(a.random_erasing, off.random_erasing);
  EXPECT_EQ(a.mixup, off.mixup);
  EXPECT_EQ(a.cutmix, off.cutmix);
  EXPECT_EQ(a.mix_prob, off.mix_prob);
  EXPECT_EQ(a.switch_prob, off.switch_prob);
  EXPECT_FALSE(a.mixes());
  EXPECT_EQ(d.resolved["data"]["subset"], 0);
  EXPECT_EQ(d.resolved["data"]["augment"]["rrc_ratio"][1].get<double>(), 4.0 / 3.0);

  json j = image_config();
  j["data"]["subset"] = 1000;
  j["data"]["augment"] = {{"translate", 3},       {"random_resized_crop", true}, {"rrc_scale", {0.5, 0.9}},
                          {"rrc_ratio", {0.5, 2}}, {"trivial_augment", true},     {"random_erasing", 0.25},
                          {"mix_prob", 0.5},      {"switch_prob", 0.25}};
  const Config c = parse_config(j);
  EXPECT_EQ(c.data.augment.translate, 3);
  EXPECT_TRUE(c.data.augment.random_resized_crop);
  EXPECT_EQ(c.data.augment.rrc_scale, (std::array<double, 2>{0.5, 0.9}));
  EXPECT_EQ(c.data.augment.rrc_ratio, (std::array<double, 2>{0.5, 2.0}));
  EXPECT_TRUE(c.data.augment.trivial_augment);
  EXPECT_EQ(c.data.augment.random_erasing, 0.25);
  EXPECT_EQ(c.data.augment.mix_prob, 0.5);
  EXPECT_EQ(c.data.augment.switch_prob, 0.25);
  EXPECT_EQ(c.resolved["data"]["subset"], 1000);
  // --set reaches them, typed by the schema.
  json o = image_config();
  apply_overrides(o, {"data.augment.trivial_augment=true", "data.augment.rrc_scale=[0.2,0.8]", "data.subset=50"});
  const Config oc = parse_config(o);
  EXPECT_TRUE(oc.data.augment.trivial_augment);
  EXPECT_EQ(oc.data.augment.rrc_scale, (std::array<double, 2>{0.2, 0.8}));
}

TEST(AugmentConfig, MixingNeedsAHeadThatTrainsOnSoftTargets) {
  bool svm_found = false;
  for (const auto& type : head_types()) {
    json j = image_config();
    j["model"]["head"] = {{"type", type}};
    j["data"]["augment"]["mixup"] = 0.8;
    json k = j;
    k["data"]["augment"].erase("mixup");
    k["data"]["augment"]["cutmix"] = 1.0;
    if (head_takes_soft_targets(type)) {
      EXPECT_NO_THROW(parse_config(j)) << type;
      EXPECT_NO_THROW(parse_config(k)) << type;
      continue;
    }
    svm_found = svm_found || type == "svm";
    expect_error([&] { parse_config(j); },
                 {"data.augment.mixup = 0.8: model.head.type \"" + type + "\" does not train on soft targets"});
    expect_error([&] { parse_config(k); }, {"data.augment.cutmix = 1.0", "\"" + type + "\"", "soft_targets"});
    // Off is fine with any head.
    j["data"]["augment"]["mixup"] = 0.0;
    EXPECT_NO_THROW(parse_config(j)) << type;
  }
  EXPECT_TRUE(svm_found) << "the svm head is expected to lack the soft_targets trait";
}

TEST(AugmentConfig, ImageKeysWithASequenceTaskAreErrors) {
  // Every key of data.augment, set away from its default, is refused for a synthetic task.
  const config_detail::Node* aug = config_detail::config_schema().child("data")->child("augment");
  ASSERT_NE(aug, nullptr);
  const json off_values = {{"random_crop", 2}, {"hflip", true}, {"translate", 2}, {"random_resized_crop", true},
                           {"rrc_scale", {0.5, 1.0}}, {"rrc_ratio", {1.0, 1.0}}, {"trivial_augment", true},
                           {"random_erasing", 0.5}, {"mixup", 0.8}, {"cutmix", 1.0}, {"mix_prob", 0.5},
                           {"switch_prob", 0.2}};
  for (const auto& child : aug->children) {
    ASSERT_TRUE(off_values.contains(child.name)) << "add a non-default value for " << child.name << " to this test";
    json j = json::parse(R"({"data": {"dataset": "synthetic:recall"}, "model": {"type": "seq"}})");
    j["data"]["augment"][child.name] = off_values[child.name];
    expect_error([&] { parse_config(j); }, {"data.augment." + child.name + " = ", "synthetic:recall"});
  }
  json seq = json::parse(R"({"data": {"dataset": "synthetic:recall", "subset": 100}, "model": {"type": "seq"}})");
  expect_error([&] { parse_config(seq); }, {"data.subset = 100", "data.train_size"});
  seq["data"]["subset"] = 0;
  EXPECT_NO_THROW(parse_config(seq));
}

TEST(AugmentConfig, RangesAndPairsAreChecked) {
  auto with_aug = [](const json& aug) {
    json j = image_config();
    j["data"]["augment"] = aug;
    return j;
  };
  expect_error([&] { parse_config(with_aug({{"translate", 2}, {"random_crop", 2}})); },
               {"data.augment.translate = 2", "data.augment.random_crop = 2"});
  expect_error([&] { parse_config(with_aug({{"translate", 28}})); }, {"data.augment.translate = 28", "image_size"});
  expect_error([&] { parse_config(with_aug({{"rrc_scale", {0.9, 0.5}}})); }, {"data.augment.rrc_scale", "min <= max"});
  expect_error([&] { parse_config(with_aug({{"rrc_ratio", {1.0}}})); }, {"data.augment.rrc_ratio"});
  expect_error([&] { parse_config(with_aug({{"rrc_scale", {0.0, 0.5}}})); }, {"data.augment.rrc_scale[0]"});
  expect_error([&] { parse_config(with_aug({{"random_erasing", 1.5}})); }, {"data.augment.random_erasing"});
  expect_error([&] { parse_config(with_aug({{"mixup", -1}})); }, {"data.augment.mixup"});
  expect_error([&] { parse_config(with_aug({{"mix_prob", 2}})); }, {"data.augment.mix_prob"});
  expect_error([&] { parse_config(with_aug({{"trivial_augment", 1}})); }, {"data.augment.trivial_augment"});
  expect_error([&] { parse_config(with_aug({{"mixpu", 1}})); }, {"data.augment", "mixpu", "mixup"});
  json neg = image_config();
  neg["data"]["subset"] = -1;
  expect_error([&] { parse_config(neg); }, {"data.subset"});
}

// The command line turns these errors into exit code 2 (bad input), with the key named.
TEST(AugmentConfig, ValidateExitsWithTwoNamingTheKey) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("softlab_test_augment_" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/cfg.json";
  json j = image_config();
  j["model"]["head"] = {{"type", "svm"}};
  std::ofstream(path) << j.dump(2);
  const test::CliRun bad = test::softlab_cli({"validate", path, "--set", "data.augment.mixup=0.8"}, dir);
  EXPECT_EQ(bad.code, 2) << bad.err;
  EXPECT_NE(bad.err.find("data.augment.mixup = 0.8"), std::string::npos) << bad.err;
  const test::CliRun seq = test::softlab_cli(
      {"validate", path, "--set", "data.dataset=synthetic:bins", "--set", "model.type=seq", "--set",
       "data.augment.trivial_augment=true"},
      dir);
  EXPECT_EQ(seq.code, 2) << seq.err;
  EXPECT_NE(seq.err.find("data.augment.trivial_augment = true"), std::string::npos) << seq.err;
  const test::CliRun ok = test::softlab_cli({"validate", path, "--set", "data.augment.trivial_augment=true"}, dir);
  EXPECT_EQ(ok.code, 0) << ok.err;
  std::filesystem::remove_all(dir);
}
