#pragma once
// Checkpoints in the safetensors layout, so weights can be read outside softlab:
//   8 bytes: little-endian u64 N, the header length
//   N bytes: JSON header {"__metadata__": {...}, "<tensor name>": {"dtype": "F32",
//            "shape": [...], "data_offsets": [begin, end]}, ...}, space-padded to 8 bytes
//   the tensor bytes (float32, little-endian, row-major), in header order
// softlab's own metadata (format tag, version, config, trainer position, CRC-32 and byte
// count of the data) is one JSON string under __metadata__["softlab"]. From version 2 on,
// __metadata__ starts with "softlab_header_crc32": 8 lowercase hex digits, the CRC-32 of the
// length bytes and the header with those digits read as "00000000"; with the data's CRC in
// the metadata, every byte of the file is covered. Version 1 files (no header CRC) still load.
// Model weights are named "model.<name>", optimiser state "optim.<name>". Files are published
// atomically: written to a temporary file in the same directory, fsync'ed, renamed over the
// target, and the directory fsync'ed, so a kill mid-save leaves the previous checkpoint
// intact. The reader checks the header's schema (dtype, shape, data_offsets of each tensor,
// the tensors tiling the data) before allocating anything, and a damaged file fails a CRC.
#include <string>

#include "softlab/module.hpp"
#include "softlab/schema.hpp"

namespace softlab {

struct Checkpoint {
  json meta;                  // written under "softlab"; "format" and "version" are added on save
  nn::NamedTensors tensors;
};

inline constexpr int kCheckpointVersion = 2;  // the version written; 1 and 2 are read

void save_checkpoint(const std::string& path, const Checkpoint& ckpt);
// An Error (BadInput) naming the file, and the tensor, key or byte offset where known, for
// anything malformed: a directory or other non-regular file, a damaged or truncated file.
Checkpoint load_checkpoint(const std::string& path);
// ckpt.meta[key], or an Error naming the file and the key when the metadata lacks it (a
// checkpoint saved by an embedding program need not hold what softlab train writes).
const json& checkpoint_meta(const Checkpoint& ckpt, const std::string& key, const std::string& path);

// Tensors whose names start with prefix, with the prefix removed.
nn::NamedTensors with_prefix(const nn::NamedTensors& tensors, const std::string& prefix);

// The model's tensors in a checkpoint under the names the model gives them (the "model."
// prefix removed), ready for nn::Module::load_state. ema = true: the weight EMA ("ema.*")
// instead; a checkpoint without one is an Error naming `path`.
nn::NamedTensors model_state(const Checkpoint& ckpt, const std::string& path, bool ema = false);
// load_checkpoint(path), then model_state: the weights of a checkpoint file for a model an
// embedding program built itself, e.g. model.load_state(load_model_state(path), false).
nn::NamedTensors load_model_state(const std::string& path, bool ema = false);

// Writes `text` to `path` atomically (same protocol as checkpoints).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace softlab
