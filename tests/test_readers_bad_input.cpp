// The binary readers fail closed: a checkpoint, IDX, CIFAR or PGM/PPM file that is damaged,
// truncated or lies in its header is a softlab::Error of kind BadInput naming the file (and
// the tensor, key or offset where known), never an escaping JSON exception or an allocation
// of what a header claims; through the softlab command the same files exit with code 2.
// Suites: CheckpointDamage (the file format), CheckpointMeta (load_model on a trained run's
// checkpoint), ReaderCli (the command), ImageFileDamage, IdxCifarDamage.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "softlab/checkpoint.hpp"
#include "softlab/image_io.hpp"
#include "softlab/softlab.hpp"
#include "cli_run.hpp"
#include "train_fixtures.hpp"
#include "expect_error.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {
using test::expect_bad_input;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// ---- the checkpoint layout, written here from its description in checkpoint.hpp (not with
// softlab's writer), so a test can damage the header and still give it a valid CRC.

constexpr std::string_view kCrcPrefix = R"({"__metadata__":{"softlab_header_crc32":")";

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

uint32_t crc_of(std::string_view s, uint32_t crc = 0) {
  return static_cast<uint32_t>(crc32(crc, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

struct CkptParts {
  json header;       // the header with __metadata__.softlab parsed into `meta`
  json meta;
  std::string data;  // the tensor bytes
};

CkptParts split_checkpoint(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[static_cast<size_t>(i)])) << (8 * i);
  CkptParts p;
  p.header = json::parse(bytes.substr(8, n));
  p.meta = json::parse(p.header["__metadata__"]["softlab"].get<std::string>());
  p.header["__metadata__"].erase("softlab_header_crc32");
  p.data = bytes.substr(8 + n);
  return p;
}

std::string padded(std::string text) {
  while (text.size() % 8 != 0) text.push_back(' ');
  return text;
}

// Version 1: no header CRC (as tools/compare/vit.py writes it).
std::string assemble_v1(const json& header) {
  const std::string text = padded(header.dump());
  return le64(text.size()) + text;
}

// Version 2: "softlab_header_crc32" first in __metadata__, the CRC-32 of the length bytes and
// the header taken with its digits as "00000000".
std::string assemble_v2(const json& header) {
  json h = json::object();
  h["__metadata__"] = {{"softlab_header_crc32", "00000000"}};
  for (auto& [k, v] : header["__metadata__"].items()) h["__metadata__"][k] = v;
  for (auto& [k, v] : header.items())
    if (k != "__metadata__") h[k] = v;
  std::string text = padded(h.dump());
  const std::string len = le64(text.size());
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", crc_of(text, crc_of(len)));
  text.replace(kCrcPrefix.size(), 8, hex);
  return len + text;
}

// The parts as a file of `version`: the metadata put back as its JSON string.
std::string assemble(CkptParts p, int version) {
  if (p.header.is_object() && p.header.contains("__metadata__") && p.header["__metadata__"].is_object() &&
      !p.meta.is_null())
    p.header["__metadata__"]["softlab"] = p.meta.dump();
  return (version == 1 ? assemble_v1(p.header) : assemble_v2(p.header)) + p.data;
}

// A small checkpoint saved by softlab, and its parts.
struct SmallCheckpoint {
  std::string dir, path, bytes;
  Checkpoint ck;
  SmallCheckpoint() {
    dir = test::temp_dir("readers_ckpt");
    path = dir + "/small.ckpt";
    Generator g(7);
    ck.meta = {{"hello", "world"}};
    ck.tensors = {{"model.w", randn({3, 4}, g)}, {"model.b", randn({4}, g)}, {"optim.step", scalar(3.0f)}};
    save_checkpoint(path, ck);
    bytes = read_all(path);
  }
  ~SmallCheckpoint() { fs::remove_all(dir); }
};

void expect_same_tensors(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].first, b.tensors[i].first);
    EXPECT_EQ(a.tensors[i].second.shape(), b.tensors[i].second.shape());
    EXPECT_EQ(a.tensors[i].second.to_vector(), b.tensors[i].second.to_vector());
  }
}

}  // namespace

// ------------------------------------------------------------------ checkpoint format

