// The CIFAR-10 and CIFAR-100 "binary version": files of fixed-size records with no
// header. CIFAR-10: 1 label byte + 3072 pixel bytes; CIFAR-100: coarse label byte,
// fine label byte + 3072 pixel bytes. Pixels are CHW already (1024 R, 1024 G, 1024 B,
// each 32x32 row-major), which is the layout Dataset keeps, so they are copied as is.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "softlab/data.hpp"
#include "softlab/error.hpp"

namespace softlab {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kSide = 32, kChannels = 3, kPixels = kChannels * kSide * kSide;  // 3072
constexpr int64_t kRecordsPerRead = 1024;  // read this many records per fread
// Pixel bytes held in memory at most: the real sets hold 150 MB (CIFAR-10 training batches),
// so anything near this is not CIFAR (a sparse file, say) and is refused before allocating.
constexpr int64_t kMaxPixelBytes = int64_t(1) << 31;

// Names of the classes, one per line, when the file exists and has exactly one per class
// (anything else is not the file we think it is, so it is ignored rather than trusted).
std::vector<std::string> read_class_names(const fs::path& file, int num_classes) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec) || fs::file_size(file, ec) > 64 * 1024 || ec) return {};
  std::ifstream in(file);
  if (!in) return {};
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (static_cast<int>(names.size()) != num_classes) return {};
  return names;
}

}  // namespace

Dataset read_cifar(const std::vector<std::string>& files, bool cifar100,
                   int64_t max_records_per_file) {
  SOFTLAB_CHECK(!files.empty(), "read_cifar: no files given");
  SOFTLAB_CHECK(max_records_per_file >= 0, "read_cifar: max_records_per_file is ",
                max_records_per_file, ", expected >= 0");
  const char* kind = cifar100 ? "CIFAR-100" : "CIFAR-10";
  const int64_t label_bytes = cifar100 ? 2 : 1;
  const int64_t record = label_bytes + kPixels;
  const int num_classes = cifar100 ? 100 : 10;

  // Check every file's size before reading any, and size the buffers once.
  std::vector<int64_t> take(files.size());
  int64_t total = 0;
  for (size_t f = 0; f < files.size(); ++f) {
    std::error_code ec;
    if (!fs::is_regular_file(files[f], ec))
      throw Error(detail::cat(kind, " file '", files[f], "' does not exist or is not a file"));
    const int64_t bytes = static_cast<int64_t>(fs::file_size(files[f], ec));
    SOFTLAB_CHECK(!ec, kind, " file '", files[f], "': cannot read its size: ", ec.message());
    if (bytes == 0 || bytes % record != 0)
      throw Error(detail::cat(kind, " file '", files[f], "' is ", bytes,
                              " bytes, expected a non-zero multiple of the ", record, "-byte record (",
                              label_bytes, " label byte", cifar100 ? "s" : "", " + ", kPixels,
                              " pixel bytes); is it the binary version of ", kind, "?"));
    take[f] = std::min(bytes / record, max_records_per_file);
    total += take[f];
    if (total > kMaxPixelBytes / kPixels)
      throw Error(detail::cat(kind, " file '", files[f], "': the files up to this one hold ", total,
                              " records, more than the ", kMaxPixelBytes / kPixels, " (", kMaxPixelBytes,
                              " pixel bytes) this reader takes; is it a CIFAR file?"));
  }

  Dataset ds;
  ds.size = total;
  ds.channels = kChannels;
  ds.height = kSide;
  ds.width = kSide;
  ds.num_classes = num_classes;
  ds.images.resize(static_cast<size_t>(total * kPixels));
  ds.labels.resize(static_cast<size_t>(total));

  std::vector<uint8_t> buf;
  int64_t out = 0;  // next example to fill
  for (size_t f = 0; f < files.size(); ++f) {
    std::unique_ptr<FILE, int (*)(FILE*)> fp(std::fopen(files[f].c_str(), "rb"), &std::fclose);
    if (!fp) throw Error(detail::cat("cannot open ", kind, " file '", files[f], "'"));
    for (int64_t r0 = 0; r0 < take[f]; r0 += kRecordsPerRead) {
      const int64_t n = std::min(kRecordsPerRead, take[f] - r0);
      buf.resize(static_cast<size_t>(n * record));
      if (std::fread(buf.data(), 1, buf.size(), fp.get()) != buf.size())
        throw Error(detail::cat(kind, " file '", files[f], "': short read at byte offset ",
                                r0 * record, " (did the file change while it was read?)"));
      for (int64_t r = 0; r < n; ++r) {
        const uint8_t* rec = buf.data() + r * record;
        const int coarse = rec[0];
        const int label = rec[label_bytes - 1];  // CIFAR-100: the fine label, second byte
        const int64_t offset = (r0 + r) * record;
        if (cifar100 && coarse >= 20)
          throw Error(detail::cat(kind, " file '", files[f], "': record ", r0 + r, " (byte offset ",
                                  offset, ") has coarse label ", coarse, ", expected 0..19"));
        if (label >= num_classes)
          throw Error(detail::cat(kind, " file '", files[f], "': record ", r0 + r, " (byte offset ",
                                  offset + label_bytes - 1, ") has label ", label, ", expected 0..",
                                  num_classes - 1));
        ds.labels[out] = label;
        std::copy(rec + label_bytes, rec + record, ds.images.begin() + out * kPixels);
        ++out;
      }
    }
  }

  const fs::path dir = fs::path(files[0]).parent_path();
  ds.class_names = read_class_names(dir / (cifar100 ? "fine_label_names.txt" : "batches.meta.txt"),
                                    num_classes);
  return ds;
}

Dataset read_cifar(const std::vector<std::string>& files, bool cifar100) {
  return read_cifar(files, cifar100, INT64_MAX);
}

}  // namespace softlab
