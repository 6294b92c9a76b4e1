#pragma once
// The one way the tests expect a softlab::Error: run the call, require the throw, and check
// that the message names what the user needs (the key, the file, the shape).
#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "softlab/error.hpp"

namespace softlab::test {

// Runs `f` and returns the message of the softlab::Error it throws, after checking that the
// message holds every one of `parts` and, given `kind`, the error's kind. Nothing thrown, or
// anything but a softlab::Error, is a test failure (and returns "").
inline std::string expect_error(const std::function<void()>& f, const std::vector<std::string>& parts,
                                std::optional<Error::Kind> kind = std::nullopt) {
  std::string msg;
  try {
    f();
    ADD_FAILURE() << "expected a softlab::Error, nothing was thrown";
    return "";
  } catch (const Error& e) {
    msg = e.what();
    if (kind) {
      EXPECT_EQ(e.kind(), *kind) << msg;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a softlab::Error, got another exception: " << e.what();
    return "";
  }
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
  return msg;
}

// The same for errors in what the user gave (exit code 2 at the command line).
inline std::string expect_bad_input(const std::function<void()>& f, const std::vector<std::string>& parts) {
  return expect_error(f, parts, Error::Kind::BadInput);
}

}  // namespace softlab::test
