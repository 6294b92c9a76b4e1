#pragma once
// softlab::Error: the one exception type of the library. Library code throws it with a
// message that says what is wrong and where (shapes, JSON path, file and offset); only
// src/cli/main.cpp turns it into an exit code (2 for bad input, 1 for an internal fault).
#include <sstream>
#include <stdexcept>
#include <string>

namespace softlab {

class Error : public std::runtime_error {
 public:
  enum class Kind { BadInput, Internal };
  explicit Error(const std::string& msg, Kind kind = Kind::BadInput)
      : std::runtime_error(msg), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

namespace detail {
// Streams every argument into one string, so call sites read like a sentence:
// SOFTLAB_CHECK(a.rank() == 2, "matmul: a must be 2-D, got ", a.shape()).
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace softlab

#define SOFTLAB_CHECK(cond, ...)                                  \
  do {                                                            \
    if (!(cond)) throw ::softlab::Error(::softlab::detail::cat(__VA_ARGS__)); \
  } while (0)

// For conditions that only a bug in softlab can break.
#define SOFTLAB_ASSERT(cond, ...)                                                    \
  do {                                                                               \
    if (!(cond))                                                                     \
      throw ::softlab::Error(::softlab::detail::cat("internal error: ", __VA_ARGS__, \
                                                    " (", __FILE__, ":", __LINE__, ")"), \
                             ::softlab::Error::Kind::Internal);                      \
  } while (0)
