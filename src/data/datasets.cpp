// Where each data set lives and how it is loaded. The lookup order is the one in
// DESIGN.md ("Where data is found"); a miss lists every place tried, and why each did not
// count, because "data set not found" alone sends users guessing.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <utility>

#include "softlab/data.hpp"
#include "softlab/error.hpp"
#include "softlab/random.hpp"

namespace softlab {

namespace {

namespace fs = std::filesystem;

const char* const kDebianFashionDir = "/usr/share/datasets/fashion-mnist";

bool is_idx_dataset(const std::string& name) { return name == "mnist" || name == "fashion-mnist"; }

// The files that must be present, as the official archives name them.
std::vector<std::string> required_files(const std::string& name) {
  if (is_idx_dataset(name))
    return {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte"};
  if (name == "cifar10")
    return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
            "data_batch_5.bin", "test_batch.bin"};
  return {"train.bin", "test.bin"};  // cifar100
}

// The directory the official tarball unpacks to, accepted inside a data set directory.
std::string official_subdir(const std::string& name) {
  if (name == "cifar10") return "cifar-10-batches-bin";
  if (name == "cifar100") return "cifar-100-binary";
  return "";
}

// An IDX file may be stored plain or gzipped; the plain one wins (no decompression).
std::string idx_file(const fs::path& dir, const std::string& base) {
  std::error_code ec;
  if (fs::is_regular_file(dir / base, ec)) return (dir / base).string();
  if (fs::is_regular_file(dir / (base + ".gz"), ec)) return (dir / (base + ".gz")).string();
  return "";
}

// Empty when `dir` holds every required file; else why it does not.
std::string missing_in(const std::string& name, const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return "does not exist";
  if (!fs::is_directory(dir, ec)) return "is not a directory";
  std::string missing;
  for (const auto& f : required_files(name)) {
    const bool ok = is_idx_dataset(name) ? !idx_file(dir, f).empty() : fs::is_regular_file(dir / f, ec);
    if (!ok) missing += (missing.empty() ? "" : ", ") + f + (is_idx_dataset(name) ? "[.gz]" : "");
  }
  return missing.empty() ? "" : "lacks " + missing;
}

struct Probe {
  std::string dir;  // where the files are, when found
  std::string why;  // why not, otherwise
};

// A candidate counts if it holds the files, directly or in the official tarball's subdir.
Probe probe(const std::string& name, const fs::path& dir) {
  const std::string why = missing_in(name, dir);
  if (why.empty()) return {dir.string(), ""};
  const std::string sub = official_subdir(name);
  if (sub.empty()) return {"", why};
  if (missing_in(name, dir / sub).empty()) return {(dir / sub).string(), ""};
  return {"", why + " (checked " + sub + "/ in it too)"};
}

// Ancestors of the running executable (a build tree usually sits inside the checkout, so
// <checkout>/datasets is found from build/ or build/tests/ without being told).
std::vector<fs::path> executable_ancestors() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> out;
  if (ec || exe.empty()) return out;
  fs::path p = exe.parent_path();
  for (int up = 0; up < 4 && !p.empty(); ++up) {
    out.push_back(p);
    if (p == p.root_path()) break;
    p = p.parent_path();
  }
  return out;
}

std::string how_to_get(const std::string& name) {
  std::string s = detail::cat(
      "To get it: run `datasets/fetch.sh ", name,
      "` in the softlab checkout (downloads the official files into datasets/", name,
      "/), or put the files in a directory of your own and set data.path to it (or set "
      "$SOFTLAB_DATA_DIR to the directory that holds ",
      name, "/). See datasets/README.md.");
  if (name == "fashion-mnist")
    s += " On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` installs it in " +
         std::string(kDebianFashionDir) + ".";
  return s;
}

void check_known(const std::string& name) {
  for (const auto& k : known_datasets())
    if (k == name) return;
  std::string valid;
  for (const auto& k : known_datasets()) valid += (valid.empty() ? "" : ", ") + k;
  throw Error(detail::cat("unknown data set '", name, "'; valid names: ", valid));
}

}  // namespace

