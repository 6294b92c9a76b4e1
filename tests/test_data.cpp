// The data layer: IDX and CIFAR readers (good and corrupt files), where data sets are
// looked for, and the batch loader's determinism, augmentation and normalisation.
// Suites: Idx*, Cifar*, Data* (lookup and loading), Loader*.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>

#include "softlab/data.hpp"
#include "softlab/error.hpp"
#include "softlab/random.hpp"
#include "expect_error.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {
using test::expect_error;

// A fresh directory, removed with everything in it at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "softlab_data_XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    if (!p) throw std::runtime_error("mkdtemp failed");
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Sets (or unsets) an environment variable for one test and restores it afterwards.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  EnvGuard(const std::string& n, const char* value) : name(n) {
    if (const char* v = std::getenv(n.c_str())) old = v;
    if (value)
      setenv(n.c_str(), value, 1);
    else
      unsetenv(n.c_str());
  }
  ~EnvGuard() {
    if (old)
      setenv(name.c_str(), old->c_str(), 1);
    else
      unsetenv(name.c_str());
  }
};

struct CwdGuard {
  fs::path old = fs::current_path();
  explicit CwdGuard(const fs::path& to) { fs::current_path(to); }
  ~CwdGuard() { fs::current_path(old); }
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  if (!bytes.empty()) {
      ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), int(bytes.size()));
    }
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void append_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

// An IDX file's bytes: magic, dims, then `body` bytes of payload.
std::vector<uint8_t> idx_bytes(uint32_t magic, std::vector<uint32_t> dims, size_t body, uint8_t fill = 1) {
  std::vector<uint8_t> v;
  append_be32(v, magic);
  for (uint32_t d : dims) append_be32(v, d);
  v.insert(v.end(), body, fill);
  return v;
}

// Grey images with random pixels and labels i % 10.
Dataset make_gray(int64_t n, int64_t h, int64_t w, uint64_t seed) {
  Dataset ds;
  ds.name = "tiny";
  ds.size = n;
  ds.channels = 1;
  ds.height = h;
  ds.width = w;
  ds.num_classes = 10;
  Generator g(seed);
  ds.images.resize(n * h * w);
  for (auto& p : ds.images) p = static_cast<uint8_t>(g.below(256));
  for (int64_t i = 0; i < n; ++i) ds.labels.push_back(static_cast<int32_t>(i % 10));
  return ds;
}

// Images of C channels with random pixels; label i = example i, so batches reveal the order.
Dataset make_indexed(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
  Dataset ds;
  ds.name = "indexed";
  ds.size = n;
  ds.channels = c;
  ds.height = h;
  ds.width = w;
  ds.num_classes = static_cast<int>(n);
  Generator g(seed);
  ds.images.resize(n * c * h * w);
  for (auto& p : ds.images) p = static_cast<uint8_t>(g.below(256));
  for (int64_t i = 0; i < n; ++i) ds.labels.push_back(static_cast<int32_t>(i));
  return ds;
}

std::vector<Batch> all_batches(BatchLoader& loader, int64_t epoch, int64_t first = 0) {
  loader.start_epoch(epoch, first);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.index == b.index && a.labels == b.labels && a.images.shape() == b.images.shape() &&
         std::memcmp(a.images.data(), b.images.data(), sizeof(float) * a.images.numel()) == 0;
}

std::vector<int32_t> order_of(const std::vector<Batch>& batches) {
  std::vector<int32_t> v;
  for (const auto& b : batches) v.insert(v.end(), b.labels.begin(), b.labels.end());
  return v;
}

// The shared CIFAR-10 copy next to the checkout, when this machine has it.
std::optional<fs::path> shared_cifar10() {
  std::vector<fs::path> tries;
  if (const char* d = std::getenv("SOFTLAB_SHARED_DIR")) tries.push_back(fs::path(d) / "datasets" / "cifar10");
#ifdef SOFTLAB_SOURCE_DIR
  tries.push_back(fs::path(SOFTLAB_SOURCE_DIR) / ".." / "shared" / "datasets" / "cifar10");
#endif
  for (const auto& t : tries)
    if (fs::is_regular_file(t / "test_batch.bin")) return t.lexically_normal();
  return std::nullopt;
}

const char* const kDebianFashion = "/usr/share/datasets/fashion-mnist";

}  // namespace

// ---------------------------------------------------------------------------------- IDX

TEST(IdxTest, RoundTripPlainAndGzip) {
  TempDir tmp;
  const Dataset ds = make_gray(37, 5, 7, 1);
  for (bool gz : {false, true}) {
    const std::string dir = tmp / (gz ? "gz" : "plain");
    write_idx(ds, dir, "train", gz);
    const std::string ext = gz ? ".gz" : "";
    const std::string images = dir + "/train-images-idx3-ubyte" + ext;
    const std::string labels = dir + "/train-labels-idx1-ubyte" + ext;
    const auto head = read_bytes(images);
    ASSERT_GE(head.size(), 2u);
    // The reader must tell the two apart by content, not name: check the writer made both kinds.
    EXPECT_EQ(head[0] == 0x1f && head[1] == 0x8b, gz);
    if (!gz) {
      EXPECT_EQ(head.size(), 16u + 37 * 5 * 7);
    }
    const Dataset back = read_idx(images, labels);
    EXPECT_EQ(back.size, 37);
    EXPECT_EQ(back.channels, 1);
    EXPECT_EQ(back.height, 5);
    EXPECT_EQ(back.width, 7);
    EXPECT_EQ(back.num_classes, 10);
    EXPECT_EQ(back.images, ds.images);
    EXPECT_EQ(back.labels, ds.labels);
  }
}

