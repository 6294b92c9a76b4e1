// Attention modules against golden values computed independently in float64 with PyTorch
// (tools/golden/attention.py, from spec/attention.md; format in tests/golden/README.md).
//
// One parameterised test per file in tests/golden/attention/, named after the file. Each
// builds the module from the file's config and context, loads the file's parameter values,
// runs forward and backward with the file's q, k, v and dout, and compares the output and
// the gradients of q, k, v and every parameter element by element:
// |a - b| <= atol + rtol |b|, with atol 1e-5, rtol 1e-4 unless the file carries its own
// "tolerance" (the generator says why next to CASE_TOLERANCE). A module that is not
// registered yet is skipped, not failed.
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

#include "softlab/attention.hpp"
#include "softlab/softlab.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

const fs::path kGoldenDir = fs::path(SOFTLAB_SOURCE_DIR) / "tests" / "golden" / "attention";
constexpr double kDefaultAtol = 1e-5, kDefaultRtol = 1e-4;

std::vector<std::string> golden_files() {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(kGoldenDir, ec))
    if (entry.is_regular_file() && entry.path().extension() == ".json") files.push_back(entry.path().filename().string());
  std::sort(files.begin(), files.end());
  return files;
}

// A gtest-safe test name from a file name: "softplus_bidir_n7_p2.5.json" -> "softplus_bidir_n7_p2_5".
std::string case_name(const std::string& file) {
  std::string s = fs::path(file).stem().string();
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return json::parse(in);
}

std::vector<float> floats(const json& j, const std::string& what) {
  if (!j.is_array()) throw std::runtime_error(what + ": expected an array of numbers");
  std::vector<float> out;
  out.reserve(j.size());
  for (const auto& x : j) out.push_back(static_cast<float>(x.get<double>()));
  return out;
}

std::vector<int64_t> dims_of(const json& j) { return j.get<std::vector<int64_t>>(); }

std::string index_str(int64_t flat, const std::vector<int64_t>& dims) {
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
void expect_close(const std::string& what, const Tensor& got, const std::vector<float>& want,
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

class AttentionGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionGolden, Matches) {
  const fs::path path = kGoldenDir / GetParam();
  SCOPED_TRACE("golden file " + path.string());
  const json g = read_json(path);
  const json& cfg = g.at("config");
  const std::string type = cfg.at("type").get<std::string>();
  if (!attention_registry().find(type))
    GTEST_SKIP() << "attention module '" << type << "' is not registered (yet)";

  const std::vector<int64_t> shape = dims_of(g.at("shape"));
  ASSERT_EQ(shape.size(), 4u) << "shape must be [B, H, N, Dh]";
  const int64_t heads = shape[1], head_dim = shape[3];
  const json& cx = g.at("context");
  Generator init(0);
  AttentionContext ctx;
  ctx.dim = heads * head_dim;
  ctx.heads = heads;
  ctx.head_dim = head_dim;
  ctx.seq_len = cx.at("seq_len").get<int64_t>();
  ctx.grid_h = cx.at("grid_h").get<int64_t>();
  ctx.grid_w = cx.at("grid_w").get<int64_t>();
  ctx.prefix_tokens = cx.at("prefix_tokens").get<int64_t>();
  ctx.init = &init;

  double atol = kDefaultAtol, rtol = kDefaultRtol;
  if (g.contains("tolerance")) {
    atol = g["tolerance"].at("atol").get<double>();
    rtol = g["tolerance"].at("rtol").get<double>();
  }

  std::unique_ptr<Attention> module;
  try {
    module = make_attention(cfg, ctx);
  } catch (const std::exception& e) {
    FAIL() << "make_attention rejected the golden config " << cfg.dump() << ": " << e.what();
  }

  // Parameters: the file's and the module's must be the same set of names and shapes.
  const json& fparams = g.at("params");
  std::vector<nn::Parameter> mparams = module->parameters();
  for (const auto& p : mparams)
    EXPECT_TRUE(fparams.contains(p.name)) << "the module has parameter '" << p.name << "' " << p.tensor.shape()
                                          << ", which the golden file lacks";
  for (const auto& [name, fp] : fparams.items()) {
    auto it = std::find_if(mparams.begin(), mparams.end(), [&](const nn::Parameter& p) { return p.name == name; });
    if (it == mparams.end()) {
      ADD_FAILURE() << "the golden file has parameter '" << name << "', which the module lacks";
      continue;
    }
    const std::vector<int64_t> pdims = dims_of(fp.at("shape"));
    if (it->tensor.shape().dims() != pdims) {
      ADD_FAILURE() << "parameter '" << name << "': module shape " << it->tensor.shape() << ", golden file "
                    << Shape(pdims);
      continue;
    }
    const std::vector<float> value = floats(fp.at("value"), name + ".value");
    ASSERT_EQ(static_cast<int64_t>(value.size()), it->tensor.numel()) << "parameter '" << name << "'";
    std::copy(value.begin(), value.end(), it->tensor.mutable_data());
  }
  if (HasFailure()) return;

  const Shape s(shape);
  Tensor q = from_vector(s, floats(g.at("q"), "q"));
  Tensor k = from_vector(s, floats(g.at("k"), "k"));
  Tensor v = from_vector(s, floats(g.at("v"), "v"));
  q.set_requires_grad(true);
  k.set_requires_grad(true);
  v.set_requires_grad(true);
  Tensor out = module->forward(q, k, v);
  ASSERT_EQ(out.shape(), s) << "output shape";
  out.backward(from_vector(s, floats(g.at("dout"), "dout")));

  expect_close("out", out, floats(g.at("out"), "out"), shape, atol, rtol);
  expect_close("dq", q.grad(), floats(g.at("dq"), "dq"), shape, atol, rtol);
  expect_close("dk", k.grad(), floats(g.at("dk"), "dk"), shape, atol, rtol);
  expect_close("dv", v.grad(), floats(g.at("dv"), "dv"), shape, atol, rtol);
  for (const auto& p : mparams)
    if (fparams.contains(p.name))
      expect_close("param '" + p.name + "' grad", p.tensor.grad(), floats(fparams[p.name].at("grad"), p.name + ".grad"),
                   dims_of(fparams[p.name].at("shape")), atol, rtol);
}

INSTANTIATE_TEST_SUITE_P(File, AttentionGolden, ::testing::ValuesIn(golden_files()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return case_name(info.param); });
// An empty directory is reported by AttentionGoldenFiles.Present below, with the path.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(AttentionGolden);

TEST(AttentionGoldenFiles, Present) {
  const std::vector<std::string> files = golden_files();
  EXPECT_FALSE(files.empty()) << "no golden files in " << kGoldenDir
                              << " (regenerate: /usr/bin/python3 tools/golden/attention.py)";
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(case_name(f));
  std::sort(names.begin(), names.end());
  EXPECT_TRUE(std::adjacent_find(names.begin(), names.end()) == names.end())
      << "two golden files map to the same test name";
}

}  // namespace
