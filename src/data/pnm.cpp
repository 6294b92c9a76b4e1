// PGM/PPM reading and writing (netpbm formats P2, P3, P5, P6 with maxval <= 255).
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "softlab/error.hpp"
#include "softlab/image_io.hpp"

namespace softlab {

bool looks_like_pnm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char m[2] = {0, 0};
  in.read(m, 2);
  return in.gcount() == 2 && m[0] == 'P' && (m[1] == '2' || m[1] == '3' || m[1] == '5' || m[1] == '6');
}

Dataset read_pnm(const std::string& path) {
  // A regular file only: its size bounds everything read from it (a FIFO or a device has none).
  std::error_code ec;
  SOFTLAB_CHECK(std::filesystem::is_regular_file(path, ec), "cannot read image ", path,
                ": no such file, or not a regular file");
  // The whole file is read into memory: refuse sizes no single image for a model comes near.
  constexpr uintmax_t kMaxFile = uintmax_t(1) << 30;
  const uintmax_t file_size = std::filesystem::file_size(path, ec);
  SOFTLAB_CHECK(!ec, "cannot read image ", path, ": ", ec.message());
  SOFTLAB_CHECK(file_size <= kMaxFile, "image ", path, ": the file has ", file_size, " bytes, more than the ", kMaxFile,
                " this reader takes for one image");
  std::ifstream in(path, std::ios::binary);
  SOFTLAB_CHECK(in.good(), "cannot open image ", path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  auto bad = [&](const std::string& what) { return Error(detail::cat("image ", path, ": ", what)); };
  // Header tokens are separated by white space; '#' starts a comment to the end of the line.
  auto token = [&]() -> std::string {
    for (;;) {
      while (pos < bytes.size() && std::isspace(static_cast<unsigned char>(bytes[pos]))) ++pos;
      if (pos < bytes.size() && bytes[pos] == '#') {
        while (pos < bytes.size() && bytes[pos] != '\n') ++pos;
        continue;
      }
      break;
    }
    const size_t b = pos;
    while (pos < bytes.size() && !std::isspace(static_cast<unsigned char>(bytes[pos]))) ++pos;
    return bytes.substr(b, pos - b);
  };
  auto number = [&](const char* what) -> int64_t {
    const std::string t = token();
    if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
      throw bad(detail::cat("expected the ", what, " as a number at byte ", pos, ", found '", t, "'"));
    return std::stoll(t);
  };
  const std::string magic = token();
  if (magic != "P2" && magic != "P3" && magic != "P5" && magic != "P6")
    throw bad(detail::cat("not a PGM/PPM file (magic '", magic.substr(0, 8), "', expected P2, P3, P5 or P6)"));
  const bool rgb = magic == "P3" || magic == "P6", ascii = magic == "P2" || magic == "P3";
  const int64_t w = number("width"), h = number("height"), maxval = number("maximum value");
  if (w <= 0 || h <= 0 || w > 65536 || h > 65536) throw bad(detail::cat("unsupported size ", w, "x", h));
  if (maxval <= 0 || maxval > 255) throw bad(detail::cat("maximum value ", maxval, " is not supported (8-bit only)"));
  // w, h <= 65536 and c <= 3: the product fits in int64 with room to spare. The header is
  // checked against the bytes the file actually holds before anything is allocated from it.
  const int64_t c = rgb ? 3 : 1, n = w * h * c;
  const size_t left = bytes.size() > pos ? bytes.size() - pos : 0;
  if (ascii) {
    // Each value takes a digit and a separator, the last one at least the digit.
    if (static_cast<uint64_t>(n) * 2 - 1 > left)
      throw bad(detail::cat("truncated: ", w, "x", h, "x", c, " needs ", n, " pixel values (at least ", n * 2 - 1,
                            " bytes), the file has ", left, " bytes after the header (byte offset ", pos, ")"));
  } else if (pos >= bytes.size() || !std::isspace(static_cast<unsigned char>(bytes[pos])) ||
             bytes.size() - pos - 1 < static_cast<size_t>(n)) {
    throw bad(detail::cat("truncated: ", w, "x", h, "x", c, " needs ", n,
                          " pixel bytes after one white-space byte at byte offset ", pos, ", the file has ",
                          left > 0 ? left - 1 : 0));
  }
  std::vector<uint8_t> interleaved(static_cast<size_t>(n));
  if (ascii) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = number("pixel value");
      if (v > maxval)
        throw bad(detail::cat("pixel value ", v, " (value ", i, ", ending at byte ", pos, ") exceeds the maximum ", maxval));
      interleaved[static_cast<size_t>(i)] = static_cast<uint8_t>(v * 255 / maxval);
    }
    const std::string rest = token();
    if (!rest.empty())
      throw bad(detail::cat("data after the last of the ", n, " pixel values at byte ", pos - rest.size(),
                            " (one image per file)"));
  } else {
    ++pos;  // exactly one white-space byte after maxval
    // Trailing white space is tolerated (some writers end with a newline); anything else is a
    // second image or a wrong size in the header.
    for (size_t k = pos + static_cast<size_t>(n); k < bytes.size(); ++k)
      if (!std::isspace(static_cast<unsigned char>(bytes[k])))
        throw bad(detail::cat(bytes.size() - pos - static_cast<size_t>(n), " bytes after the ", w, "x", h, "x", c,
                              " pixels, from byte offset ", pos + static_cast<size_t>(n),
                              " (one image per file; does the header give the right size?)"));
    for (int64_t i = 0; i < n; ++i) {
      const int v = static_cast<unsigned char>(bytes[pos + static_cast<size_t>(i)]);
      // Above maxval, v * 255 / maxval would wrap around in a byte: a different image.
      if (v > maxval)
        throw bad(detail::cat("pixel value ", v, " at byte offset ", pos + static_cast<size_t>(i),
                              " exceeds the maximum ", maxval));
      interleaved[static_cast<size_t>(i)] = static_cast<uint8_t>(v * 255 / maxval);
    }
  }
  Dataset ds;
  ds.name = path;
  ds.size = 1;
  ds.channels = c;
  ds.height = h;
  ds.width = w;
  ds.labels = {-1};
  ds.images.resize(static_cast<size_t>(n));
  for (int64_t y = 0; y < h; ++y)  // HWC (file) -> CHW
    for (int64_t x = 0; x < w; ++x)
      for (int64_t ch = 0; ch < c; ++ch)
        ds.images[static_cast<size_t>((ch * h + y) * w + x)] = interleaved[static_cast<size_t>((y * w + x) * c + ch)];
  return ds;
}

void write_pnm(const std::string& path, const Dataset& ds, int64_t index) {
  SOFTLAB_CHECK(ds.channels == 1 || ds.channels == 3, "write_pnm: ", ds.channels, " channels");
  SOFTLAB_CHECK(index >= 0 && index < ds.size, "write_pnm: index ", index, " out of range");
  std::ofstream out(path, std::ios::binary);
  SOFTLAB_CHECK(out.good(), "cannot create ", path);
  out << (ds.channels == 1 ? "P5" : "P6") << "\n" << ds.width << " " << ds.height << "\n255\n";
  const uint8_t* img = ds.images.data() + index * ds.image_bytes();
  for (int64_t y = 0; y < ds.height; ++y)
    for (int64_t x = 0; x < ds.width; ++x)
      for (int64_t ch = 0; ch < ds.channels; ++ch)
        out.put(static_cast<char>(img[(ch * ds.height + y) * ds.width + x]));
}

}  // namespace softlab