TEST(IdxTest, GzipDetectedByContentNotName) {
  TempDir tmp;
  const Dataset ds = make_gray(4, 2, 2, 2);
  write_idx(ds, tmp.path.string(), "t10k", true);
  // Gzip bytes under a plain name, and plain bytes under a .gz name: both read.
  fs::rename(tmp / "t10k-images-idx3-ubyte.gz", tmp / "imgs");
  write_idx(ds, (tmp.path / "p").string(), "t10k", false);
  fs::rename(tmp / "p/t10k-labels-idx1-ubyte", tmp / "labs.gz");
  const Dataset back = read_idx(tmp / "imgs", tmp / "labs.gz");
  EXPECT_EQ(back.images, ds.images);
  EXPECT_EQ(back.labels, ds.labels);
}

TEST(IdxTest, WrongMagicNamesFileAndBothNumbers) {
  TempDir tmp;
  write_bytes(tmp / "labels", idx_bytes(0x801, {3}, 3, 0));
  write_bytes(tmp / "bad-images", idx_bytes(0x802, {3, 2, 2}, 12));
  expect_error([&] { read_idx(tmp / "bad-images", tmp / "labels"); },
               {"bad-images", "0x00000803", "0x00000802"});
  // Images and labels swapped: the labels magic where images are expected.
  write_bytes(tmp / "images", idx_bytes(0x803, {3, 2, 2}, 12));
  expect_error([&] { read_idx(tmp / "labels", tmp / "images"); }, {"labels", "0x00000801"});
}

TEST(IdxTest, HeaderClaimingMoreImagesThanFileHolds) {
  TempDir tmp;
  write_bytes(tmp / "labels", idx_bytes(0x801, {10}, 10, 0));
  write_bytes(tmp / "short-images", idx_bytes(0x803, {10, 4, 4}, 9 * 16));
  expect_error([&] { read_idx(tmp / "short-images", tmp / "labels"); },
               {"short-images", std::to_string(16 + 160), std::to_string(16 + 144)});
  // Too many bytes is just as wrong: the header and the file disagree.
  write_bytes(tmp / "long-images", idx_bytes(0x803, {10, 4, 4}, 11 * 16));
  expect_error([&] { read_idx(tmp / "long-images", tmp / "labels"); }, {"long-images"});
  // And the same lie inside a gzip file.
  write_gz(tmp / "short-images.gz", idx_bytes(0x803, {10, 4, 4}, 9 * 16));
  expect_error([&] { read_idx(tmp / "short-images.gz", tmp / "labels"); },
               {"short-images.gz", "truncated", "160", "144"});
  write_gz(tmp / "long-images.gz", idx_bytes(0x803, {10, 4, 4}, 11 * 16));
  expect_error([&] { read_idx(tmp / "long-images.gz", tmp / "labels"); }, {"long-images.gz"});
}

TEST(IdxTest, TruncatedGzipAndTooShortHeader) {
  TempDir tmp;
  const Dataset ds = make_gray(200, 8, 8, 3);
  write_idx(ds, tmp.path.string(), "train", true);
  const std::string images = tmp / "train-images-idx3-ubyte.gz";
  auto bytes = read_bytes(images);
  bytes.resize(bytes.size() / 2);  // cut the gzip stream in the middle
  write_bytes(tmp / "cut-images.gz", bytes);
  expect_error([&] { read_idx(tmp / "cut-images.gz", tmp / "train-labels-idx1-ubyte.gz"); },
               {"cut-images.gz"});
  write_bytes(tmp / "stub", {0, 0, 8});
  expect_error([&] { read_idx(tmp / "stub", tmp / "train-labels-idx1-ubyte.gz"); }, {"stub", "header"});
  write_bytes(tmp / "empty", {});
  expect_error([&] { read_idx(tmp / "empty", tmp / "train-labels-idx1-ubyte.gz"); }, {"empty"});
  expect_error([&] { read_idx(tmp / "nonexistent", tmp / "train-labels-idx1-ubyte.gz"); }, {"nonexistent"});
}

TEST(IdxTest, ImageAndLabelCountMismatch) {
  TempDir tmp;
  write_bytes(tmp / "imgs", idx_bytes(0x803, {5, 2, 2}, 20));
  write_bytes(tmp / "labs", idx_bytes(0x801, {4}, 4, 0));
  expect_error([&] { read_idx(tmp / "imgs", tmp / "labs"); }, {"imgs", "labs", "5", "4"});
}

