#pragma once
// The fuzz targets: one function per input format that hands the bytes to the library's
// real reader, the one the softlab command uses for that input, and sorts the outcome.
// An accepted input and a softlab::Error of kind BadInput are the two expected outcomes;
// anything else (another exception type, an Error of kind Internal, an accepted input that
// the reader returns inconsistent) is a finding: the function prints which target and what
// happened, then aborts. libFuzzer records the abort as a crash (as it does crashes, leaks
// and oversized allocations, which ASan and libFuzzer catch themselves), and the replay
// test (tests/test_fuzz_regressions.cpp) as a failed test.
//
// Built twice: into the libFuzzer programs by clang (tests/fuzz/CMakeLists.txt) and into
// softlab_tests by GCC, so nothing here depends on libFuzzer.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace softlab::fuzz {

struct Target {
  // fuzz_<name> is the fuzzer; its seeds are in tests/fuzz/corpus/<name>/ and the inputs
  // that once found a bug in tests/fuzz/regressions/<name>/.
  const char* name;
  int (*run)(const uint8_t* data, size_t size);
  const char* input;  // what the bytes are, for the docs and the replay test's messages
};

// Every target, in one table: the replay test walks it, so a target without seeds fails.
std::span<const Target> targets();
const Target* find_target(const std::string& name);  // nullptr when there is none

// A config file's text, through load_config (what train, validate and bench read).
int config_file(const uint8_t* data, size_t size);
// --set overrides, one KEY=VALUE per line, applied by load_config to a fixed valid base
// config (a final newline ends the last line rather than adding an empty override).
int config_set(const uint8_t* data, size_t size);
// An IDX images file and an IDX labels file, plain or gzip, through read_idx: the first two
// bytes are the images file's length (little-endian), the labels file is the rest.
int idx(const uint8_t* data, size_t size);
// A CIFAR binary records file through read_cifar: the first byte's bit 0 selects CIFAR-100,
// bit 1 a limit of one record per file; the file is the rest.
int cifar(const uint8_t* data, size_t size);
// One `softlab predict` input through read_image_file: PGM/PPM, IDX images, CIFAR-10 records.
int image(const uint8_t* data, size_t size);
// A checkpoint file through load_checkpoint and load_model (what eval and predict do).
int checkpoint(const uint8_t* data, size_t size);
// A sweep file through load_sweep; "base.json" beside it is a fixed valid config.
int sweep(const uint8_t* data, size_t size);

}  // namespace softlab::fuzz