TEST(CheckpointDamage, Version2CoversTheHeaderAndVersion1StillLoads) {
  SmallCheckpoint s;
  ASSERT_EQ(s.bytes.compare(8, kCrcPrefix.size(), kCrcPrefix), 0) << "the header CRC field leads the header";
  const CkptParts p = split_checkpoint(s.bytes);
  EXPECT_EQ(p.meta["version"], 2);
  // Written here by the documented rule, the same bytes come out: the rule is what the file holds.
  EXPECT_EQ(assemble(p, 2), s.bytes);
  expect_same_tensors(load_checkpoint(s.path), s.ck);
  // A version 1 file (no header CRC) still loads, with the same tensors and metadata.
  CkptParts v1 = p;
  v1.meta["version"] = 1;
  write_all(s.dir + "/v1.ckpt", assemble(v1, 1));
  const Checkpoint r = load_checkpoint(s.dir + "/v1.ckpt");
  expect_same_tensors(r, s.ck);
  EXPECT_EQ(r.meta["hello"], "world");
}

TEST(CheckpointDamage, EveryFlippedHeaderBitIsBadInputNamingTheFile) {
  SmallCheckpoint s;
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(s.bytes[static_cast<size_t>(i)])) << (8 * i);
  const std::string p = s.dir + "/flipped.ckpt";
  // The length bytes, the header and its padding: two bits of each byte (every byte of the
  // header must be covered by a check, not only the ones a parser happens to trip on).
  for (size_t at = 0; at < 8 + n; ++at)
    for (const unsigned char bit : {0x01, 0x20}) {
      std::string b = s.bytes;
      b[at] = static_cast<char>(static_cast<unsigned char>(b[at]) ^ bit);
      write_all(p, b);
      const std::string msg = expect_bad_input([&] { load_checkpoint(p); }, {});
      ASSERT_NE(msg.find(p), std::string::npos) << "byte " << at << " bit " << int(bit) << ": " << msg;
    }
  // And every byte of the data.
  for (size_t at = 8 + n; at < s.bytes.size(); ++at) {
    std::string b = s.bytes;
    b[at] = static_cast<char>(b[at] ^ 0x10);
    write_all(p, b);
    expect_bad_input([&] { load_checkpoint(p); }, {p, "CRC"});
  }
}

TEST(CheckpointDamage, EveryTruncationIsBadInputNamingTheFile) {
  SmallCheckpoint s;
  const std::string p = s.dir + "/cut.ckpt";
  for (size_t len = 0; len < s.bytes.size(); ++len) {
    write_all(p, s.bytes.substr(0, len));
    const std::string msg = expect_bad_input([&] { load_checkpoint(p); }, {});
    ASSERT_NE(msg.find(p), std::string::npos) << "cut to " << len << " bytes: " << msg;
  }
  // Bytes appended are as wrong as bytes missing.
  write_all(p, s.bytes + std::string(8, '\0'));
  expect_bad_input([&] { load_checkpoint(p); }, {p, "truncated or padded"});
  // A length field far past the file.
  write_all(p, le64(~uint64_t{0}) + s.bytes.substr(8));
  expect_bad_input([&] { load_checkpoint(p); }, {p, "header length"});
}

TEST(CheckpointDamage, Version2HeaderWithoutItsCrcFieldIsRejected) {
  SmallCheckpoint s;
  const CkptParts p = split_checkpoint(s.bytes);
  const std::string path = s.dir + "/nocrc.ckpt";
  write_all(path, assemble(p, 1));  // version 2 in the metadata, but no CRC field
  expect_bad_input([&] { load_checkpoint(path); }, {path, "softlab_header_crc32"});
  std::string b = s.bytes;
  b.replace(8 + kCrcPrefix.size(), 8, "zzzzzzzz");
  write_all(path, b);
  expect_bad_input([&] { load_checkpoint(path); }, {path, "hex digits"});
}

