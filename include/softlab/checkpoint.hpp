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

#include "softlab/module.hpp"
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
