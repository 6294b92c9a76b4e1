// Content-based dispatch for `softlab predict` inputs.
#include <filesystem>
#include <fstream>

#include "softlab/error.hpp"
#include "softlab/image_io.hpp"

namespace softlab {

Dataset read_image_file(const std::string& path) {
  // The error_code forms: a path the process may not look at is bad input, not a crash.
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  SOFTLAB_CHECK(!ec || ec == std::errc::no_such_file_or_directory, "cannot read ", path, ": ", ec.message());
  SOFTLAB_CHECK(std::filesystem::exists(st), "cannot read ", path, ": no such file");
  SOFTLAB_CHECK(std::filesystem::is_regular_file(st), "cannot read ", path, ": not a regular file (",
                std::filesystem::is_directory(st) ? "a directory" : "a device, pipe or socket", ")");
  if (looks_like_pnm(path)) return read_pnm(path);
  unsigned char head[4] = {0, 0, 0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(head), 4);
  }
  const bool gzip = head[0] == 0x1f && head[1] == 0x8b;
  const bool idx3 = head[0] == 0 && head[1] == 0 && head[2] == 0x08 && head[3] == 0x03;
  if (gzip || idx3) return read_idx_images(path);
  const uintmax_t size = std::filesystem::file_size(path, ec);
  SOFTLAB_CHECK(!ec, "cannot read ", path, ": ", ec.message());
  SOFTLAB_CHECK(size > 0, "cannot read ", path, ": the file is empty");
  if (size % 3073 == 0) return read_cifar({path}, false);
  throw Error(detail::cat("cannot read ", path,
                          ": not a PGM/PPM image, an IDX image file (magic 0x00000803, plain or gzip), "
                          "nor CIFAR-10 binary records (a non-zero multiple of 3073 bytes)"));
}

}  // namespace softlab