TEST(IdxTest, LabelOutOfRange) {
  TempDir tmp;
  write_bytes(tmp / "imgs", idx_bytes(0x803, {3, 2, 2}, 12));
  auto labels = idx_bytes(0x801, {3}, 0);
  labels.insert(labels.end(), {1, 10, 2});
  write_bytes(tmp / "labs-bad", labels);
  expect_error([&] { read_idx(tmp / "imgs", tmp / "labs-bad"); }, {"labs-bad", "10", "0..9"});
}

TEST(IdxTest, HugeHeaderFailsFastWithoutAllocating) {
  TempDir tmp;
  write_bytes(tmp / "labs", idx_bytes(0x801, {2}, 2, 0));
  const auto t0 = std::chrono::steady_clock::now();
  // 2^31 - 1 images of 28x28 (far past any sane size), 2^31 (negative as int32), and a
  // 2^31 - 1 byte body that a gzip file claims but does not hold: each must fail at once.
  write_bytes(tmp / "huge-plain", idx_bytes(0x803, {0x7fffffffu, 28, 28}, 64));
  expect_error([&] { read_idx(tmp / "huge-plain", tmp / "labs"); }, {"huge-plain"});
  write_bytes(tmp / "neg-plain", idx_bytes(0x803, {0x80000000u, 28, 28}, 64));
  expect_error([&] { read_idx(tmp / "neg-plain", tmp / "labs"); }, {"neg-plain"});
  write_gz(tmp / "huge.gz", idx_bytes(0x803, {0x7fffffffu, 28, 28}, 64));
  expect_error([&] { read_idx(tmp / "huge.gz", tmp / "labs"); }, {"huge.gz"});
  write_gz(tmp / "big-but-short.gz", idx_bytes(0x803, {0x7fffffffu, 1, 1}, 64));
  expect_error([&] { read_idx(tmp / "big-but-short.gz", tmp / "labs"); }, {"big-but-short.gz", "truncated"});
  write_bytes(tmp / "huge-labels", idx_bytes(0x801, {0xffffffffu}, 2, 0));
  write_bytes(tmp / "imgs", idx_bytes(0x803, {2, 1, 1}, 2));
  expect_error([&] { read_idx(tmp / "imgs", tmp / "huge-labels"); }, {"huge-labels"});
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 2.0);
}

TEST(IdxTest, WriteRejectsWhatIdxCannotHold) {
  TempDir tmp;
  Dataset rgb = make_indexed(2, 3, 2, 2, 1);
  EXPECT_THROW(write_idx(rgb, tmp.path.string(), "train", false), Error);
  Dataset big_label = make_gray(2, 2, 2, 1);
  big_label.labels[1] = 300;
  EXPECT_THROW(write_idx(big_label, tmp.path.string(), "train", false), Error);
}

// -------------------------------------------------------------------------------- CIFAR

namespace {
uint8_t cifar_pixel(int64_t record, int64_t c, int64_t y, int64_t x) {
  return static_cast<uint8_t>(record * 31 + c * 101 + y * 7 + x * 3);
}
// `labels[r]` holds the label byte(s) of record r.
std::vector<uint8_t> cifar_records(const std::vector<std::vector<uint8_t>>& labels) {
  std::vector<uint8_t> v;
  for (size_t r = 0; r < labels.size(); ++r) {
    v.insert(v.end(), labels[r].begin(), labels[r].end());
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) v.push_back(cifar_pixel(r, c, y, x));
  }
  return v;
}
void expect_cifar_pixels(const Dataset& ds, int64_t i, int64_t record) {
  const uint8_t* img = ds.images.data() + i * ds.image_bytes();
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        ASSERT_EQ(img[(c * 32 + y) * 32 + x], cifar_pixel(record, c, y, x)) << i << " " << c << " " << y << " " << x;
}
}  // namespace

TEST(CifarTest, Cifar10RecordsAndClassNames) {
  TempDir tmp;
  write_bytes(tmp / "a.bin", cifar_records({{3}, {9}}));
  write_bytes(tmp / "b.bin", cifar_records({{0}}));
  {
    std::ofstream meta(tmp / "batches.meta.txt");
    meta << "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";  // blank tail as upstream
  }
  const Dataset ds = read_cifar({tmp / "a.bin", tmp / "b.bin"}, false);
  EXPECT_EQ(ds.size, 3);
  EXPECT_EQ(ds.channels, 3);
  EXPECT_EQ(ds.height, 32);
  EXPECT_EQ(ds.width, 32);
  EXPECT_EQ(ds.num_classes, 10);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{3, 9, 0}));
  expect_cifar_pixels(ds, 0, 0);
  expect_cifar_pixels(ds, 1, 1);
  expect_cifar_pixels(ds, 2, 0);
  ASSERT_EQ(ds.class_names.size(), 10u);
  EXPECT_EQ(ds.class_names[6], "frog");
  // Only the first record of each file.
  const Dataset head = read_cifar({tmp / "a.bin", tmp / "b.bin"}, false, 1);
  EXPECT_EQ(head.size, 2);
  EXPECT_EQ(head.labels, (std::vector<int32_t>{3, 0}));
}