// Schema damage with a valid CRC: what a file written by other code, or damaged before its
// CRC was taken, can hold. Each case runs as version 1 and as version 2.
TEST(CheckpointDamage, HeaderSchemaIsCheckedKeyByKey) {
  SmallCheckpoint s;
  const CkptParts good = split_checkpoint(s.bytes);
  struct Case {
    std::string what;
    std::function<void(CkptParts&)> damage;
    std::vector<std::string> parts;  // besides the path
  };
  auto crc_data = [](CkptParts& c) { c.meta["data_crc32"] = crc_of(c.data); };
  const std::vector<Case> cases = {
      {"dtype missing", [](CkptParts& c) { c.header["model.w"].erase("dtype"); }, {"model.w", "dtype"}},
      {"shape missing", [](CkptParts& c) { c.header["model.w"].erase("shape"); }, {"model.w", "shape"}},
      {"offsets missing", [](CkptParts& c) { c.header["model.w"].erase("data_offsets"); }, {"model.w", "data_offsets"}},
      {"dtype F16", [](CkptParts& c) { c.header["model.w"]["dtype"] = "F16"; }, {"model.w", "F16"}},
      {"dtype a number", [](CkptParts& c) { c.header["model.w"]["dtype"] = 32; }, {"model.w", "dtype"}},
      {"entry not an object", [](CkptParts& c) { c.header["model.w"] = 5; }, {"model.w"}},
      {"shape a string", [](CkptParts& c) { c.header["model.w"]["shape"] = "3x4"; }, {"model.w", "shape"}},
      {"shape negative", [](CkptParts& c) { c.header["model.w"]["shape"] = {-3, -4}; }, {"model.w", "shape"}},
      {"shape a float", [](CkptParts& c) { c.header["model.w"]["shape"] = {3.0, 4}; }, {"model.w", "shape"}},
      {"shape overflows", [](CkptParts& c) { c.header["model.w"]["shape"] = {1ULL << 40, 1ULL << 40, 16}; },
       {"model.w", "elements"}},
      {"zero beside a huge dimension", [](CkptParts& c) { c.header["model.w"]["shape"] = {0, 1ULL << 62}; },
       {"model.w", "elements"}},
      {"shape and offsets disagree", [](CkptParts& c) { c.header["model.w"]["shape"] = {4, 4}; },
       {"model.w", "needs 64"}},
      {"offsets past the data", [](CkptParts& c) { c.header["model.w"]["data_offsets"] = {0, 1000000}; },
       {"model.w", "not inside"}},
      {"offsets reversed", [](CkptParts& c) { c.header["model.w"]["data_offsets"] = {48, 0}; }, {"model.w"}},
      {"one offset", [](CkptParts& c) { c.header["model.w"]["data_offsets"] = {0}; }, {"model.w", "data_offsets"}},
      {"offsets as strings", [](CkptParts& c) { c.header["model.w"]["data_offsets"] = {"0", "48"}; },
       {"model.w", "data_offsets"}},
      {"offsets negative", [](CkptParts& c) { c.header["model.w"]["data_offsets"] = {-48, 0}; },
       {"model.w", "data_offsets"}},
      {"tensors overlap", [](CkptParts& c) { c.header["model.b"]["data_offsets"] = {0, 16}; }, {"overlaps"}},
      {"bytes of no tensor",
       [&](CkptParts& c) {
         c.data += std::string(8, '\0');
         c.meta["data_bytes"] = c.data.size();
         crc_data(c);
       },
       {"belong to no tensor"}},
      {"metadata not a string", [](CkptParts& c) { c.header["__metadata__"]["softlab"] = 5; c.meta = nullptr; },
       {"__metadata__.softlab"}},
      {"metadata not JSON", [](CkptParts& c) { c.header["__metadata__"]["softlab"] = "{"; c.meta = nullptr; },
       {"__metadata__.softlab"}},
      {"metadata an array", [](CkptParts& c) { c.meta = json::array(); }, {"not a JSON object"}},
      {"format missing", [](CkptParts& c) { c.meta.erase("format"); }, {"format"}},
      {"version a string", [](CkptParts& c) { c.meta["version"] = "2"; }, {"version"}},
      {"version from the future", [](CkptParts& c) { c.meta["version"] = 99; }, {"version 99"}},
      {"data_bytes missing", [](CkptParts& c) { c.meta.erase("data_bytes"); }, {"data_bytes"}},
      {"data_bytes negative", [](CkptParts& c) { c.meta["data_bytes"] = -1; }, {"data_bytes"}},
      {"data_bytes too large", [](CkptParts& c) { c.meta["data_bytes"] = c.data.size() + 8; },
       {"truncated or padded"}},
      {"data_crc32 a string", [](CkptParts& c) { c.meta["data_crc32"] = "abc"; }, {"data_crc32"}},
      {"data_crc32 missing", [](CkptParts& c) { c.meta.erase("data_crc32"); }, {"data_crc32"}},
      {"data fails its CRC", [](CkptParts& c) { c.data[5] = static_cast<char>(c.data[5] ^ 1); }, {"CRC"}},
  };
  for (const int version : {1, 2}) {
    for (size_t i = 0; i < cases.size(); ++i) {
      CkptParts c = good;
      c.meta["version"] = version;
      cases[i].damage(c);
      const std::string path = s.dir + "/case" + std::to_string(i) + "_v" + std::to_string(version) + ".ckpt";
      write_all(path, assemble(c, version));
      SCOPED_TRACE(cases[i].what + ", version " + std::to_string(version));
      std::vector<std::string> parts = cases[i].parts;
      parts.push_back(path);
      expect_bad_input([&] { load_checkpoint(path); }, parts);
    }
  }
  // The header's own shape (no CRC field can sit in these, so version 1 only).
  const std::string path = s.dir + "/shape.ckpt";
  write_all(path, assemble_v1(json::array({1, 2})) + good.data);
  expect_bad_input([&] { load_checkpoint(path); }, {path, "array"});
  json no_meta = good.header;
  no_meta.erase("__metadata__");
  write_all(path, assemble_v1(no_meta) + good.data);
  expect_bad_input([&] { load_checkpoint(path); }, {path, "__metadata__"});
  write_all(path, le64(8) + "{\"a\":   " + good.data);
  expect_bad_input([&] { load_checkpoint(path); }, {path, "not valid JSON"});
}