std::vector<std::string> known_datasets() { return {"mnist", "fashion-mnist", "cifar10", "cifar100"}; }

std::string find_dataset_dir(const std::string& dataset, const std::optional<std::string>& path) {
  check_known(dataset);
  std::error_code ec;

  // An explicit path is what the user asked for: never fall back from it silently.
  if (path) {
    if (!fs::exists(*path, ec))
      throw Error(detail::cat("data.path '", *path, "' (for data set '", dataset,
                              "') does not exist"));
    const Probe p = probe(dataset, *path);
    if (p.dir.empty())
      throw Error(detail::cat("data.path '", *path, "' ", p.why, " (data set '", dataset,
                              "' needs these files there). ", how_to_get(dataset)));
    return p.dir;
  }

  std::string looked;
  std::vector<std::pair<fs::path, std::string>> candidates;  // (dir, how it was derived)
  const char* env = std::getenv("SOFTLAB_DATA_DIR");
  if (env && *env)
    candidates.push_back({fs::path(env) / dataset, "$SOFTLAB_DATA_DIR/" + dataset});
  else
    looked += env ? "\n  $SOFTLAB_DATA_DIR: set but empty" : "\n  $SOFTLAB_DATA_DIR: not set";
  const fs::path cwd = fs::current_path(ec);
  if (!ec) candidates.push_back({cwd / "datasets" / dataset, "datasets/" + dataset + " in the current directory"});
  for (const auto& a : executable_ancestors())
    candidates.push_back({a / "datasets" / dataset, "datasets/" + dataset + " near the executable"});
  if (dataset == "fashion-mnist")
    candidates.push_back({kDebianFashionDir, "Debian package dataset-fashion-mnist"});

  std::vector<fs::path> seen;
  for (const auto& [dir, label] : candidates) {
    const fs::path norm = dir.lexically_normal();
    bool dup = false;
    for (const auto& s : seen) dup = dup || s == norm;
    if (dup) continue;
    seen.push_back(norm);
    const Probe p = probe(dataset, norm);
    if (!p.dir.empty()) return p.dir;
    looked += detail::cat("\n  ", norm.string(), " (", label, "): ", p.why);
  }
  throw Error(detail::cat("data set '", dataset, "' not found (data.path not given). Looked in:",
                          looked, "\n", how_to_get(dataset)));
}

DataSplit load_dataset(const std::string& dataset, const std::optional<std::string>& path) {
  DataSplit split;
  split.dir = find_dataset_dir(dataset, path);
  const fs::path dir(split.dir);
  if (is_idx_dataset(dataset)) {
    split.train = read_idx(idx_file(dir, "train-images-idx3-ubyte"), idx_file(dir, "train-labels-idx1-ubyte"));
    split.test = read_idx(idx_file(dir, "t10k-images-idx3-ubyte"), idx_file(dir, "t10k-labels-idx1-ubyte"));
    std::vector<std::string> names;
    if (dataset == "mnist")
      names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    else
      names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    split.train.class_names = split.test.class_names = names;
  } else if (dataset == "cifar10") {
    std::vector<std::string> train;
    for (int k = 1; k <= 5; ++k) train.push_back((dir / ("data_batch_" + std::to_string(k) + ".bin")).string());
    split.train = read_cifar(train, false);
    split.test = read_cifar({(dir / "test_batch.bin").string()}, false);
  } else {
    split.train = read_cifar({(dir / "train.bin").string()}, true);
    split.test = read_cifar({(dir / "test.bin").string()}, true);
  }
  split.train.name = split.test.name = dataset;
  // The readers accept an empty file set (an IDX count of 0 is legal), but nothing can be
  // trained or evaluated on it, and the normalisation would divide by zero.
  for (const auto& [ds, which] : {std::pair{&split.train, "train"}, std::pair{&split.test, "test"}})
    SOFTLAB_CHECK(ds->size > 0, "data set '", dataset, "' in '", split.dir, "': the ", which,
                  " split holds no images (its files' headers give a count of 0)");
  // Both splits must describe the same images, or a model trained on one cannot eval the other.
  SOFTLAB_CHECK(split.train.channels == split.test.channels && split.train.height == split.test.height &&
                    split.train.width == split.test.width,
                "data set '", dataset, "' in '", split.dir, "': train images are ", split.train.channels,
                "x", split.train.height, "x", split.train.width, " but test images are ",
                split.test.channels, "x", split.test.height, "x", split.test.width);
  return split;
}

