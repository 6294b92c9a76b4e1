// The fuzz targets of targets.hpp. Readers that take a path get the bytes through a file
// in a scratch directory of this process, rewritten for every input.
#include "targets.hpp"

#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <typeinfo>
#include <vector>

#include "softlab/checkpoint.hpp"
#include "softlab/config.hpp"
#include "softlab/data.hpp"
#include "softlab/error.hpp"
#include "softlab/image_io.hpp"
#include "softlab/sweep.hpp"
#include "softlab/train.hpp"

namespace softlab::fuzz {

namespace {

namespace fs = std::filesystem;

// The base of the --set and sweep targets: small and valid, so that every rejection comes
// from what the fuzzer wrote.
constexpr const char* kBaseConfig = R"({
  "name": "fuzz_base",
  "data": {"dataset": "fashion-mnist"},
  "model": {"type": "vit", "dim": 16, "depth": 1, "heads": 2, "patch_size": 7,
            "attention": {"type": "softmax"}, "head": {"type": "softmax"}},
  "train": {"epochs": 1, "batch_size": 8}
}
)";

[[noreturn]] void finding(const char* target, const std::string& what) {
  // Long messages (a reader that echoes its input) are cut: the input file is the evidence.
  const std::string shown = what.size() > 4000 ? what.substr(0, 4000) + "... (cut)" : what;
  std::fprintf(stderr, "\nfuzz target '%s': FINDING: %s\n", target, shown.c_str());
  std::fflush(stderr);
  std::abort();
}

void require(bool ok, const char* target, const std::string& what) {
  if (!ok) finding(target, what);
}

// Runs one use of a reader: returns normally when it accepts the input or rejects it as bad
// input, and reports anything else as a finding.
template <class F>
void expect_accept_or_bad_input(const char* target, const F& body) {
  try {
    body();
  } catch (const Error& e) {
    if (e.kind() == Error::Kind::BadInput) return;
    finding(target, detail::cat("softlab::Error of kind Internal: ", e.what()));
  } catch (const std::exception& e) {
    finding(target, detail::cat("exception of type ", typeid(e).name(), " (not softlab::Error): ", e.what()));
  } catch (...) {
    finding(target, "exception of a type that is not std::exception");
  }
}