TEST(CheckpointDamage, DirectoryPipeAndMissingFileAreNamedAsSuch) {
  SmallCheckpoint s;
  expect_bad_input([&] { load_checkpoint(s.dir); },
                   {s.dir, "is a directory", s.dir + "/best.ckpt", s.dir + "/last.ckpt"});
  const std::string fifo = s.dir + "/pipe.ckpt";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_bad_input([&] { load_checkpoint(fifo); }, {fifo, "not a regular file"});
  expect_bad_input([&] { load_checkpoint(s.dir + "/none.ckpt"); }, {s.dir + "/none.ckpt", "no such file"});
}

// ------------------------------------------------------- checkpoints of a trained run

namespace {

// One tiny run for the suites below (trained once): data, config file and run directory.
class TrainedRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(test::temp_dir("readers_run"));
    const std::string data = *root_ + "/data";
    test::write_learnable_mnist(data, 200, 50);
    json cfg = test::tiny_config(data, *root_ + "/run");
    cfg["train"]["epochs"] = 1;
    std::ofstream(*root_ + "/tiny.json") << cfg.dump(2);
    train(parse_config(resolve_config(cfg)), test::quiet());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
    root_ = nullptr;
  }
  static const std::string& root() { return *root_; }
  static std::string last() { return *root_ + "/run/last.ckpt"; }
  // A copy of last.ckpt with its metadata changed by `edit`, saved by softlab (valid CRCs).
  static std::string with_meta(const std::string& name, const std::function<void(json&)>& edit) {
    Checkpoint ck = load_checkpoint(last());
    edit(ck.meta);
    const std::string p = *root_ + "/" + name;
    save_checkpoint(p, ck);
    return p;
  }
  // A copy of last.ckpt with one bit of its header flipped.
  static std::string header_flipped(const std::string& name) {
    std::string b = read_all(last());
    b[100] = static_cast<char>(b[100] ^ 0x04);  // inside the metadata's JSON string
    const std::string p = *root_ + "/" + name;
    write_all(p, b);
    return p;
  }

 private:
  static std::string* root_;
};
std::string* TrainedRun::root_ = nullptr;

