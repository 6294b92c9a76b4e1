// Content-based dispatch for `softlab predict` inputs.
#include <filesystem>
#include <fstream>

#include "softlab/error.hpp"
#include "softlab/image_io.hpp"

namespace softlab {

Dataset read_image_file(const std::string& path) {
  SOFTLAB_CHECK(std::filesystem::is_regular_file(path), "cannot read ", path, ": no such file");
  if (looks_like_pnm(path)) return read_pnm(path);
  unsigned char head[4] = {0, 0, 0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(head), 4);
  }
  const bool gzip = head[0] == 0x1f && head[1] == 0x8b;
  const bool idx3 = head[0] == 0 && head[1] == 0 && head[2] == 0x08 && head[3] == 0x03;
  if (gzip || idx3) return read_idx_images(path);
  if (std::filesystem::file_size(path) % 3073 == 0) return read_cifar({path}, false);
  throw Error(detail::cat("cannot read ", path,
                          ": not a PGM/PPM image, an IDX image file (magic 0x00000803, plain or gzip), "
                          "nor CIFAR-10 binary records (a multiple of 3073 bytes)"));
}

}  // namespace softlab
