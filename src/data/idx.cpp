// IDX files (MNIST, Fashion-MNIST): a big-endian header (magic, then one int32 per
// dimension) followed by the uint8 body. Read through zlib's gzread, which decompresses
// gzip files and passes plain files through unchanged, so "foo.gz" and "foo" share one path.
//
// A header is untrusted input: nothing is allocated from it until it has been checked
// against a sane bound and, for plain files, against the file's actual size. A gzip
// file's size says nothing about its decompressed length, so its body is read in
// chunks, the buffer only grows as bytes actually arrive, and one decompressed byte past
// what the header describes is an error (so a gzip bomb costs at most the header's size).
// Bytes after the end of the gzip stream that are not another gzip member are ignored by
// zlib's gzread (gzip -d ignores them too, with a warning); the data itself is covered by
// the stream's own CRC, which the read past the body makes zlib check.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "softlab/data.hpp"
#include "softlab/image_io.hpp"
#include "softlab/error.hpp"

namespace softlab {

namespace {

namespace fs = std::filesystem;

constexpr uint32_t kImagesMagic = 0x00000803;  // uint8, 3 dimensions: N x rows x cols
constexpr uint32_t kLabelsMagic = 0x00000801;  // uint8, 1 dimension: N
constexpr uint64_t kMaxBody = uint64_t(1) << 31;  // no real IDX file comes near 2 GiB
constexpr uint64_t kChunk = uint64_t(1) << 24;    // gz bodies are read 16 MiB at a time

struct GzCloser {
  gzFile f;
  ~GzCloser() {
    if (f) gzclose(f);
  }
};

bool starts_with_gzip_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char m[2] = {0, 0};
  in.read(reinterpret_cast<char*>(m), 2);
  return in.gcount() == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

uint32_t be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

void put_be32(unsigned char* p, uint32_t v) {
  p[0] = static_cast<unsigned char>(v >> 24);
  p[1] = static_cast<unsigned char>(v >> 16);
  p[2] = static_cast<unsigned char>(v >> 8);
  p[3] = static_cast<unsigned char>(v);
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Reads up to n bytes; returns how many arrived. A zlib error (corrupt or cut-off gzip
// stream) is an Error that says how far the read got.
uint64_t read_some(gzFile f, unsigned char* dst, uint64_t n, const std::string& path,
                   uint64_t offset) {
  uint64_t got = 0;
  while (got < n) {
    const unsigned want = static_cast<unsigned>(std::min<uint64_t>(n - got, kChunk));
    const int r = gzread(f, dst + got, want);
    if (r < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      throw Error(detail::cat("IDX file '", path, "': corrupt or truncated gzip data after ",
                              offset + got, " decompressed bytes (zlib: ", msg ? msg : "?", ")"));
    }
    if (r == 0) break;
    got += static_cast<uint64_t>(r);
  }
  return got;
}

struct IdxBody {
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;
};

// One IDX file with the given magic (and so the given number of dimensions).
IdxBody read_idx_file(const std::string& path, uint32_t magic, const char* what) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(detail::cat("IDX ", what, " file '", path, "' does not exist or is not a file"));
  const uint64_t file_size = fs::file_size(path, ec);
  SOFTLAB_CHECK(!ec, "IDX ", what, " file '", path, "': cannot read its size: ", ec.message());
  const bool gz = starts_with_gzip_magic(path);

  GzCloser file{gzopen(path.c_str(), "rb")};
  if (!file.f)
    throw Error(detail::cat("cannot open IDX ", what, " file '", path, "': ", std::strerror(errno)));

  // The magic first: a wrong file (labels for images, say) should be named as such, even
  // when it is too short for the header the expected kind would have.
  const int ndims = static_cast<int>(magic & 0xff);
  unsigned char header[4 + 4 * 3];
  const uint64_t header_bytes = 4 + 4 * uint64_t(ndims);
  uint64_t got_header = read_some(file.f, header, 4, path, 0);
  if (got_header < 4)
    throw Error(detail::cat("IDX ", what, " file '", path, "' is too short for its header: expected ",
                            header_bytes, " bytes, found ", got_header));

  const uint32_t found_magic = be32(header);
  if (found_magic != magic) {
    std::string hint;
    if (found_magic == kImagesMagic) hint = " (this looks like an images file)";
    if (found_magic == kLabelsMagic) hint = " (this looks like a labels file)";
    throw Error(detail::cat("IDX ", what, " file '", path, "': expected magic number ", hex32(magic),
                            ", found ", hex32(found_magic), hint));
  }

  got_header += read_some(file.f, header + 4, header_bytes - 4, path, 4);
  if (got_header < header_bytes)
    throw Error(detail::cat("IDX ", what, " file '", path, "' is too short for its header: expected ",
                            header_bytes, " bytes, found ", got_header));

  IdxBody out;
  // body: bytes of the whole data; item: bytes of one entry (an image), bounded on its own so
  // that a count of 0 cannot hide rows x cols that overflow wherever an image size is used.
  uint64_t body = 1, item = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint32_t v = be32(header + 4 + 4 * d);
    if (v > 0x7fffffffu)
      throw Error(detail::cat("IDX ", what, " file '", path, "': dimension ", d, " is ", int32_t(v),
                              " (negative as a big-endian int32)"));
    // Rows and columns of an image must exist; a count of zero is an empty (legal) set.
    if (v == 0 && d > 0)
      throw Error(detail::cat("IDX ", what, " file '", path, "': dimension ", d, " is 0"));
    out.dims.push_back(v);
    if (d > 0 && item > kMaxBody / v)
      throw Error(detail::cat("IDX ", what, " file '", path, "': header claims entries of ", Shape(out.dims),
                              "... i.e. more than ", kMaxBody, " bytes each; refusing to read it"));
    if (d > 0) item *= v;
    // Multiply step by step so a hostile header cannot overflow the product.
    if (v != 0 && body > kMaxBody / v)
      throw Error(detail::cat("IDX ", what, " file '", path, "': header claims dimensions ",
                              Shape(out.dims), "... i.e. more than ", kMaxBody,
                              " bytes of data; refusing to read it"));
    body *= v;
  }
  if (body > kMaxBody)
    throw Error(detail::cat("IDX ", what, " file '", path, "': header claims dimensions ",
                            Shape(out.dims), " = ", body, " bytes, more than the ", kMaxBody,
                            "-byte limit"));

  if (!gz) {
    // A plain file's size is known: the header must agree with it exactly.
    if (header_bytes + body != file_size)
      throw Error(detail::cat("IDX ", what, " file '", path, "': header says ", Shape(out.dims),
                              ", which needs ", header_bytes + body, " bytes (", header_bytes,
                              " header + ", body, " data), but the file has ", file_size, " bytes"));
    out.bytes.resize(body);
    const uint64_t got = read_some(file.f, out.bytes.data(), body, path, header_bytes);
    SOFTLAB_CHECK(got == body, "IDX ", what, " file '", path, "': expected ", body,
                  " data bytes, read ", got);
    return out;
  }

  // gzip: grow the buffer as data arrives, so a lying header costs at most one chunk.
  uint64_t have = 0;
  while (have < body) {
    const uint64_t step = std::min(kChunk, body - have);
    out.bytes.resize(have + step);
    const uint64_t got = read_some(file.f, out.bytes.data() + have, step, path, header_bytes + have);
    have += got;
    if (got < step)
      throw Error(detail::cat("IDX ", what, " file '", path, "' (gzip) is truncated: header says ",
                              Shape(out.dims), ", which needs ", body,
                              " data bytes, but the data ends after ", have, " (at decompressed offset ",
                              header_bytes + have, ")"));
  }
  unsigned char extra;
  if (read_some(file.f, &extra, 1, path, header_bytes + body) != 0)
    throw Error(detail::cat("IDX ", what, " file '", path, "' (gzip): data continues past the ",
                            header_bytes + body, " bytes its header ", Shape(out.dims), " describes"));
  return out;
}

void write_idx_file(const std::string& path, bool gz, const unsigned char* header,
                    size_t header_bytes, const uint8_t* body, size_t body_bytes) {
  // "T" asks zlib for a plain (transparent) file, so both kinds share this code.
  GzCloser file{gzopen(path.c_str(), gz ? "wb" : "wbT")};
  if (!file.f) throw Error(detail::cat("cannot create '", path, "': ", std::strerror(errno)));
  auto put = [&](const void* p, size_t n) {
    const auto* c = static_cast<const unsigned char*>(p);
    while (n > 0) {
      const unsigned step = static_cast<unsigned>(std::min<size_t>(n, kChunk));
      if (gzwrite(file.f, c, step) != static_cast<int>(step)) {
        int code = 0;
        throw Error(detail::cat("cannot write '", path, "': ", gzerror(file.f, &code)));
      }
      c += step;
      n -= step;
    }
  };
  put(header, header_bytes);
  put(body, body_bytes);
  const int rc = gzclose(file.f);
  file.f = nullptr;
  SOFTLAB_CHECK(rc == Z_OK, "cannot finish writing '", path, "' (zlib error ", rc, ")");
}

}  // namespace

Dataset read_idx_images(const std::string& path) {
  IdxBody img = read_idx_file(path, kImagesMagic, "images");
  Dataset ds;
  ds.name = path;
  ds.size = img.dims[0];
  ds.channels = 1;
  ds.height = img.dims[1];
  ds.width = img.dims[2];
  ds.num_classes = 10;
  ds.images = std::move(img.bytes);
  ds.labels.assign(static_cast<size_t>(ds.size), -1);
  return ds;
}

Dataset read_idx(const std::string& images_path, const std::string& labels_path) {
  Dataset ds = read_idx_images(images_path);
  ds.name.clear();
  IdxBody lab = read_idx_file(labels_path, kLabelsMagic, "labels");
  if (ds.size != lab.dims[0])
    throw Error(detail::cat("IDX images file '", images_path, "' holds ", ds.size,
                            " images but labels file '", labels_path, "' holds ", lab.dims[0],
                            " labels; expected the same count"));
  for (size_t i = 0; i < lab.bytes.size(); ++i) {
    const int v = lab.bytes[i];
    if (v > 9)
      throw Error(detail::cat("IDX labels file '", labels_path, "': label ", i, " (byte offset ",
                              8 + i, ") is ", v, ", expected 0..9"));
    ds.labels[i] = v;
  }
  return ds;
}

void write_idx(const Dataset& ds, const std::string& dir, const std::string& prefix, bool gz) {
  SOFTLAB_CHECK(ds.channels == 1, "write_idx: IDX image files hold one channel, data set '", ds.name,
                "' has ", ds.channels);
  SOFTLAB_CHECK(ds.size >= 0 && ds.size <= 0x7fffffff && ds.height > 0 && ds.height <= 0x7fffffff &&
                    ds.width > 0 && ds.width <= 0x7fffffff,
                "write_idx: dimensions ", ds.size, " x ", ds.height, " x ", ds.width,
                " do not fit an IDX header");
  SOFTLAB_CHECK(ds.images.size() == static_cast<size_t>(ds.size * ds.image_bytes()) &&
                    ds.labels.size() == static_cast<size_t>(ds.size),
                "write_idx: data set holds ", ds.images.size(), " image bytes and ",
                ds.labels.size(), " labels, expected ", ds.size * ds.image_bytes(), " and ", ds.size);
  std::vector<uint8_t> labels(ds.labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    SOFTLAB_CHECK(ds.labels[i] >= 0 && ds.labels[i] <= 255, "write_idx: label ", i, " is ",
                  ds.labels[i], ", an IDX label is one byte");
    labels[i] = static_cast<uint8_t>(ds.labels[i]);
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  SOFTLAB_CHECK(!ec, "write_idx: cannot create directory '", dir, "': ", ec.message());

  const std::string ext = gz ? ".gz" : "";
  unsigned char ih[16];
  put_be32(ih, kImagesMagic);
  put_be32(ih + 4, static_cast<uint32_t>(ds.size));
  put_be32(ih + 8, static_cast<uint32_t>(ds.height));
  put_be32(ih + 12, static_cast<uint32_t>(ds.width));
  write_idx_file((fs::path(dir) / (prefix + "-images-idx3-ubyte" + ext)).string(), gz, ih, sizeof ih,
                 ds.images.data(), ds.images.size());
  unsigned char lh[8];
  put_be32(lh, kLabelsMagic);
  put_be32(lh + 4, static_cast<uint32_t>(ds.size));
  write_idx_file((fs::path(dir) / (prefix + "-labels-idx1-ubyte" + ext)).string(), gz, lh, sizeof lh,
                 labels.data(), labels.size());
}

}  // namespace softlab