TEST(CifarTest, Cifar100UsesFineLabels) {
  TempDir tmp;
  write_bytes(tmp / "train.bin", cifar_records({{19, 99}, {0, 42}, {5, 0}}));
  {
    std::ofstream names(tmp / "fine_label_names.txt");
    for (int i = 0; i < 100; ++i) names << "class" << i << "\n";
  }
  const Dataset ds = read_cifar({tmp / "train.bin"}, true);
  EXPECT_EQ(ds.size, 3);
  EXPECT_EQ(ds.num_classes, 100);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{99, 42, 0}));
  for (int r = 0; r < 3; ++r) expect_cifar_pixels(ds, r, r);
  ASSERT_EQ(ds.class_names.size(), 100u);
  EXPECT_EQ(ds.class_names[42], "class42");
}

TEST(CifarTest, SizeNotMultipleOfRecord) {
  TempDir tmp;
  auto bytes = cifar_records({{1}, {2}});
  bytes.push_back(0);
  write_bytes(tmp / "odd_batch.bin", bytes);
  expect_error([&] { read_cifar({tmp / "odd_batch.bin"}, false); },
               {"odd_batch.bin", std::to_string(2 * 3073 + 1), "3073"});
  // Right size for CIFAR-10 is wrong for CIFAR-100, and the message says which record it expected.
  write_bytes(tmp / "ten.bin", cifar_records({{1}}));
  expect_error([&] { read_cifar({tmp / "ten.bin"}, true); }, {"ten.bin", "3073", "3074"});
  write_bytes(tmp / "zero.bin", {});
  expect_error([&] { read_cifar({tmp / "zero.bin"}, false); }, {"zero.bin"});
  expect_error([&] { read_cifar({tmp / "missing.bin"}, false); }, {"missing.bin"});
}

TEST(CifarTest, LabelsOutOfRange) {
  TempDir tmp;
  write_bytes(tmp / "bad10.bin", cifar_records({{1}, {10}}));
  expect_error([&] { read_cifar({tmp / "bad10.bin"}, false); }, {"bad10.bin", "record 1", "10"});
  write_bytes(tmp / "bad100.bin", cifar_records({{1, 100}}));
  expect_error([&] { read_cifar({tmp / "bad100.bin"}, true); }, {"bad100.bin", "100"});
  write_bytes(tmp / "badcoarse.bin", cifar_records({{20, 5}}));
  expect_error([&] { read_cifar({tmp / "badcoarse.bin"}, true); }, {"badcoarse.bin", "coarse"});
}

TEST(CifarTest, SharedCifar10Copy) {
  const auto dir = shared_cifar10();
  if (!dir) GTEST_SKIP() << "no shared CIFAR-10 copy (set SOFTLAB_SHARED_DIR or put it in ../shared/datasets/cifar10)";
  // README: test_batch.bin records 0 and 1 are test/frog/0425 and test/airplane/0657.
  const Dataset head = read_cifar({(*dir / "test_batch.bin").string()}, false, 2);
  ASSERT_EQ(head.size, 2);
  EXPECT_EQ(head.labels[0], 6);
  EXPECT_EQ(head.labels[1], 0);
  ASSERT_EQ(head.class_names.size(), 10u);
  EXPECT_EQ(head.class_names[6], "frog");
  EXPECT_EQ(head.class_names[0], "airplane");
  for (int k = 1; k <= 5; ++k) {
    const fs::path f = *dir / ("data_batch_" + std::to_string(k) + ".bin");
    EXPECT_EQ(fs::file_size(f), 10000u * 3073u) << f;
    EXPECT_EQ(read_cifar({f.string()}, false, 1).size, 1);
  }
  // One whole batch: 10000 records with the README's class counts, and per-channel means
  // near CIFAR-10's (R 125.3 > G 123.0 > B 113.9), which only holds if the planes are R, G, B.
  const Dataset b1 = read_cifar({(*dir / "data_batch_1.bin").string()}, false);
  ASSERT_EQ(b1.size, 10000);
  std::vector<int> counts(10, 0);
  for (int32_t l : b1.labels) counts[l]++;
  EXPECT_EQ(counts, (std::vector<int>{976, 998, 1018, 998, 986, 1048, 1058, 972, 1023, 923}));
  const Normalization n = compute_normalization(b1);
  EXPECT_NEAR(n.mean[0] * 255, 125.3, 1.5);
  EXPECT_NEAR(n.mean[1] * 255, 123.0, 1.5);
  EXPECT_NEAR(n.mean[2] * 255, 113.9, 1.5);
  EXPECT_EQ(find_dataset_dir("cifar10", dir->string()), dir->string());
}

// ------------------------------------------------------------------- lookup and loading

namespace {
// A tiny MNIST-style data set in `dir`: train plain, t10k gzipped (both kinds must work).
void make_mnist_dir(const std::string& dir) {
  write_idx(make_gray(20, 4, 4, 11), dir, "train", false);
  write_idx(make_gray(10, 4, 4, 12), dir, "t10k", true);
}
}  // namespace

