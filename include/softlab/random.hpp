#pragma once
// A small, portable generator (xoshiro256** seeded through splitmix64) whose streams are
// identical on every platform and standard library, unlike std::normal_distribution.
// softlab keeps one Generator per purpose (init, data order, augmentation, dropout) so
// that changing one does not shift the others.
#include <cstdint>

namespace softlab {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0);
  void seed(uint64_t seed);
  uint64_t next_u64();
  uint32_t next_u32() { return static_cast<uint32_t>(next_u64() >> 32); }
  float uniform();                 // [0, 1), 24 random bits
  float uniform(float lo, float hi);
  float normal();                  // standard normal, Box-Muller
  uint64_t below(uint64_t n);      // uniform integer in [0, n), unbiased

  // The whole state, for checkpoints.
  struct State {
    uint64_t s[4];
    bool has_spare;
    float spare;
  };
  State state() const;
  void set_state(const State& st);

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  float spare_ = 0.0f;
};

}  // namespace softlab
