// safetensors-layout checkpoints with atomic publication and a CRC over the data.
#include "softlab/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

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
}  // namespace

void write_file_atomic(const std::string& path, const std::string& text) {
  publish_atomic(path, [&](int fd, const std::string& tmp) { write_all(fd, text.data(), text.size(), tmp); });
}

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  static_assert(sizeof(float) == 4);
  json header = json::object();
  uint64_t offset = 0;
  uLong crc = crc32(0L, Z_NULL, 0);
  json tensors = json::object();
  for (const auto& [name, t] : ckpt.tensors) {
    SOFTLAB_CHECK(!tensors.contains(name), "checkpoint: tensor name '", name, "' appears twice");
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * 4;
    tensors[name] = {{"dtype", "F32"}, {"shape", t.shape().dims()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(t.data()), static_cast<uInt>(bytes));
  }
  json meta = ckpt.meta;
  meta["format"] = "softlab-checkpoint";
  meta["version"] = kCheckpointVersion;
  meta["data_crc32"] = static_cast<uint64_t>(crc);
  meta["data_bytes"] = offset;
  header["__metadata__"] = {{"softlab", meta.dump()}};
  for (auto& [k, v] : tensors.items()) header[k] = v;
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  const uint64_t n = text.size();
  publish_atomic(path, [&](int fd, const std::string& tmp) {
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    write_all(fd, len, 8, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (const auto& [name, t] : ckpt.tensors) write_all(fd, t.data(), static_cast<size_t>(t.numel()) * 4, tmp);
  });
}

Checkpoint load_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SOFTLAB_CHECK(in.good(), "cannot open checkpoint ", path);
  in.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  auto bad = [&](const std::string& what) { return Error(detail::cat("checkpoint ", path, ": ", what)); };
  if (size < 8) throw bad(detail::cat("file of ", size, " bytes is too short to be a checkpoint"));
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (n > size - 8 || n > (1u << 30)) throw bad(detail::cat("header length ", n, " exceeds the file size ", size));
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  json header;
  try {
    header = json::parse(text);
  } catch (const std::exception& e) {
    throw bad(detail::cat("header is not valid JSON (", e.what(), ")"));
  }
  if (!header.is_object() || !header.contains("__metadata__") || !header["__metadata__"].contains("softlab"))
    throw bad("not a softlab checkpoint (no __metadata__.softlab)");
  Checkpoint ck;
  try {
    ck.meta = json::parse(header["__metadata__"]["softlab"].get<std::string>());
  } catch (const std::exception& e) {
    throw bad(detail::cat("metadata is not valid JSON (", e.what(), ")"));
  }
  if (ck.meta.value("format", "") != "softlab-checkpoint") throw bad("format tag is not softlab-checkpoint");
  if (ck.meta.value("version", 0) != kCheckpointVersion)
    throw bad(detail::cat("version ", ck.meta.value("version", 0), " is not supported (this softlab reads version ",
                          kCheckpointVersion, ")"));
  const uint64_t data_bytes = ck.meta.value("data_bytes", uint64_t{0});
  if (8 + n + data_bytes != size)
    throw bad(detail::cat("file has ", size, " bytes, expected ", 8 + n + data_bytes, " (truncated or padded)"));
  std::vector<char> data(data_bytes);
  in.read(data.data(), static_cast<std::streamsize>(data_bytes));
  if (!in) throw bad("could not read the tensor data");
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data_bytes));
  if (crc != ck.meta.value("data_crc32", uint64_t{0})) throw bad("tensor data fails its CRC-32 check (damaged file)");
  for (auto& [name, v] : header.items()) {
    if (name == "__metadata__") continue;
    if (v.value("dtype", "") != "F32") throw bad(detail::cat("tensor '", name, "' is not F32"));
    const auto shape = v.at("shape").get<std::vector<int64_t>>();
    const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
    Shape s(shape);
    if (off.size() != 2 || off[1] < off[0] || off[1] > data_bytes ||
        off[1] - off[0] != static_cast<uint64_t>(s.numel()) * 4)
      throw bad(detail::cat("tensor '", name, "' has inconsistent offsets for shape ", s));
    Tensor t = empty(s);
    if (s.numel()) std::memcpy(t.mutable_data(), data.data() + off[0], off[1] - off[0]);
    ck.tensors.emplace_back(name, t);
  }
  return ck;
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
