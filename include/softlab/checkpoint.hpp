#pragma once
// Checkpoints in the safetensors layout, so weights can be read outside softlab:
//   8 bytes: little-endian u64 N, the header length
//   N bytes: JSON header {"__metadata__": {...}, "<tensor name>": {"dtype": "F32",
//            "shape": [...], "data_offsets": [begin, end]}, ...}, space-padded to 8 bytes
//   the tensor bytes (float32, little-endian, row-major), in header order
// softlab's own metadata (format tag, version, config, trainer position, CRC-32 of the data)
// is one JSON string under __metadata__["softlab"]. Model weights are named "model.<name>",
// optimiser state "optim.<name>". Files are published atomically: written to a temporary
// file in the same directory, fsync'ed, renamed over the target, and the directory fsync'ed,
// so a kill mid-save leaves the previous checkpoint intact; a damaged file fails its CRC.
#include <string>

#include "softlab/nn/module.hpp"
#include "softlab/schema.hpp"

namespace softlab {

struct Checkpoint {
  json meta;                  // written under "softlab"; "format" and "version" are added on save
  nn::NamedTensors tensors;
};

inline constexpr int kCheckpointVersion = 1;

void save_checkpoint(const std::string& path, const Checkpoint& ckpt);
Checkpoint load_checkpoint(const std::string& path);  // Error naming the file for anything malformed

// Tensors whose names start with prefix, with the prefix removed.
nn::NamedTensors with_prefix(const nn::NamedTensors& tensors, const std::string& prefix);

// Writes `text` to `path` atomically (same protocol as checkpoints).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace softlab