TEST(DataLookup, KnownDatasetsAndUnknownName) {
  EXPECT_EQ(known_datasets(), (std::vector<std::string>{"mnist", "fashion-mnist", "cifar10", "cifar100"}));
  expect_error([] { find_dataset_dir("imagenet", std::nullopt); },
               {"imagenet", "mnist", "fashion-mnist", "cifar10", "cifar100"});
  expect_error([] { load_dataset("cifar-10", std::nullopt); }, {"cifar-10", "cifar10"});
}

TEST(DataLookup, ExplicitPath) {
  TempDir tmp;
  expect_error([&] { find_dataset_dir("mnist", tmp / "nowhere"); }, {tmp / "nowhere", "does not exist"});
  fs::create_directories(tmp / "empty");
  expect_error([&] { find_dataset_dir("mnist", tmp / "empty"); },
               {tmp / "empty", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "fetch.sh mnist"});
  make_mnist_dir(tmp / "m");
  const DataSplit split = load_dataset("mnist", tmp / "m");
  EXPECT_EQ(split.dir, tmp / "m");
  EXPECT_EQ(split.train.size, 20);
  EXPECT_EQ(split.test.size, 10);
  EXPECT_EQ(split.train.name, "mnist");
  EXPECT_EQ(split.train.num_classes, 10);
  ASSERT_EQ(split.test.class_names.size(), 10u);
  EXPECT_EQ(split.test.class_names[7], "7");
  EXPECT_EQ(split.train.images, make_gray(20, 4, 4, 11).images);
  EXPECT_EQ(split.test.labels, make_gray(10, 4, 4, 12).labels);
}

TEST(DataLookup, EnvDirAndPrecedence) {
  TempDir tmp;
  make_mnist_dir(tmp / "root/mnist");
  make_mnist_dir(tmp / "other");
  EnvGuard env("SOFTLAB_DATA_DIR", (tmp / "root").c_str());
  EXPECT_EQ(find_dataset_dir("mnist", std::nullopt), tmp / "root/mnist");
  // data.path wins over the environment.
  EXPECT_EQ(find_dataset_dir("mnist", tmp / "other"), tmp / "other");
  // The environment wins over datasets/ in the current directory.
  make_mnist_dir(tmp / "datasets/mnist");
  CwdGuard cwd(tmp.path);
  EXPECT_EQ(find_dataset_dir("mnist", std::nullopt), tmp / "root/mnist");
}

TEST(DataLookup, CurrentDirectoryAndOfficialSubdir) {
  TempDir tmp;
  // CIFAR-10 as the official tarball unpacks: datasets/cifar10/cifar-10-batches-bin/.
  const std::string sub = tmp / "datasets/cifar10/cifar-10-batches-bin";
  for (int k = 1; k <= 5; ++k) write_bytes(sub + "/data_batch_" + std::to_string(k) + ".bin", cifar_records({{uint8_t(k)}, {0}}));
  write_bytes(sub + "/test_batch.bin", cifar_records({{7}}));
  {
    std::ofstream meta(sub + "/batches.meta.txt");
    meta << "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
  }
  EnvGuard env("SOFTLAB_DATA_DIR", (tmp / "no-such-root").c_str());
  CwdGuard cwd(tmp.path);
  EXPECT_EQ(fs::path(find_dataset_dir("cifar10", std::nullopt)), fs::path(sub));
  const DataSplit split = load_dataset("cifar10", std::nullopt);
  EXPECT_EQ(split.train.size, 10);
  EXPECT_EQ(split.test.size, 1);
  EXPECT_EQ(split.train.labels, (std::vector<int32_t>{1, 0, 2, 0, 3, 0, 4, 0, 5, 0}));
  EXPECT_EQ(split.test.labels, (std::vector<int32_t>{7}));
  EXPECT_EQ(split.train.name, "cifar10");
  EXPECT_EQ(split.test.class_names.at(7), "horse");
  // CIFAR-100 given as data.path pointing at the dir that holds cifar-100-binary/.
  write_bytes(tmp / "c100/cifar-100-binary/train.bin", cifar_records({{1, 50}, {2, 60}}));
  write_bytes(tmp / "c100/cifar-100-binary/test.bin", cifar_records({{3, 70}}));
  const DataSplit c100 = load_dataset("cifar100", tmp / "c100");
  EXPECT_EQ(c100.train.num_classes, 100);
  EXPECT_EQ(c100.train.labels, (std::vector<int32_t>{50, 60}));
  EXPECT_EQ(c100.test.labels, (std::vector<int32_t>{70}));
}

