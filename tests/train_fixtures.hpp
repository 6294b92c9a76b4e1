#pragma once
// Small generated data sets and configs for the training tests.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "softlab/config.hpp"
#include "softlab/data.hpp"
#include "softlab/random.hpp"
#include "softlab/train.hpp"

namespace softlab::test {

// A learnable 10-class image set: class c puts a bright 5x5 square at one of ten fixed
// places of a 28x28 grey image, over uniform noise.
inline Dataset make_learnable_images(int64_t n, uint64_t seed) {
  Dataset ds;
  ds.name = "learnable";
  ds.size = n;
  ds.channels = 1;
  ds.height = ds.width = 28;
  ds.num_classes = 10;
  ds.images.resize(static_cast<size_t>(n * 28 * 28));
  ds.labels.resize(static_cast<size_t>(n));
  Generator g(seed);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t c = static_cast<int32_t>(i % 10);
    ds.labels[static_cast<size_t>(i)] = c;
    uint8_t* img = ds.images.data() + i * 28 * 28;
    for (int p = 0; p < 28 * 28; ++p) img[p] = static_cast<uint8_t>(g.below(100));
    const int y0 = 3 + 10 * (c / 4 % 3), x0 = 2 + 6 * (c % 4) + static_cast<int>(g.below(2));
    for (int y = y0; y < y0 + 5; ++y)
      for (int x = x0; x < x0 + 5; ++x) img[y * 28 + x] = 255;
  }
  return ds;
}

// Writes train (n_train) and test (n_test) splits as MNIST-format IDX files into dir.
inline void write_learnable_mnist(const std::string& dir, int64_t n_train, int64_t n_test) {
  std::filesystem::create_directories(dir);
  write_idx(make_learnable_images(n_train, 1), dir, "train", true);
  write_idx(make_learnable_images(n_test, 2), dir, "t10k", false);
}

// A tiny ViT config on that data (dataset "mnist" read from `data_dir`).
inline json tiny_config(const std::string& data_dir, const std::string& out_dir) {
  json j = json::parse(R"({
    "name": "tiny", "seed": 3,
    "data": {"dataset": "mnist"},
    "model": {"type": "vit", "image_size": 28, "channels": 1, "patch_size": 7, "dim": 32, "depth": 2,
              "heads": 2, "mlp_ratio": 2, "dropout": 0.1, "pool": "cls",
              "attention": {"type": "softmax"}, "head": {"type": "softmax"}},
    "train": {"epochs": 3, "batch_size": 50, "threads": 1,
              "optimizer": {"type": "adamw", "lr": 0.003, "weight_decay": 0.05},
              "schedule": {"type": "cosine", "warmup_epochs": 1}, "grad_clip": 1.0}
  })");
  j["data"]["path"] = data_dir;
  j["output"] = {{"dir", out_dir}};
  return j;
}

inline std::string temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("softlab_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

// Train options that print nothing.
inline TrainOptions quiet() {
  TrainOptions o;
  o.quiet = true;
  return o;
}

// The lines of a run directory's metrics.jsonl.
inline std::vector<json> read_metrics(const std::string& run) {
  std::vector<json> out;
  std::ifstream in(std::filesystem::path(run) / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

// A test with its own temporary folder holding the learnable MNIST-format data set (1000
// train, 200 test images), and tiny_config() runs on it with --set style overrides.
class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    data = root + "/data";
    write_learnable_mnist(data, 1000, 200);
  }
  void TearDown() override { std::filesystem::remove_all(root); }
  Config config(const std::string& out, const std::vector<std::string>& sets = {}) {
    json j = tiny_config(data, root + "/" + out);
    for (const auto& s : sets) apply_override(j, s);
    return parse_config(resolve_config(j));
  }
  std::string root, data;
};

}  // namespace softlab::test