using CheckpointMeta = TrainedRun;
using ReaderCli = TrainedRun;

}  // namespace

TEST_F(CheckpointMeta, TrainedCheckpointLoadsInBothVersions) {
  const LoadedModel m = load_model(last());
  EXPECT_EQ(m.num_classes, 10);
  // The same checkpoint rewritten as version 1 (what earlier softlab wrote) loads too.
  CkptParts p = split_checkpoint(read_all(last()));
  p.meta["version"] = 1;
  const std::string v1 = root() + "/v1.ckpt";
  write_all(v1, assemble(p, 1));
  EXPECT_EQ(load_model(v1).num_classes, 10);
}

TEST_F(CheckpointMeta, MalformedMetadataIsBadInputNamingFileAndKey) {
  struct Case {
    std::string name;
    std::function<void(json&)> edit;
    std::string key;
  };
  const std::vector<Case> cases = {
      {"no_config.ckpt", [](json& m) { m.erase("config"); }, "config"},
      {"no_data.ckpt", [](json& m) { m.erase("data"); }, "data"},
      {"data_string.ckpt", [](json& m) { m["data"] = "mnist"; }, "data"},
      {"classes_string.ckpt", [](json& m) { m["data"]["num_classes"] = "ten"; }, "data.num_classes"},
      {"classes_missing.ckpt", [](json& m) { m["data"].erase("num_classes"); }, "data.num_classes"},
      {"classes_zero.ckpt", [](json& m) { m["data"]["num_classes"] = 0; }, "data.num_classes"},
      {"mean_string.ckpt", [](json& m) { m["data"]["mean"] = "x"; }, "data.mean"},
      {"mean_length.ckpt", [](json& m) { m["data"]["mean"] = {0.1, 0.2}; }, "data.mean"},
      {"std_zero.ckpt", [](json& m) { m["data"]["std"] = {0.0}; }, "data.std"},
      {"names_numbers.ckpt", [](json& m) { m["data"]["class_names"] = {1, 2}; }, "data.class_names"},
      {"train_size.ckpt", [](json& m) { m["data"]["train_size"] = -5; }, "data.train_size"},
      {"config_string.ckpt", [](json& m) { m["config"] = "hello"; }, "config"},
      {"model_string.ckpt", [](json& m) { m["config"]["model"] = "vit"; }, "config"},
      {"model_type_number.ckpt", [](json& m) { m["config"]["model"]["type"] = 5; }, "config"},
      {"dim_changed.ckpt", [](json& m) { m["config"]["model"]["dim"] = 48; }, "load_state"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string p = with_meta(c.name, c.edit);
    expect_bad_input([&] { load_model(p); }, {p, c.key});
  }
  // A weight removed: the model and the file disagree, and the message says which file.
  Checkpoint ck = load_checkpoint(last());
  ck.tensors.erase(ck.tensors.begin());
  const std::string p = root() + "/missing_weight.ckpt";
  save_checkpoint(p, ck);
  expect_bad_input([&] { load_model(p); }, {p, "missing"});
  expect_bad_input([&] { load_model(last(), true); }, {last(), "EMA"});
}

TEST_F(ReaderCli, DamagedCheckpointsExitTwoNamingTheFile) {
  auto expect_exit2 = [&](const std::vector<std::string>& args, const std::vector<std::string>& parts) {
    const test::CliRun r = test::softlab_cli(args, root());
    EXPECT_EQ(r.code, 2) << args[0] << " stderr: " << r.err;
    for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "expected '" << p << "' in: " << r.err;
  };
  const std::string images = root() + "/data/t10k-images-idx3-ubyte";
  const std::string flipped = header_flipped("flipped.ckpt");
  expect_exit2({"eval", "--checkpoint", flipped}, {flipped, "CRC"});
  expect_exit2({"predict", "--checkpoint", flipped, images}, {flipped, "CRC"});
  const std::string cut = root() + "/cut.ckpt";
  write_all(cut, read_all(last()).substr(0, 100));
  expect_exit2({"eval", "--checkpoint", cut}, {cut});
  expect_exit2({"predict", "--checkpoint", cut, images}, {cut});
  const std::string no_config = with_meta("no_config_cli.ckpt", [](json& m) { m.erase("config"); });
  expect_exit2({"eval", "--checkpoint", no_config}, {no_config, "config"});
  expect_exit2({"predict", "--checkpoint", no_config, images}, {no_config, "config"});
  // A run directory given as the checkpoint: named, with the files to pass instead.
  const std::string run = root() + "/run";
  expect_exit2({"predict", "--checkpoint", run, images}, {run, "is a directory", run + "/best.ckpt"});
  expect_exit2({"eval", "--checkpoint", run}, {run, "is a directory", run + "/last.ckpt"});
  // --resume from a damaged last.ckpt, in a copy of the run directory.
  const std::string copy = root() + "/resume_copy";
  fs::copy(run, copy, fs::copy_options::recursive);
  fs::copy_file(flipped, copy + "/last.ckpt", fs::copy_options::overwrite_existing);
  expect_exit2({"train", root() + "/tiny.json", "--out", copy, "--resume", "--quiet"}, {copy + "/last.ckpt", "CRC"});
  write_all(copy + "/last.ckpt", read_all(last()).substr(0, 5000));
  expect_exit2({"train", root() + "/tiny.json", "--out", copy, "--resume", "--quiet"}, {copy + "/last.ckpt"});
}

TEST_F(ReaderCli, PredictOnHugeHeaderImageExitsTwo) {
  for (const std::string header : {"P5\n24443 24444\n255\n", "P5\n65536 65536\n255\n", "P6 65536 65536 255 \x01"}) {
    const std::string img = root() + "/huge.pgm";
    write_all(img, header);
    const auto t0 = std::chrono::steady_clock::now();
    const test::CliRun r = test::softlab_cli({"predict", "--checkpoint", last(), img}, root());
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(img), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
  }
}

// ---------------------------------------------------------------------- image files

TEST(ImageFileDamage, HugeHeadersFailBeforeAllocating) {
  const std::string dir = test::temp_dir("readers_pnm");
  const auto t0 = std::chrono::steady_clock::now();
  int k = 0;
  for (const std::string header : {"P5\n24443 24444\n255\n", "P5\n65536 65536\n255\n", "P6\n65536 65536\n255\n",
                                   "P2\n65536 65536\n255\n1 2 3\n", "P3 65536 65536 255 1 2 3"}) {
    const std::string p = dir + "/huge" + std::to_string(k++) + ".pgm";
    write_all(p, header);
    expect_bad_input([&] { read_pnm(p); }, {p, "truncated"});
    expect_bad_input([&] { read_image_file(p); }, {p, "truncated"});
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  fs::remove_all(dir);
}

TEST(ImageFileDamage, HeaderValuesPixelsAndTrailingBytes) {
  const std::string dir = test::temp_dir("readers_pnm2");
  const std::string p = dir + "/x.pgm";
  auto bad = [&](const std::string& bytes, const std::string& part) {
    SCOPED_TRACE(bytes.substr(0, 20));
    write_all(p, bytes);
    expect_bad_input([&] { read_pnm(p); }, {p, part});
  };
  bad("P5\n65537 1\n255\n" + std::string(65537, 'x'), "unsupported size");
  bad("P5\n0 4\n255\n", "unsupported size");
  bad("P5\n2 2\n0\n\x01\x01\x01\x01", "maximum value 0");
  bad("P5\n2 2\n256\n\x01\x01\x01\x01", "maximum value 256");
  bad("P5\n2 2\n65535\n\x01\x01\x01\x01\x01\x01\x01\x01", "maximum value 65535");
  bad("P5\n2 2\n100\n\x01\xc8\x01\x01", "exceeds the maximum");  // 200 > maxval 100
  bad("P2\n2 2\n100\n1 200 1 1\n", "exceeds the maximum");
  bad("P5\n2 2\n255\n\x01\x02\x03\x04P5\n2 2\n255\n\x01\x02\x03\x04", "one image per file");
  bad("P2\n1 1\n255\n7 8\n", "one image per file");
  bad("P5\n2 2\n255\n\x01\x02\x03", "truncated");
  bad("P5\n2 x\n255\n", "height");
  // What is allowed stays allowed: a trailing newline, comments, ASCII values.
  write_all(p, "P5\n# a comment\n2 2\n255\n\x01\x02\x03\x04\n");
  EXPECT_EQ(read_pnm(p).images, (std::vector<uint8_t>{1, 2, 3, 4}));
  write_all(p, "P2\n2 1\n10\n0 10\n");
  EXPECT_EQ(read_pnm(p).images, (std::vector<uint8_t>{0, 255}));
  // Not a regular file, or empty: said so, naming the path.
  expect_bad_input([&] { read_image_file(dir); }, {dir, "not a regular file"});
  expect_bad_input([&] { read_pnm(dir); }, {dir, "not a regular file"});
  const std::string fifo = dir + "/pipe.pgm";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_bad_input([&] { read_image_file(fifo); }, {fifo, "not a regular file"});
  write_all(p, "");
  expect_bad_input([&] { read_image_file(p); }, {p, "empty"});
  fs::remove_all(dir);
}

// ----------------------------------------------------------------- IDX, CIFAR, data sets

TEST(IdxCifarDamage, ZeroImagesCannotHideHugeImageDimensions) {
  const std::string dir = test::temp_dir("readers_idx");
  const std::string p = dir + "/zero-images";
  // 0 images of 2^31 - 1 x 2^31 - 1: no data, but an image size nothing can hold.
  write_all(p, std::string("\0\0\x08\x03\0\0\0\0\x7f\xff\xff\xff\x7f\xff\xff\xff", 16));
  expect_bad_input([&] { read_idx_images(p); }, {p, "each"});
  expect_bad_input([&] { read_image_file(p); }, {p, "each"});
  fs::remove_all(dir);
}

TEST(IdxCifarDamage, GzipBodyIsBoundedByTheHeader) {
  const std::string dir = test::temp_dir("readers_gz");
  const std::string p = dir + "/bomb.gz";
  // A header for one 1x1 image, then 64 MiB of zeros: compressed it is small, and the reader
  // must stop one byte past what the header describes.
  std::string body("\0\0\x08\x03\0\0\0\x01\0\0\0\x01\0\0\0\x01", 16);
  body += '\x05';
  gzFile f = gzopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, body.data(), static_cast<unsigned>(body.size())), static_cast<int>(body.size()));
  const std::string zeros(1 << 20, '\0');
  for (int i = 0; i < 64; ++i) ASSERT_EQ(gzwrite(f, zeros.data(), static_cast<unsigned>(zeros.size())), 1 << 20);
  ASSERT_EQ(gzclose(f), Z_OK);
  EXPECT_LT(fs::file_size(p), 1u << 20);
  expect_bad_input([&] { read_idx_images(p); }, {p, "continues past"});
  fs::remove_all(dir);
}