TEST(DataLookup, MissingDatasetListsWhereItLooked) {
  TempDir tmp;
  fs::create_directories(tmp / "root");
  EnvGuard env("SOFTLAB_DATA_DIR", (tmp / "root").c_str());
  CwdGuard cwd(tmp.path);
  try {
    const std::string found = find_dataset_dir("cifar100", std::nullopt);
    GTEST_SKIP() << "cifar100 is installed next to the executable (" << found << ")";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& part : {tmp / "root/cifar100", tmp / "datasets/cifar100", std::string("datasets/fetch.sh cifar100")})
      EXPECT_NE(msg.find(part), std::string::npos) << part << " not in: " << msg;
  }
  // Fashion-MNIST's hint also names the Debian package.
  fs::create_directories(tmp / "empty");
  expect_error([&] { find_dataset_dir("fashion-mnist", tmp / "empty"); },
               {"apt-get install dataset-fashion-mnist", "datasets/fetch.sh fashion-mnist"});
}

TEST(DataLookup, FashionMnistFromDebianPackage) {
  if (!fs::is_directory(kDebianFashion)) GTEST_SKIP() << kDebianFashion << " not installed (apt-get install dataset-fashion-mnist)";
  TempDir tmp;
  {
    EnvGuard env("SOFTLAB_DATA_DIR", (tmp / "root").c_str());
    CwdGuard cwd(tmp.path);
    const std::string found = find_dataset_dir("fashion-mnist", std::nullopt);
    // Only a copy next to the executable (datasets/fashion-mnist in the checkout) may come first.
    if (found != kDebianFashion) {
      EXPECT_NE(found.find("datasets/fashion-mnist"), std::string::npos) << found;
    }
  }
  const DataSplit split = load_dataset("fashion-mnist", std::string(kDebianFashion));
  EXPECT_EQ(split.train.size, 60000);
  EXPECT_EQ(split.test.size, 10000);
  EXPECT_EQ(split.train.height, 28);
  EXPECT_EQ(split.train.width, 28);
  EXPECT_EQ(split.train.channels, 1);
  std::vector<int> train_counts(10, 0), test_counts(10, 0);
  for (int32_t l : split.train.labels) train_counts[l]++;
  for (int32_t l : split.test.labels) test_counts[l]++;
  EXPECT_EQ(train_counts, std::vector<int>(10, 6000));
  EXPECT_EQ(test_counts, std::vector<int>(10, 1000));
  ASSERT_EQ(split.train.class_names.size(), 10u);
  EXPECT_EQ(split.train.class_names[0], "T-shirt/top");
  EXPECT_EQ(split.train.class_names[9], "Ankle boot");
}

// ------------------------------------------------------------------------------- loader

TEST(LoaderTest, EveryExampleOnceShortLastBatch) {
  const Dataset ds = make_indexed(103, 1, 3, 3, 1);
  BatchLoader loader(ds, {.batch_size = 10, .seed = 5});
  EXPECT_EQ(loader.batches_per_epoch(), 11);
  for (int64_t epoch : {0, 1}) {
    const auto batches = all_batches(loader, epoch);
    ASSERT_EQ(batches.size(), 11u);
    for (size_t b = 0; b < batches.size(); ++b) {
      EXPECT_EQ(batches[b].index, static_cast<int64_t>(b));
      const int64_t expect = b + 1 < batches.size() ? 10 : 3;
      EXPECT_EQ(batches[b].images.shape(), (Shape{expect, 1, 3, 3}));
      EXPECT_EQ(static_cast<int64_t>(batches[b].labels.size()), expect);
    }
    auto order = order_of(batches);
    std::vector<int32_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int32_t i = 0; i < 103; ++i) ASSERT_EQ(sorted[i], i);
    std::vector<int32_t> identity(103);
    for (int32_t i = 0; i < 103; ++i) identity[i] = i;
    EXPECT_NE(order, identity);  // shuffled
  }
}

TEST(LoaderTest, DropLastAndNoShuffle) {
  const Dataset ds = make_indexed(103, 1, 2, 2, 1);
  BatchLoader dropped(ds, {.batch_size = 10, .shuffle = false, .drop_last = true});
  EXPECT_EQ(dropped.batches_per_epoch(), 10);
  const auto batches = all_batches(dropped, 3);
  ASSERT_EQ(batches.size(), 10u);
  const auto order = order_of(batches);
  for (int32_t i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);  // no shuffle: data set order
  // Pixels land where they belong: example k's bytes / 255 (no normalisation given).
  for (int64_t p = 0; p < 4; ++p)
    EXPECT_EQ(batches[2].images.data()[5 * 4 + p], static_cast<float>(ds.images[25 * 4 + p]) / 255.0f);
  const Dataset thirty = make_indexed(30, 1, 2, 2, 1);
  BatchLoader exact(thirty, {.batch_size = 10, .drop_last = true});
  EXPECT_EQ(exact.batches_per_epoch(), 3);
}

