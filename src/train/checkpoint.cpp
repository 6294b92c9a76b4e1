// safetensors-layout checkpoints with atomic publication, a CRC over the header and one
// over the data, and a reader that checks every byte it trusts before allocating from it.
#include "softlab/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "softlab/error.hpp"

namespace softlab {

namespace fs = std::filesystem;

namespace {
void write_all(int fd, const void* p, size_t n, const std::string& path) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(detail::cat("cannot write ", path, ": ", std::strerror(errno)), Error::Kind::Internal);
    }
    c += w;
    n -= static_cast<size_t>(w);
  }
}

// Writes via a temporary file + fsync + rename + directory fsync. `fill` writes the bytes.
template <class F>
void publish_atomic(const std::string& path, const F& fill) {
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string tmp = (dir / (target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(detail::cat("cannot create ", tmp, ": ", std::strerror(errno)));
  try {
    fill(fd, tmp);
    if (::fsync(fd) != 0) throw Error(detail::cat("fsync ", tmp, ": ", std::strerror(errno)), Error::Kind::Internal);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw Error(detail::cat("cannot rename ", tmp, " to ", path, ": ", std::strerror(e)), Error::Kind::Internal);
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// The header's CRC field: the first key of __metadata__, so the header text of a version 2
// file starts with kHeaderCrcPrefix and then 8 hex digits. A fixed place lets the reader
// check the header bytes before it hands them to a JSON parser.
constexpr const char* kHeaderCrcKey = "softlab_header_crc32";
constexpr std::string_view kHeaderCrcPrefix = R"({"__metadata__":{"softlab_header_crc32":")";
// safetensors' own bound on the header; softlab's headers are tens of kilobytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kMaxRank = 64;
// Elements of one tensor: far above any model softlab trains, far below where the byte
// count (4 per element) or a product of dimensions could overflow.
constexpr uint64_t kMaxElements = uint64_t(1) << 56;

// crc32 takes a uInt length: feed it in pieces so tensors above 4 GiB are covered whole.
uLong crc_update(uLong crc, const void* p, uint64_t n) {
  const auto* b = static_cast<const Bytef*>(p);
  while (n > 0) {
    const uInt step = static_cast<uInt>(std::min<uint64_t>(n, uint64_t(1) << 30));
    crc = crc32(crc, b, step);
    b += step;
    n -= step;
  }
  return crc;
}

// CRC-32 of the 8 length bytes and the header text, with the 8 digits of the CRC field
// read as '0' (the value the writer had there when it took the CRC).
uLong header_crc(const unsigned char* len, std::string_view text) {
  const size_t at = kHeaderCrcPrefix.size();
  uLong crc = crc_update(crc32(0L, Z_NULL, 0), len, 8);
  crc = crc_update(crc, text.data(), at);
  crc = crc_update(crc, "00000000", 8);
  return crc_update(crc, text.data() + at + 8, text.size() - at - 8);
}

// True when the header carries a CRC field (version 2 on) and the CRC matches; false when
// it has no field (version 1, or a damaged field the version check then rejects).
template <class Bad>
bool verify_header_crc(const unsigned char* len, std::string_view text, const Bad& bad) {
  if (text.substr(0, kHeaderCrcPrefix.size()) != kHeaderCrcPrefix) return false;
  const size_t at = kHeaderCrcPrefix.size();
  const std::string_view digits = text.substr(at, 8);
  if (digits.size() != 8 || text.size() <= at + 8 || text[at + 8] != '"' ||
      digits.find_first_not_of("0123456789abcdef") != std::string_view::npos)
    throw bad(detail::cat("header CRC field ", kHeaderCrcKey, " at byte offset ", 8 + at,
                          " is not 8 hex digits (damaged file)"));
  const uLong stored = std::stoul(std::string(digits), nullptr, 16);
  if (stored != header_crc(len, text))
    throw bad("header fails its CRC-32 check (damaged file: the tensor table or the metadata changed)");
  return true;
}

// A JSON value for a message, cut short: a damaged header may hold anything.
std::string shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

template <class Bad>
uint64_t meta_unsigned(const json& meta, const char* key, const Bad& bad) {
  const auto it = meta.find(key);
  if (it == meta.end()) throw bad(detail::cat("metadata key '", key, "' is missing"));
  if (!it->is_number_unsigned())
    throw bad(detail::cat("metadata key '", key, "' is ", shown(*it), ", expected a non-negative integer"));
  return it->get<uint64_t>();
}

struct TensorEntry {
  std::string name;
  Shape shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the start of the data
};

// One tensor entry of the header: {"dtype": "F32", "shape": [non-negative integers],
// "data_offsets": [begin, end]} with end - begin the shape's bytes, inside the data.
template <class Bad>
TensorEntry parse_entry(const std::string& name, const json& v, uint64_t data_bytes, const Bad& bad) {
  const std::string where = detail::cat("tensor '", name, "'");
  if (!v.is_object()) throw bad(detail::cat(where, " is ", shown(v), ", expected an object with dtype, shape, data_offsets"));
  auto field = [&](const char* key) -> const json& {
    const auto it = v.find(key);
    if (it == v.end()) throw bad(detail::cat(where, " has no '", key, "'"));
    return *it;
  };
  const json& dtype = field("dtype");
  if (dtype != "F32") throw bad(detail::cat(where, ": dtype ", shown(dtype), " is not supported (softlab reads \"F32\")"));
  const json& shape = field("shape");
  const json& offsets = field("data_offsets");
  if (!shape.is_array()) throw bad(detail::cat(where, ": shape ", shown(shape), " is not an array"));
  if (shape.size() > kMaxRank)
    throw bad(detail::cat(where, ": shape has ", shape.size(), " dimensions, more than ", kMaxRank));
  std::vector<int64_t> dims;
  uint64_t numel = 1, nonzero = 1;  // nonzero: the product without the 0 dimensions, bounded too
  for (const json& d : shape) {
    if (!d.is_number_unsigned())
      throw bad(detail::cat(where, ": shape ", shown(shape), " holds ", shown(d), ", expected non-negative integers"));
    const uint64_t x = d.get<uint64_t>();
    if (x != 0 && nonzero > kMaxElements / x)
      throw bad(detail::cat(where, ": shape ", shown(shape), " has more than ", kMaxElements, " elements"));
    nonzero *= x == 0 ? 1 : x;
    numel *= x;
    dims.push_back(static_cast<int64_t>(x));
  }
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    throw bad(detail::cat(where, ": data_offsets ", shown(offsets), " is not [begin, end] with non-negative integers"));
  TensorEntry e{name, Shape(std::move(dims)), offsets[0].get<uint64_t>(), offsets[1].get<uint64_t>()};
  if (e.end < e.begin || e.end > data_bytes)
    throw bad(detail::cat(where, ": data_offsets [", e.begin, ", ", e.end, "] are not inside the ", data_bytes,
                          " data bytes"));
  if (e.end - e.begin != numel * 4)
    throw bad(detail::cat(where, ": data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin,
                          " bytes, but shape ", e.shape, " needs ", numel * 4));
  return e;
}

// A directory or a device given as a checkpoint is named as such (a JSON error would send
// the user looking for damage); for a run directory, the two files it holds.
void check_is_checkpoint_file(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    throw Error(detail::cat("cannot open checkpoint ", path, ": ", ec.message()));
  if (!fs::exists(st)) throw Error(detail::cat("cannot open checkpoint ", path, ": no such file"));
  if (fs::is_directory(st)) {
    const fs::path dir(path);
    throw Error(detail::cat("checkpoint ", path, " is a directory, not a checkpoint file; for a run directory, pass ",
                            (dir / "best.ckpt").string(), " or ", (dir / "last.ckpt").string()));
  }
  if (!fs::is_regular_file(st)) throw Error(detail::cat("checkpoint ", path, " is not a regular file"));
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& text) {
  publish_atomic(path, [&](int fd, const std::string& tmp) { write_all(fd, text.data(), text.size(), tmp); });
}

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  static_assert(sizeof(float) == 4);
  uint64_t offset = 0;
  uLong crc = crc32(0L, Z_NULL, 0);
  json tensors = json::object();
  for (const auto& [name, t] : ckpt.tensors) {
    SOFTLAB_CHECK(!tensors.contains(name) && name != "__metadata__", "checkpoint: tensor name '", name,
                  name == "__metadata__" ? "' is reserved" : "' appears twice");
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * 4;
    tensors[name] = {{"dtype", "F32"}, {"shape", t.shape().dims()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    crc = crc_update(crc, t.data(), bytes);
  }
  json meta = ckpt.meta;
  meta["format"] = "softlab-checkpoint";
  meta["version"] = kCheckpointVersion;
  meta["data_crc32"] = static_cast<uint64_t>(crc);
  meta["data_bytes"] = offset;
  // The header CRC goes first, so that it sits at a fixed place (kHeaderCrcPrefix); it is
  // written as zeros, the CRC is taken over the length and the header, then filled in.
  json header = json::object();
  header["__metadata__"] = {{kHeaderCrcKey, "00000000"}, {"softlab", meta.dump()}};
  for (auto& [k, v] : tensors.items()) header[k] = v;
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  SOFTLAB_ASSERT(text.compare(0, kHeaderCrcPrefix.size(), kHeaderCrcPrefix) == 0,
                 "checkpoint header does not start with its CRC field");
  const uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08lx", static_cast<unsigned long>(header_crc(len, text)));
  text.replace(kHeaderCrcPrefix.size(), 8, hex);
  publish_atomic(path, [&](int fd, const std::string& tmp) {
    write_all(fd, len, 8, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (const auto& [name, t] : ckpt.tensors) write_all(fd, t.data(), static_cast<size_t>(t.numel()) * 4, tmp);
  });
}

Checkpoint load_checkpoint(const std::string& path) {
  auto bad = [&](const std::string& what) { return Error(detail::cat("checkpoint ", path, ": ", what)); };
  check_is_checkpoint_file(path);
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec) throw bad(detail::cat("cannot read its size: ", ec.message()));
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) throw Error(detail::cat("cannot open checkpoint ", path, ": ", std::strerror(errno)));
  if (size < 8) throw bad(detail::cat("file of ", size, " bytes is too short to be a checkpoint"));
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (n > size - 8)
    throw bad(detail::cat("header length ", n, " (the first 8 bytes) exceeds the file size ", size));
  if (n > kMaxHeaderBytes)
    throw bad(detail::cat("header length ", n, " (the first 8 bytes) is above the ", kMaxHeaderBytes,
                          "-byte limit of the format"));
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  if (!in) throw bad(detail::cat("could not read the ", n, "-byte header"));
  const bool has_crc = verify_header_crc(len, text, bad);

  json header;
  try {
    header = json::parse(text);
  } catch (const std::exception& e) {
    throw bad(detail::cat("header (bytes 8..", 8 + n, ") is not valid JSON (", e.what(), ")"));
  }
  if (!header.is_object()) throw bad(detail::cat("header is a JSON ", header.type_name(), ", not an object"));
  const auto md = header.find("__metadata__");
  if (md == header.end() || !md->is_object()) throw bad("not a softlab checkpoint (no __metadata__ object in the header)");
  const auto sl = md->find("softlab");
  if (sl == md->end() || !sl->is_string()) throw bad("not a softlab checkpoint (no __metadata__.softlab string)");
  Checkpoint ck;
  try {
    ck.meta = json::parse(sl->get_ref<const std::string&>());
  } catch (const std::exception& e) {
    throw bad(detail::cat("__metadata__.softlab is not valid JSON (", e.what(), ")"));
  }
  if (!ck.meta.is_object()) throw bad("__metadata__.softlab is not a JSON object");
  const auto format = ck.meta.find("format");
  if (format == ck.meta.end() || *format != "softlab-checkpoint")
    throw bad("metadata key 'format' is not \"softlab-checkpoint\"");
  const uint64_t version = meta_unsigned(ck.meta, "version", bad);
  if (version < 1 || version > static_cast<uint64_t>(kCheckpointVersion))
    throw bad(detail::cat("version ", version, " is not supported (this softlab reads versions 1 to ",
                          kCheckpointVersion, ")"));
  // Version 1 had no header CRC; from version 2 on, a header without one was damaged.
  if (version >= 2 && !has_crc)
    throw bad(detail::cat("the version ", version, " header has lost its CRC field ", kHeaderCrcKey,
                          " (damaged file)"));
  const uint64_t data_bytes = meta_unsigned(ck.meta, "data_bytes", bad);
  const uint64_t data_crc = meta_unsigned(ck.meta, "data_crc32", bad);
  if (data_bytes != size - 8 - n)
    throw bad(detail::cat("file has ", size, " bytes, expected 8 + ", n, " header + ", data_bytes,
                          " data bytes (truncated or padded)"));

  // Every tensor entry checked, and the entries together tiling the data exactly, before
  // anything is allocated from them.
  std::vector<TensorEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it)
    if (it.key() != "__metadata__") entries.push_back(parse_entry(it.key(), it.value(), data_bytes, bad));
  std::vector<size_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::pair(entries[a].begin, entries[a].end) < std::pair(entries[b].begin, entries[b].end);
  });
  uint64_t covered = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const TensorEntry& e = entries[order[k]];
    if (e.begin < covered)
      throw bad(detail::cat("tensor '", e.name, "' (data bytes ", e.begin, "..", e.end, ") overlaps tensor '",
                            entries[order[k - 1]].name, "'"));
    if (e.begin > covered)
      throw bad(detail::cat("data bytes ", covered, "..", e.begin, " belong to no tensor (before tensor '", e.name,
                            "')"));
    covered = e.end;
  }
  if (covered != data_bytes)
    throw bad(detail::cat("data bytes ", covered, "..", data_bytes, " belong to no tensor"));

  // The data in file order, straight into the tensors, with its CRC on the way.
  std::vector<Tensor> made(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) made[i] = empty(entries[i].shape);
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const size_t i : order) {
    const TensorEntry& e = entries[i];
    const uint64_t bytes = e.end - e.begin;
    if (bytes == 0) continue;
    float* dst = made[i].mutable_data();
    in.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(bytes));
    if (!in)
      throw bad(detail::cat("could not read tensor '", e.name, "' at byte offset ", 8 + n + e.begin,
                            " (did the file change while it was read?)"));
    crc = crc_update(crc, dst, bytes);
  }
  if (crc != data_crc) throw bad("tensor data fails its CRC-32 check (damaged file)");
  for (size_t i = 0; i < entries.size(); ++i) ck.tensors.emplace_back(entries[i].name, made[i]);
  return ck;
}

const json& checkpoint_meta(const Checkpoint& ckpt, const std::string& key, const std::string& path) {
  const auto it = ckpt.meta.find(key);
  if (it == ckpt.meta.end())
    throw Error(detail::cat("checkpoint ", path, ": its metadata has no '", key,
                            "' (a checkpoint of softlab train holds config, data and position)"));
  return *it;
}

nn::NamedTensors with_prefix(const nn::NamedTensors& tensors, const std::string& prefix) {
  nn::NamedTensors out;
  for (const auto& [n, t] : tensors)
    if (n.rfind(prefix, 0) == 0) out.emplace_back(n.substr(prefix.size()), t);
  return out;
}

nn::NamedTensors model_state(const Checkpoint& ckpt, const std::string& path, bool ema) {
  nn::NamedTensors out = with_prefix(ckpt.tensors, ema ? "ema." : "model.");
  SOFTLAB_CHECK(!ema || !out.empty(), "checkpoint ", path, " holds no weight EMA (the run had train.ema = 0)");
  return out;
}

nn::NamedTensors load_model_state(const std::string& path, bool ema) {
  return model_state(load_checkpoint(path), path, ema);
}

}  // namespace softlab