TEST(IdxCifarDamage, CifarSizeIsCheckedBeforeAllocating) {
  const std::string dir = test::temp_dir("readers_cifar");
  const std::string p = dir + "/data_batch_1.bin";
  // A sparse file of 700000 records (2.15 GB of pixels): a multiple of the record size, but
  // not CIFAR; refused from its size alone.
  { std::ofstream(p, std::ios::binary); }
  fs::resize_file(p, uintmax_t{3073} * 700000);
  const auto t0 = std::chrono::steady_clock::now();
  expect_bad_input([&] { read_cifar({p}, false); }, {p, "records"});
  expect_bad_input([&] { read_image_file(p); }, {p, "records"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  fs::resize_file(p, 3073 * 2 + 5);
  expect_bad_input([&] { read_cifar({p}, false); }, {p, "multiple"});
  fs::remove_all(dir);
}

TEST(IdxCifarDamage, EmptySplitIsRefusedByTheLoader) {
  const std::string dir = test::temp_dir("readers_empty");
  Dataset none;
  none.size = 0;
  none.channels = 1;
  none.height = none.width = 28;
  none.num_classes = 10;
  write_idx(test::make_learnable_images(20, 1), dir, "train", false);
  write_idx(none, dir, "t10k", false);
  expect_bad_input([&] { load_dataset("mnist", dir); }, {dir, "test split holds no images"});
  fs::remove_all(dir);
}