Dataset class_balanced_subset(const Dataset& ds, int64_t size, uint64_t seed) {
  SOFTLAB_CHECK(!ds.is_sequence(), "data.subset = ", size, ": data set '", ds.name,
                "' holds token sequences; a class-balanced subset needs labelled images (use data.train_size)");
  SOFTLAB_CHECK(ds.num_classes > 0 && ds.labels.size() == static_cast<size_t>(ds.size) &&
                    ds.images.size() == static_cast<size_t>(ds.size * ds.image_bytes()),
                "data.subset = ", size, ": data set '", ds.name, "' is inconsistent: ", ds.size, " images, ",
                ds.labels.size(), " labels, ", ds.num_classes, " classes");
  SOFTLAB_CHECK(size > 0 && size <= ds.size, "data.subset = ", size, ": expected 1..", ds.size,
                " (the training set of '", ds.name, "' holds ", ds.size, " images)");
  const int64_t K = ds.num_classes;
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(K));
  for (int64_t i = 0; i < ds.size; ++i) {
    const int32_t y = ds.labels[static_cast<size_t>(i)];
    SOFTLAB_CHECK(y >= 0 && y < K, "data.subset: image ", i, " of '", ds.name, "' has label ", y, ", outside [0, ",
                  K, ")");
    by_class[static_cast<size_t>(y)].push_back(i);
  }
  // Its own stream, fixed by the run seed alone: the subset is the same in every epoch and on
  // resume, and changing augmentation or order seeds never changes which images are in it.
  Generator g(seed ^ 0x73756273657421ULL);  // "subset!"; Generator scrambles it through splitmix64
  std::vector<int64_t> kept;
  kept.reserve(static_cast<size_t>(size));
  for (int64_t c = 0; c < K; ++c) {
    const int64_t want = size / K + (c < size % K ? 1 : 0);
    std::vector<int64_t>& pool = by_class[static_cast<size_t>(c)];
    const int64_t have = static_cast<int64_t>(pool.size());
    if (want > have) {
      const std::string name = static_cast<size_t>(c) < ds.class_names.size()
                                   ? detail::cat(" ('", ds.class_names[static_cast<size_t>(c)], "')")
                                   : std::string();
      throw Error(detail::cat("data.subset = ", size, ": class ", c, name, " needs ", want, " images (", size,
                              " over ", K, " classes, the remainder to the lowest classes) but the training set of '",
                              ds.name, "' has only ", have));
    }
    // The first `want` places of a Fisher-Yates shuffle: a uniform draw without replacement.
    for (int64_t j = 0; j < want; ++j) {
      const int64_t r = j + static_cast<int64_t>(g.below(static_cast<uint64_t>(have - j)));
      std::swap(pool[static_cast<size_t>(j)], pool[static_cast<size_t>(r)]);
      kept.push_back(pool[static_cast<size_t>(j)]);
    }
  }
  std::sort(kept.begin(), kept.end());  // the data set's order, whatever the class order

  Dataset out;
  out.name = ds.name;
  out.size = size;
  out.channels = ds.channels;
  out.height = ds.height;
  out.width = ds.width;
  out.num_classes = ds.num_classes;
  out.class_names = ds.class_names;
  const int64_t bytes = ds.image_bytes();
  out.images.resize(static_cast<size_t>(size * bytes));
  out.labels.resize(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) {
    const int64_t k = kept[static_cast<size_t>(i)];
    std::copy_n(ds.images.begin() + k * bytes, bytes, out.images.begin() + i * bytes);
    out.labels[static_cast<size_t>(i)] = ds.labels[static_cast<size_t>(k)];
  }
  return out;
}

}  // namespace softlab
