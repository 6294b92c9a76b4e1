// The libFuzzer entry point of one fuzz target; CMake builds it once per target, as
// fuzz_<name>, with SOFTLAB_FUZZ_TARGET set to the target's name (targets.hpp).
#include <cstdio>
#include <cstdlib>

#include "targets.hpp"

namespace {
const softlab::fuzz::Target& the_target() {
  static const softlab::fuzz::Target* t = softlab::fuzz::find_target(SOFTLAB_FUZZ_TARGET);
  if (!t) {
    std::fprintf(stderr, "no fuzz target named '%s' in tests/fuzz/targets.cpp\n", SOFTLAB_FUZZ_TARGET);
    std::abort();
  }
  return *t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return the_target().run(data, size); }