// A directory of this process's own under the system's temporary directory.
class Scratch {
 public:
  Scratch() {
    std::string tmpl = (fs::temp_directory_path() / "softlab-fuzz-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
      std::perror("softlab fuzz: cannot create a scratch directory");
      std::abort();
    }
    dir_ = tmpl;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  std::string write(const char* name, const uint8_t* data, size_t size) const {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    if (!out) {
      std::fprintf(stderr, "softlab fuzz: cannot write %s\n", path.c_str());
      std::abort();
    }
    return path;
  }
  std::string write(const char* name, const std::string& text) const {
    return write(name, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  }

 private:
  fs::path dir_;
};

const Scratch& scratch() {
  static const Scratch s;
  return s;
}

const std::string& base_config_path() {
  static const std::string path = scratch().write("base.json", kBaseConfig);
  return path;
}

// What the trainer and eval rely on in a data set a reader accepted.
void check_dataset(const char* target, const Dataset& ds) {
  const bool shape_ok = ds.size >= 0 && ds.channels > 0 && ds.height > 0 && ds.width > 0 &&
                        ds.images.size() == static_cast<size_t>(ds.size * ds.image_bytes()) &&
                        ds.labels.size() == static_cast<size_t>(ds.size);
  require(shape_ok, target,
          detail::cat("accepted a data set of inconsistent size: ", ds.size, " x ", ds.channels, " x ", ds.height,
                      " x ", ds.width, " with ", ds.images.size(), " image bytes and ", ds.labels.size(), " labels"));
  for (size_t i = 0; i < ds.labels.size(); ++i) {
    const int32_t l = ds.labels[i];
    require(l == -1 || (l >= 0 && l < ds.num_classes), target,
            detail::cat("accepted label ", l, " at ", i, " with ", ds.num_classes, " classes"));
  }
}

// A resolved config is what a run directory's config.json holds; written out and read back
// it must resolve to itself, or eval and --resume would see another config than train did.
void check_resolved(const char* target, const Config& c) {
  const json again = resolve_config(json::parse(c.resolved.dump()));
  require(again == c.resolved, target,
          detail::cat("resolving the resolved config changes it: ", c.resolved.dump(), " -> ", again.dump()));
}

std::string as_text(const uint8_t* data, size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

}  // namespace

int config_file(const uint8_t* data, size_t size) {
  const std::string path = scratch().write("config.json", data, size);
  expect_accept_or_bad_input("config", [&] { check_resolved("config", load_config(path)); });
  return 0;
}

int config_set(const uint8_t* data, size_t size) {
  std::vector<std::string> sets;
  const std::string text = as_text(data, size);
  size_t begin = 0;
  while (begin < text.size()) {
    const size_t end = std::min(text.find('\n', begin), text.size());
    sets.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  const std::string& base = base_config_path();
  expect_accept_or_bad_input("set", [&] { check_resolved("set", load_config(base, sets)); });
  return 0;
}

int idx(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t images_bytes = std::min<size_t>(data[0] | (size_t(data[1]) << 8), size - 2);
  const std::string images = scratch().write("images-idx3-ubyte", data + 2, images_bytes);
  const std::string labels = scratch().write("labels-idx1-ubyte", data + 2 + images_bytes, size - 2 - images_bytes);
  expect_accept_or_bad_input("idx", [&] {
    const Dataset ds = read_idx(images, labels);
    check_dataset("idx", ds);
    require(ds.num_classes == 10, "idx", detail::cat("an IDX data set with ", ds.num_classes, " classes"));
  });
  return 0;
}

int cifar(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool cifar100 = (data[0] & 1) != 0;
  const bool one_record = (data[0] & 2) != 0;
  const std::string file = scratch().write("data_batch_1.bin", data + 1, size - 1);
  expect_accept_or_bad_input("cifar", [&] {
    const Dataset ds = one_record ? read_cifar({file}, cifar100, 1) : read_cifar({file}, cifar100);
    check_dataset("cifar", ds);
    require(ds.channels == 3 && ds.height == 32 && ds.width == 32 && ds.size >= 1, "cifar",
            detail::cat("accepted ", ds.size, " images of ", ds.channels, "x", ds.height, "x", ds.width));
  });
  return 0;
}

int image(const uint8_t* data, size_t size) {
  const std::string file = scratch().write("input", data, size);
  expect_accept_or_bad_input("image", [&] { check_dataset("image", read_image_file(file)); });
  return 0;
}

int checkpoint(const uint8_t* data, size_t size) {
  const std::string file = scratch().write("last.ckpt", data, size);
  expect_accept_or_bad_input("checkpoint", [&] {
    const Checkpoint ck = load_checkpoint(file);
    for (const auto& [name, t] : ck.tensors)
      require(t.defined(), "checkpoint", detail::cat("tensor '", name, "' was accepted but is undefined"));
    (void)model_state(ck, file, /*ema=*/true);
  });
  expect_accept_or_bad_input("checkpoint", [&] { (void)load_model(file); });
  return 0;
}

int sweep(const uint8_t* data, size_t size) {
  (void)base_config_path();  // "base.json" beside the sweep file
  const std::string file = scratch().write("sweep.json", data, size);
  expect_accept_or_bad_input("sweep", [&] {
    const Sweep s = load_sweep(file);
    require(!s.runs.empty(), "sweep", "accepted a sweep without runs");
    for (const SweepRun& r : s.runs)
      require(!r.cell.empty() && !r.dir.empty(), "sweep", detail::cat("a run without a cell name or directory"));
  });
  return 0;
}

std::span<const Target> targets() {
  static const Target table[] = {
      {"config", config_file, "a config file"},
      {"set", config_set, "--set KEY=VALUE overrides, one per line, on a fixed base config"},
      {"idx", idx, "IDX images + labels files, plain or gzip (2-byte little-endian length of the images file first)"},
      {"cifar", cifar, "a CIFAR binary records file (first byte: bit 0 CIFAR-100, bit 1 one record per file)"},
      {"image", image, "a softlab predict input: PGM/PPM, IDX images or CIFAR-10 records"},
      {"checkpoint", checkpoint, "a checkpoint file (load_checkpoint, load_model)"},
      {"sweep", sweep, "a sweep file, with a valid base.json beside it"},
  };
  return table;
}

const Target* find_target(const std::string& name) {
  for (const Target& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace softlab::fuzz
