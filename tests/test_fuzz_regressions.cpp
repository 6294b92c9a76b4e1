// Replays every file of tests/fuzz/corpus/<target>/ (the fuzzers' seeds) and
// tests/fuzz/regressions/<target>/ (inputs on which a fuzzer once found a bug) through the
// fuzz targets of tests/fuzz/targets.hpp, so that the ordinary suite keeps every bug the
// fuzzers found fixed, without clang or libFuzzer. A target aborts on a finding, and a
// finding may also be a crash, a stack overflow, an endless loop or a huge allocation, so
// each input runs in a child process with a time and memory limit: one bad input fails one
// test and the rest of the suite runs.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <set>
#include <string>
#include <vector>

// The targets' bodies (fuzz/targets.cpp) are part of softlab_tests, so the suite runs
// exactly the code the fuzzers run.
#include "fuzz/targets.hpp"

namespace {

namespace fs = std::filesystem;

const fs::path kFuzzDir = fs::path(SOFTLAB_SOURCE_DIR) / "tests" / "fuzz";
constexpr const char* kInputDirs[] = {"corpus", "regressions"};

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

// The limits of one replayed input. The fuzzers stop at 1 GiB of memory and 10 s per input
// (tools/fuzz.sh); the child gets more room, as it may run unoptimised or sanitized.
constexpr unsigned kSecondsPerInput = 60;
constexpr rlim_t kAddressSpaceBytes = rlim_t(3) << 30;
// A recursion as deep as its input is nested overflows any stack at some depth; a smaller
// stack than the usual 8 MiB lets an input of tens of KB, not MB, show it.
constexpr rlim_t kStackBytes = rlim_t(1) << 20;
constexpr const char* kAsanMaxAllocationMb = "2048";

struct Input {
  std::string target, dir, file;
  fs::path path() const { return kFuzzDir / dir / target / file; }
};

// What GoogleTest prints for a failing input: its path, not the struct's bytes.
void PrintTo(const Input& in, std::ostream* os) { *os << in.path().string(); }

std::vector<Input> all_inputs() {
  std::vector<Input> r;
  for (const softlab::fuzz::Target& t : softlab::fuzz::targets())
    for (const char* dir : kInputDirs) {
      const fs::path d = kFuzzDir / dir / t.name;
      if (!fs::is_directory(d)) continue;
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(d))
        if (e.is_regular_file()) files.push_back(e.path().filename().string());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) r.push_back({t.name, dir, f});
    }
  return r;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// In the child: a hang ends with SIGALRM, a deep recursion with SIGSEGV; an allocation beyond
// the limit fails, which the target reports as a finding (std::bad_alloc is not a
// softlab::Error).
[[noreturn]] void run_limited(const softlab::fuzz::Target& t, const std::string& bytes) {
  ::alarm(kSecondsPerInput);
  const rlimit stack{kStackBytes, kStackBytes};
  ::setrlimit(RLIMIT_STACK, &stack);  // the main thread's stack grows only up to the current limit
  if (!kAsan) {  // ASan reserves terabytes of address space; it gets its limit from ASAN_OPTIONS
    const rlimit lim{kAddressSpaceBytes, kAddressSpaceBytes};
    ::setrlimit(RLIMIT_AS, &lim);
  }
  t.run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  std::exit(0);
}

class FuzzReplay : public testing::TestWithParam<Input> {};

TEST_P(FuzzReplay, AcceptedOrRejectedAsBadInput) {
  const Input& in = GetParam();
  const softlab::fuzz::Target* t = softlab::fuzz::find_target(in.target);
  ASSERT_NE(t, nullptr) << in.target;
  const std::string bytes = read_bytes(in.path());
  // "threadsafe" starts the child as a new process (no fork of a process that may already
  // run OpenMP threads), and so it reads ASAN_OPTIONS afresh.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  if (kAsan) {
    const char* old = std::getenv("ASAN_OPTIONS");
    const std::string opts = std::string(old ? old : "") + (old && *old ? ":" : "") + "allocator_may_return_null=1" +
                             ":max_allocation_size_mb=" + kAsanMaxAllocationMb;
    ::setenv("ASAN_OPTIONS", opts.c_str(), 1);
  }
  EXPECT_EXIT(run_limited(*t, bytes), testing::ExitedWithCode(0), "")
      << "fuzz target '" << in.target << "' (" << t->input << ") on " << in.path().string()
      << "\nreproduce with a clang build: fuzz_" << in.target << " " << in.path().string() << " (tools/fuzz.sh)";
}

std::string test_name(const testing::TestParamInfo<Input>& info) {
  std::string n = info.param.dir + "_" + info.param.target + "_" + info.param.file;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Inputs, FuzzReplay, testing::ValuesIn(all_inputs()), test_name);

// A target without seeds would not be fuzzed from valid input, and a folder named after no
// target would silently never be replayed.
TEST(FuzzReplayInputs, EveryTargetHasSeedsAndEveryFolderATarget) {
  std::set<std::string> names;
  for (const softlab::fuzz::Target& t : softlab::fuzz::targets()) {
    names.insert(t.name);
    const fs::path seeds = kFuzzDir / "corpus" / t.name;
    EXPECT_TRUE(fs::is_directory(seeds) && !fs::is_empty(seeds)) << "no seed inputs in " << seeds.string();
  }
  for (const char* dir : kInputDirs) {
    if (!fs::is_directory(kFuzzDir / dir)) continue;
    for (const auto& e : fs::directory_iterator(kFuzzDir / dir))
      EXPECT_TRUE(e.is_directory() && names.count(e.path().filename().string()))
          << e.path().string() << " is not the folder of a fuzz target (targets.cpp lists them)";
  }
}

}  // namespace