TEST(LoaderTest, OrderDependsOnlyOnSeedAndEpoch) {
  const Dataset ds = make_indexed(64, 1, 2, 2, 1);
  BatchLoader a(ds, {.batch_size = 8, .seed = 7});
  BatchLoader b(ds, {.batch_size = 8, .seed = 7, .prefetch = false});
  BatchLoader c(ds, {.batch_size = 8, .seed = 8});
  const auto a0 = order_of(all_batches(a, 0)), a1 = order_of(all_batches(a, 1));
  EXPECT_NE(a0, a1);                              // epochs differ
  EXPECT_EQ(order_of(all_batches(b, 1)), a1);     // same seed, same order, in any epoch sequence
  EXPECT_EQ(order_of(all_batches(b, 0)), a0);
  EXPECT_NE(order_of(all_batches(c, 0)), a0);     // another seed, another order
  EXPECT_EQ(order_of(all_batches(a, 0)), a0);     // repeating an epoch repeats it
}

TEST(LoaderTest, ResumeMatchesUninterruptedRun) {
  const Dataset ds = make_indexed(70, 3, 6, 6, 2);
  BatchLoader::Options opt{.batch_size = 8, .augment = {.random_crop = 2, .hflip = true},
                           .norm = compute_normalization(ds), .seed = 3};
  BatchLoader full(ds, opt);
  std::vector<std::vector<Batch>> epochs;
  for (int e = 0; e < 3; ++e) epochs.push_back(all_batches(full, e));
  for (bool prefetch : {true, false}) {
    opt.prefetch = prefetch;
    BatchLoader resumed(ds, opt);
    const auto rest = all_batches(resumed, 1, 4);
    ASSERT_EQ(rest.size(), epochs[1].size() - 4);
    for (size_t i = 0; i < rest.size(); ++i) EXPECT_TRUE(same_batch(rest[i], epochs[1][i + 4])) << i;
    const auto next = all_batches(resumed, 2);
    ASSERT_EQ(next.size(), epochs[2].size());
    for (size_t i = 0; i < next.size(); ++i) EXPECT_TRUE(same_batch(next[i], epochs[2][i])) << i;
  }
  // Resuming at the very end of an epoch yields nothing more.
  BatchLoader done(ds, opt);
  EXPECT_TRUE(all_batches(done, 0, done.batches_per_epoch()).empty());
  EXPECT_THROW(done.start_epoch(0, done.batches_per_epoch() + 1), Error);
  EXPECT_THROW(done.start_epoch(-1), Error);
}

TEST(LoaderTest, PrefetchGivesIdenticalBatches) {
  const Dataset ds = make_indexed(50, 3, 5, 5, 4);
  BatchLoader::Options opt{.batch_size = 7, .augment = {.random_crop = 1, .hflip = true},
                           .norm = compute_normalization(ds), .seed = 9};
  opt.prefetch = true;
  BatchLoader with(ds, opt);
  opt.prefetch = false;
  BatchLoader without(ds, opt);
  for (int e = 0; e < 2; ++e) {
    const auto x = all_batches(with, e), y = all_batches(without, e);
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(same_batch(x[i], y[i])) << e << " " << i;
  }
}

TEST(LoaderTest, RestartMidEpochAndEarlyDestruction) {
  const Dataset ds = make_indexed(200, 3, 8, 8, 5);
  BatchLoader::Options opt{.batch_size = 16, .augment = {.random_crop = 2, .hflip = true}, .seed = 1};
  opt.prefetch = false;
  BatchLoader reference(ds, opt);
  const auto e3 = all_batches(reference, 3);
  opt.prefetch = true;
  for (int round = 0; round < 20; ++round) {
    BatchLoader loader(ds, opt);
    Batch b;
    ASSERT_TRUE(loader.next(b));  // implicitly epoch 0
    EXPECT_EQ(b.index, 0);
    loader.start_epoch(5);        // abandon, with batch 1 of epoch 0 likely in flight
    loader.start_epoch(3, 2);     // and again before taking anything
    ASSERT_TRUE(loader.next(b));
    EXPECT_TRUE(same_batch(b, e3[2]));
    ASSERT_TRUE(loader.next(b));
    EXPECT_TRUE(same_batch(b, e3[3]));
    // The destructor runs here with batch 4 being prepared: it must join, not hang or race.
  }
  for (int round = 0; round < 20; ++round) {
    BatchLoader idle(ds, opt);  // never started
    BatchLoader started(ds, opt);
    started.start_epoch(round);
  }
}

TEST(LoaderTest, ComputeNormalizationKnownValues) {
  Dataset ds = make_indexed(2, 2, 1, 2, 0);
  // Channel 0: pixels 0, 255, 0, 255 -> mean 0.5, std 0.5. Channel 1: all 51 -> mean 0.2, std 1.
  ds.images = {0, 255, 51, 51, 0, 255, 51, 51};
  const Normalization n = compute_normalization(ds);
  ASSERT_EQ(n.mean.size(), 2u);
  EXPECT_NEAR(n.mean[0], 0.5, 1e-6);
  EXPECT_NEAR(n.std[0], 0.5, 1e-6);
  EXPECT_NEAR(n.mean[1], 0.2, 1e-6);
  EXPECT_EQ(n.std[1], 1.0f);  // a constant channel does not divide by zero
  Dataset empty_ds;
  EXPECT_THROW(compute_normalization(empty_ds), Error);
}

