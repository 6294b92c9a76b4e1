// xoshiro256** (Blackman & Vigna), seeded through splitmix64; Box-Muller normals.
#include "softlab/random.hpp"

#include <cmath>

namespace softlab {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Generator::Generator(uint64_t seed) { this->seed(seed); }

void Generator::seed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
  has_spare_ = false;
  spare_ = 0.0f;
}

uint64_t Generator::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

float Generator::uniform() { return static_cast<float>(next_u64() >> 40) * 0x1.0p-24f; }

float Generator::uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

float Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Box-Muller in double so the stream is the same wherever libm's float functions differ.
  double u1 = 0.0;
  while (u1 <= 0.0) u1 = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
  const double u2 = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double th = 6.283185307179586476925 * u2;
  spare_ = static_cast<float>(r * std::sin(th));
  has_spare_ = true;
  return static_cast<float>(r * std::cos(th));
}

uint64_t Generator::below(uint64_t n) {
  if (n <= 1) return 0;
  // Lemire's rejection: unbiased for every n.
  const uint64_t limit = (0 - n) % n;
  for (;;) {
    const uint64_t x = next_u64();
    if (x >= limit) return x % n;
  }
}

Generator::State Generator::state() const {
  State st{};
  for (int i = 0; i < 4; ++i) st.s[i] = s_[i];
  st.has_spare = has_spare_;
  st.spare = spare_;
  return st;
}

void Generator::set_state(const State& st) {
  for (int i = 0; i < 4; ++i) s_[i] = st.s[i];
  has_spare_ = st.has_spare;
  spare_ = st.spare;
}

}  // namespace softlab
