#pragma once
// Reading golden-value files (tests/golden/README.md) and comparing against them, shared by
// the attention and head golden tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "softlab/nn/module.hpp"
#include "softlab/schema.hpp"
#include "softlab/softlab.hpp"

namespace softlab::test {
namespace fs = std::filesystem;

inline std::vector<std::string> golden_files(const fs::path& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_regular_file() && entry.path().extension() == ".json") files.push_back(entry.path().filename().string());
  std::sort(files.begin(), files.end());
  return files;
}

// A gtest-safe test name from a file name: "softplus_bidir_n7_p2.5.json" -> "softplus_bidir_n7_p2_5".
inline std::string case_name(const std::string& file) {
  std::string s = fs::path(file).stem().string();
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

inline json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return json::parse(in);
}

inline std::vector<float> floats(const json& j, const std::string& what) {
  if (!j.is_array()) throw std::runtime_error(what + ": expected an array of numbers");
  std::vector<float> out;
  out.reserve(j.size());
  for (const auto& x : j) out.push_back(static_cast<float>(x.get<double>()));
  return out;
}

inline std::vector<int64_t> dims_of(const json& j) { return j.get<std::vector<int64_t>>(); }

inline std::string index_str(int64_t flat, const std::vector<int64_t>& dims) {
  std::vector<int64_t> idx(dims.size());
  for (size_t d = dims.size(); d-- > 0;) {
    idx[d] = dims[d] ? flat % dims[d] : 0;
    flat = dims[d] ? flat / dims[d] : 0;
  }
  std::string s = "[";
  for (size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

// Compares softlab's values `got` (an undefined tensor counts as all zeros: a gradient that
// backward never reached) with the file's `want`; reports the worst element on failure.
inline void expect_close(const std::string& what, const Tensor& got, const std::vector<float>& want,
                  const std::vector<int64_t>& dims, double atol, double rtol) {
  std::vector<float> a = got.defined() ? got.to_vector() : std::vector<float>(want.size(), 0.0f);
  if (got.defined() && got.shape().dims() != dims) {
    ADD_FAILURE() << what << ": shape " << got.shape() << ", the golden file has " << Shape(dims);
    return;
  }
  if (a.size() != want.size()) {
    ADD_FAILURE() << what << ": " << a.size() << " values, the golden file has " << want.size();
    return;
  }
  double worst = -1.0;
  int64_t worst_i = -1, bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double b = want[i], err = std::fabs(static_cast<double>(a[i]) - b);
    const double ratio = std::isfinite(a[i]) ? err / (atol + rtol * std::fabs(b)) : std::numeric_limits<double>::infinity();
    if (ratio > 1.0) ++bad;
    if (ratio > worst) worst = ratio, worst_i = static_cast<int64_t>(i);
  }
  if (bad == 0) return;
  const double b = want[worst_i];
  ADD_FAILURE() << what << ": " << bad << " of " << a.size() << " elements outside |a-b| <= " << std::setprecision(3)
                << atol << " + " << rtol << "|b|; worst at " << index_str(worst_i, dims) << ": softlab "
                << std::setprecision(9) << a[worst_i] << ", golden " << b << ", |a-b| = " << std::setprecision(3)
                << std::fabs(a[worst_i] - b) << " (" << worst << "x the tolerance)";
}


// Copies the file's parameter (or buffer) values into `tensors` by name. Both sides must
// have the same names and shapes; every mismatch is a test failure naming the tensor.
inline void load_golden_tensors(const char* kind, const json& file_tensors, const nn::NamedTensors& tensors) {
  for (const auto& [name, t] : tensors)
    EXPECT_TRUE(file_tensors.contains(name)) << "the module has " << kind << " '" << name << "' " << t.shape()
                                             << ", which the golden file lacks";
  for (const auto& [name, ft] : file_tensors.items()) {
    auto it = std::find_if(tensors.begin(), tensors.end(), [&](const auto& nt) { return nt.first == name; });
    if (it == tensors.end()) {
      ADD_FAILURE() << "the golden file has " << kind << " '" << name << "', which the module lacks";
      continue;
    }
    const std::vector<int64_t> dims = dims_of(ft.at("shape"));
    Tensor t = it->second;
    if (t.shape().dims() != dims) {
      ADD_FAILURE() << kind << " '" << name << "': module shape " << t.shape() << ", golden file " << Shape(dims);
      continue;
    }
    const std::vector<float> value = floats(ft.at("value"), name + ".value");
    ASSERT_EQ(static_cast<int64_t>(value.size()), t.numel()) << kind << " '" << name << "'";
    std::copy(value.begin(), value.end(), t.mutable_data());
  }
}

// The file's "tolerance" {"atol", "rtol"} if it has one, else the defaults.
inline std::pair<double, double> golden_tolerance(const json& g, double atol, double rtol) {
  if (!g.contains("tolerance")) return {atol, rtol};
  return {g["tolerance"].at("atol").get<double>(), g["tolerance"].at("rtol").get<double>()};
}

inline nn::NamedTensors named_parameters(const nn::Module& m) { return m.named_parameters(); }

}  // namespace softlab::test