TEST(LoaderTest, NormalisedBatchesHaveZeroMeanUnitStd) {
  Dataset ds = make_indexed(300, 3, 4, 4, 6);
  Generator g(1);
  // Give the channels different ranges, so a mix-up of channels would show.
  for (int64_t i = 0; i < ds.size; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t p = 0; p < 16; ++p) ds.images[(i * 3 + c) * 16 + p] = static_cast<uint8_t>(c * 60 + g.below(60 + 30 * c));
  const Normalization norm = compute_normalization(ds);
  BatchLoader loader(ds, {.batch_size = 64, .norm = norm, .seed = 2});
  std::vector<double> sum(3, 0), sum_sq(3, 0);
  double count = 0;
  for (const auto& b : all_batches(loader, 0)) {
    const float* x = b.images.data();
    for (int64_t i = 0; i < b.images.dim(0); ++i)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t p = 0; p < 16; ++p) {
          const double v = x[(i * 3 + c) * 16 + p];
          sum[c] += v;
          sum_sq[c] += v * v;
        }
    count += b.images.dim(0) * 16;
  }
  for (int c = 0; c < 3; ++c) {
    const double mean = sum[c] / count;
    EXPECT_NEAR(mean, 0.0, 1e-4) << c;
    EXPECT_NEAR(std::sqrt(sum_sq[c] / count - mean * mean), 1.0, 1e-4) << c;
  }
  EXPECT_THROW(BatchLoader(ds, {.norm = {{0.5f}, {0.5f}}}), Error);          // 1 channel of 3
  EXPECT_THROW(BatchLoader(ds, {.norm = {{0, 0, 0}, {1, 0, 1}}}), Error);    // std 0
  EXPECT_THROW(BatchLoader(ds, {.batch_size = 0}), Error);
}

TEST(LoaderTest, HorizontalFlipMirrorsImages) {
  // One 3-channel 4x5 image with distinct pixels, repeated: every batch image must be it or its mirror.
  const int64_t n = 64, C = 3, H = 4, W = 5;
  Dataset ds = make_indexed(n, C, H, W, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < C * H * W; ++k) ds.images[i * C * H * W + k] = static_cast<uint8_t>(1 + k);
  BatchLoader loader(ds, {.batch_size = n, .augment = {.hflip = true}, .seed = 4});
  const auto batches = all_batches(loader, 0);
  ASSERT_EQ(batches.size(), 1u);
  const Tensor& x = batches[0].images;
  EXPECT_EQ(x.shape(), (Shape{n, C, H, W}));
  int flipped = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool same = true, mirror = true;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx) {
          const float v = x.at({i, c, y, xx});
          same = same && v == static_cast<float>(1 + (c * H + y) * W + xx) / 255.0f;
          mirror = mirror && v == static_cast<float>(1 + (c * H + y) * W + (W - 1 - xx)) / 255.0f;
        }
    EXPECT_TRUE(same || mirror) << i;
    flipped += mirror;
  }
  EXPECT_GT(flipped, 10);  // about half of 64
  EXPECT_LT(flipped, 54);
}

TEST(LoaderTest, RandomCropShiftsWithZeroPadding) {
  // Each output must be the original shifted by some (dy, dx) in [-p, p]^2 with pixel-value-0
  // padding, normalised like every other pixel: (0 / 255 - mean) / std.
  const int64_t n = 100, C = 2, H = 6, W = 7, p = 2;
  Dataset ds = make_indexed(n, C, H, W, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < C * H * W; ++k) ds.images[i * C * H * W + k] = static_cast<uint8_t>(1 + 3 * k);
  const Normalization norm{{0.25f, 0.5f}, {0.5f, 0.2f}};
  BatchLoader loader(ds, {.batch_size = 32, .augment = {.random_crop = p}, .norm = norm, .seed = 8});
  auto expected = [&](int64_t c, int64_t y, int64_t x) {
    const int v = (y < 0 || y >= H || x < 0 || x >= W) ? 0 : 1 + 3 * ((c * H + y) * W + x);
    return (static_cast<float>(v) / 255.0f - norm.mean[c]) / norm.std[c];
  };
  std::set<std::pair<int64_t, int64_t>> shifts;
  for (const auto& b : all_batches(loader, 0)) {
    EXPECT_EQ(b.images.shape(), (Shape{b.images.dim(0), C, H, W}));
    for (int64_t i = 0; i < b.images.dim(0); ++i) {
      int matches = 0;
      for (int64_t dy = -p; dy <= p; ++dy)
        for (int64_t dx = -p; dx <= p; ++dx) {
          bool ok = true;
          for (int64_t c = 0; c < C && ok; ++c)
            for (int64_t y = 0; y < H && ok; ++y)
              for (int64_t x = 0; x < W && ok; ++x) ok = b.images.at({i, c, y, x}) == expected(c, y + dy, x + dx);
          if (ok) {
            ++matches;
            shifts.insert({dy, dx});
          }
        }
      EXPECT_EQ(matches, 1) << "batch " << b.index << " image " << i;
    }
  }
  EXPECT_GT(shifts.size(), 15u);  // 25 possible offsets, 100 draws
}
