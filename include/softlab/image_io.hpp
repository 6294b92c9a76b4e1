#pragma once
// Single images for `softlab predict`: binary and ASCII PGM (P5, P2: grey) and PPM (P6, P3:
// RGB), 8-bit (maxval <= 255). Returned as a one-image Dataset (CHW bytes, label -1).
#include <string>

#include "softlab/data.hpp"

namespace softlab {

Dataset read_pnm(const std::string& path);
void write_pnm(const std::string& path, const Dataset& ds, int64_t index);  // P5 or P6
bool looks_like_pnm(const std::string& path);  // by the magic bytes

}  // namespace softlab

namespace softlab {
// Any image input `softlab predict` accepts, detected by content: PGM/PPM, an IDX image
// file (plain or gzip), or CIFAR-10 binary records (by size: a multiple of 3073 bytes).
Dataset read_image_file(const std::string& path);
}  // namespace softlab

namespace softlab {
// The images of one IDX image file (plain or gzip), without labels (labels set to -1).
Dataset read_idx_images(const std::string& path);
}  // namespace softlab
