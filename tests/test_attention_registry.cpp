// Every registered attention module, driven by the registry: each claim an AttentionEntry
// makes is checked here, so that a module is covered by being registered.
//   - reference: the fused module against its composed reference (outputs and the gradients
//     of q, k, v and every parameter), bidirectional and, with caps.causal, causal;
//   - finite-difference gradients in the modes the caps claim;
//   - caps.causal: the schema's "causal" key, and that no output row sees a later token;
//   - caps.needs_grid: building without an image grid fails, or works;
//   - caps.learnable: parameters exist in some configuration, or in none;
//   - golden: every built-in module and head lists golden cases, every file in
//     tests/golden/attention and tests/golden/heads belongs to exactly one entry of the
//     module it configures (the cases themselves run in test_attention_golden.cpp and
//     test_heads_golden.cpp).
// The parameterised tests are named after the module. A module registered by this file, as
// user code would (register_attention), goes through the same tests.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <deque>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "attention_checks.hpp"
#include "attention_reference.hpp"
#include "golden_io.hpp"
#include "softlab/attention.hpp"
#include "softlab/head.hpp"
#include "softlab/ops.hpp"

using namespace softlab;
using namespace softlab::test;

namespace {

// ---- a module registered by user code --------------------------------------------------------

constexpr const char* kUserModule = "test_user_attention";

// Softmax attention composed from the public primitive ops, as a program without softlab's
// kernels would write it. "temperature": true adds a learnable factor on the logits, so the
// module is learnable in one configuration and not in its default.
class UserAttention final : public Attention {
 public:
  explicit UserAttention(const json& p) : causal_(p["causal"].get<bool>()) {
    if (p["temperature"].get<bool>()) temperature_ = register_parameter("temperature", full({1}, 1.0f), false);
  }
  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) override {
    const int64_t n = q.shape()[2];
    Tensor s = scale(matmul(q, k, false, true), 1.0f / std::sqrt(static_cast<float>(q.shape()[3])));
    if (temperature_.defined()) s = mul(s, temperature_);
    if (causal_) {
      Tensor mask = zeros({n, n});
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i + 1; j < n; ++j) mask.mutable_data()[i * n + j] = -std::numeric_limits<float>::infinity();
      s = add(s, mask);
    }
    return matmul(softmax(s), v);
  }

 private:
  bool causal_;
  Tensor temperature_;
};

AttentionEntry user_entry() {
  AttentionEntry e;
  e.name = kUserModule;
  e.help = "softmax attention composed from primitive ops (registered by the test suite)";
  e.caps = {.causal = true, .learnable = true};
  e.schema = {
      {.name = "causal", .type = ParamType::Bool, .default_value = false, .help = "query i sees keys 0..i only"},
      {.name = "temperature", .type = ParamType::Bool, .default_value = false, .help = "a learnable logit factor"},
  };
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    return std::make_unique<UserAttention>(p);
  };
  // Written another way: exp and a row sum instead of softmax, the mask as a product.
  e.reference = [](Attention& m, const json& p, const AttentionContext&, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const int64_t n = q.shape()[2];
    Tensor s = scale(matmul(q, k, false, true), 1.0f / std::sqrt(static_cast<float>(q.shape()[3])));
    for (auto& prm : m.parameters())
      if (prm.name == "temperature") s = mul(s, prm.tensor);
    Tensor w = exp(sub(s, max(s, -1, true)));
    if (p["causal"].get<bool>()) {
      Tensor visible = ones({n, n});
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i + 1; j < n; ++j) visible.mutable_data()[i * n + j] = 0.0f;
      w = mul(w, visible);
    }
    return matmul(div(w, sum(w, -1, true)), v);
  };
  return e;
}

// Registered on first use, once per process (a test may run more than once).
const AttentionEntry& user_module() {
  static const AttentionEntry& entry = register_attention(user_entry());
  return entry;
}

// The modules the parameterised tests run on: the registry's (the built-in table and
// whatever was registered before the tests were listed) and this file's user module, which
// registers only when a test runs, so that no other test file's list depends on this one.
std::vector<std::string> module_names() {
  std::vector<std::string> names = attention_registry().names();
  if (std::find(names.begin(), names.end(), kUserModule) == names.end()) names.push_back(kUserModule);
  return names;
}

// ---- cases -------------------------------------------------------------------------------------

bool has_key(const Schema& schema, const std::string& key) {
  return std::any_of(schema.begin(), schema.end(), [&](const ParamSpec& p) { return p.name == key; });
}

// A case of `config` at [B, H, N, Dh]. A module that needs a grid gets one whose tokens
// number N: N = 5, 7 as a class token and a 2x2, 2x3 grid; N = 9, 16 as a 3x3, 4x4 grid.
AttnCase make_case(const AttentionEntry& e, json config, int64_t B, int64_t H, int64_t N, int64_t Dh, uint64_t seed) {
  AttnCase c;
  c.config = std::move(config);
  c.B = B;
  c.H = H;
  c.N = N;
  c.Dh = Dh;
  c.seed = seed;
  if (e.caps.needs_grid) {
    const std::map<int64_t, std::array<int64_t, 3>> grids = {
        {5, {2, 2, 1}}, {7, {2, 3, 1}}, {9, {3, 3, 0}}, {16, {4, 4, 0}}};
    const auto& g = grids.at(N);
    c.grid_h = g[0];
    c.grid_w = g[1];
    c.prefix = g[2];
  }
  // Parameters that start at a special point (selective's temperatures at zero) are
  // tested off it.
  if (e.caps.learnable) c.perturb_params = seed + 1000;
  return c;
}

// The configs the claims are checked in: the default and each Bool flipped and each String
// choice taken (the "documented configurations"), beside "causal". All validate.
std::vector<json> documented_configs(const AttentionEntry& e) {
  std::vector<json> out = {json{{"type", e.name}}};
  for (const auto& p : e.schema) {
    if (p.name == "causal") continue;
    if (p.type == ParamType::Bool) out.push_back({{"type", e.name}, {p.name, !p.default_value.get<bool>()}});
    if (p.type == ParamType::String)
      for (const auto& choice : p.choices)
        if (choice != p.default_value) out.push_back({{"type", e.name}, {p.name, choice}});
  }
  return out;
}

std::vector<nn::Parameter> parameters_of(const AttentionEntry& e, const json& config) {
  Generator init(1);
  return build(make_case(e, config, 1, 2, 7, 4, 1), init)->parameters();
}

// The configs whose fused forward and backward are checked: the default, and for a learnable
// module whose default has no parameters, the first documented config that has some.
std::vector<json> checked_configs(const AttentionEntry& e) {
  std::vector<json> out = {json{{"type", e.name}}};
  if (e.caps.learnable && parameters_of(e, out[0]).empty())
    for (const json& c : documented_configs(e))
      if (!parameters_of(e, c).empty()) {
        out.push_back(c);
        break;
      }
  return out;
}

// The modes the caps claim: bidirectional, and causal with caps.causal.
std::vector<json> with_modes(const AttentionEntry& e, const json& config) {
  if (!e.caps.causal) return {config};
  json causal = config;
  causal["causal"] = true;
  return {config, causal};
}

class RegisteredAttention : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { (void)user_module(); }
  const AttentionEntry& entry() const { return attention_registry().get(GetParam(), "model.attention.type"); }
};

// ---- the composed reference --------------------------------------------------------------------

TEST_P(RegisteredAttention, MatchesComposedReference) {
  const AttentionEntry& e = entry();
  if (!e.reference) GTEST_SKIP() << e.name << " registers no composed reference";
  for (const json& base : checked_configs(e))
    for (const json& config : with_modes(e, base))
      // odd N and odd Dh, then a block of 16 tokens with several heads
      for (const auto& [B, H, N, Dh] : std::vector<std::array<int64_t, 4>>{{2, 2, 7, 5}, {1, 3, 16, 8}}) {
        const AttnCase c = make_case(e, config, B, H, N, Dh, static_cast<uint64_t>(N + Dh));
        expect_matches_reference(c, registry_reference(c));
      }
}

// ---- finite differences ------------------------------------------------------------------------

TEST_P(RegisteredAttention, FiniteDifferences) {
  const AttentionEntry& e = entry();
  for (const json& base : checked_configs(e))
    for (const json& config : with_modes(e, base)) expect_gradcheck(make_case(e, config, 1, 2, 5, 3, 3));
}

// ---- causal --------------------------------------------------------------------------------------

TEST_P(RegisteredAttention, CausalClaim) {
  const AttentionEntry& e = entry();
  EXPECT_EQ(has_key(e.schema, "causal"), e.caps.causal) << "the schema's \"causal\" key and caps.causal disagree";
  if (e.caps.causal) {
    // Token t of q, k and v changes; no output row before t may change, bit for bit.
    for (const json& base : checked_configs(e)) {
      json config = base;
      config["causal"] = true;
      expect_causal(make_case(e, config, 2, 2, 9, 4, 5));
    }
    return;
  }
  const AttnCase c = make_case(e, json{{"type", e.name}, {"causal", true}}, 1, 2, 7, 4, 1);
  Generator init(1);
  try {
    (void)build(c, init);
    ADD_FAILURE() << e.name << " has no causal form but accepted {\"causal\": true}";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("model.attention.causal"), std::string::npos) << err.what();
  }
}

// ---- the image grid ------------------------------------------------------------------------------

TEST_P(RegisteredAttention, GridClaim) {
  const AttentionEntry& e = entry();
  AttnCase c = make_case(e, json{{"type", e.name}}, 1, 2, 7, 4, 1);
  c.grid_h = c.grid_w = c.prefix = 0;
  Generator init(1);
  if (e.caps.needs_grid) {
    EXPECT_THROW((void)build(c, init), Error) << e.name << " claims to need a grid but builds without one";
    return;
  }
  std::unique_ptr<Attention> m;
  ASSERT_NO_THROW(m = build(c, init)) << e.name << " does not claim to need a grid";
  const AttnInputs in = make_inputs(c, false);
  NoGradGuard ng;
  EXPECT_EQ(m->forward(in.q, in.k, in.v).shape(), in.v.shape());
}

// ---- parameters ----------------------------------------------------------------------------------

TEST_P(RegisteredAttention, LearnableClaim) {
  const AttentionEntry& e = entry();
  bool some = false;
  for (const json& config : documented_configs(e)) {
    SCOPED_TRACE(config.dump());
    const auto params = parameters_of(e, config);
    if (!e.caps.learnable) {
      EXPECT_TRUE(params.empty()) << "caps.learnable is false but this config has parameter " << params[0].name;
    }
    some = some || !params.empty();
  }
  if (e.caps.learnable) {
    EXPECT_TRUE(some) << "caps.learnable is true but no documented config has parameters";
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, RegisteredAttention, ::testing::ValuesIn(module_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---- golden cases ---------------------------------------------------------------------------------

// Every built-in entry lists cases, each a file whose config names the entry; every file in
// the folder is listed by exactly one entry.
template <class Entry>
void check_golden_claims(const std::deque<Entry>& entries, const fs::path& dir, const char* generator) {
  std::map<std::string, std::vector<std::string>> owners;  // case -> entries listing it
  for (const auto& e : entries) {
    if (e.builtin) {
      EXPECT_FALSE(e.golden.empty()) << "built-in '" << e.name << "' lists no golden case (add one to " << generator
                                     << ", run it, and list it in the entry's golden)";
    }
    for (const auto& name : e.golden) {
      owners[name].push_back(e.name);
      const fs::path file = dir / (name + ".json");
      if (!fs::exists(file)) {
        ADD_FAILURE() << "'" << e.name << "' lists golden case '" << name << "', but " << file << " does not exist";
        continue;
      }
      EXPECT_EQ(read_json(file).at("config").at("type").get<std::string>(), e.name)
          << file << " configures another module than the entry that lists it";
    }
  }
  const std::vector<std::string> files = golden_files(dir);
  EXPECT_FALSE(files.empty()) << "no golden files in " << dir;
  for (const auto& f : files) {
    const std::string name = fs::path(f).stem().string();
    const auto it = owners.find(name);
    EXPECT_TRUE(it != owners.end() && it->second.size() == 1)
        << dir / f << " is listed by " << (it == owners.end() ? 0 : it->second.size())
        << " entries; exactly one entry's golden must list it";
  }
}

const fs::path kGoldenRoot = fs::path(SOFTLAB_SOURCE_DIR) / "tests" / "golden";

TEST(RegistryGolden, AttentionEntriesClaimTheirCases) {
  check_golden_claims(attention_registry().entries(), kGoldenRoot / "attention", "tools/golden/attention.py");
}

TEST(RegistryGolden, HeadEntriesClaimTheirCases) {
  check_golden_claims(head_registry().entries(), kGoldenRoot / "heads", "tools/golden/heads.py");
}

// The messages of the failures f reports, which are kept from the running test.
std::vector<std::string> failures_of(const std::function<void()>& f) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter intercept(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    f();
  }
  std::vector<std::string> out;
  for (int i = 0; i < results.size(); ++i) out.emplace_back(results.GetTestPartResult(i).message());
  return out;
}

bool any_contains(const std::vector<std::string>& messages, const std::string& a, const std::string& b = "") {
  return std::any_of(messages.begin(), messages.end(), [&](const std::string& m) {
    return m.find(a) != std::string::npos && m.find(b) != std::string::npos;
  });
}

// The claims check catches a built-in module without cases, a file no entry lists, and a
// file two entries list.
TEST(RegistryGolden, TheCheckCanFail) {
  const fs::path dir = kGoldenRoot / "attention";
  std::deque<AttentionEntry> entries = attention_registry().entries();
  for (auto& e : entries)
    if (e.name == "softmax") e.golden.clear();
  const auto missing = failures_of([&] { check_golden_claims(entries, dir, "tools/golden/attention.py"); });
  EXPECT_TRUE(any_contains(missing, "built-in 'softmax' lists no golden case")) << ::testing::PrintToString(missing);
  EXPECT_TRUE(any_contains(missing, "softmax_bidir_n7.json", "is listed by 0 entries"))
      << ::testing::PrintToString(missing);

  entries = attention_registry().entries();
  entries.push_back(entries.front());  // the first entry's cases, listed a second time
  const auto twice = failures_of([&] { check_golden_claims(entries, dir, "tools/golden/attention.py"); });
  EXPECT_TRUE(any_contains(twice, entries.front().golden.at(0) + ".json", "is listed by 2 entries"))
      << ::testing::PrintToString(twice);
}

// ---- registering ----------------------------------------------------------------------------------

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RegistryUser, ModuleIsListedAndBuilds) {
  const AttentionEntry& e = user_module();
  EXPECT_EQ(attention_registry().find(kUserModule), &e);
  EXPECT_FALSE(e.builtin);
  const auto names = attention_registry().names();
  EXPECT_NE(std::find(names.begin(), names.end(), kUserModule), names.end());
  AttentionContext ctx;
  ctx.heads = 2;
  ctx.head_dim = 4;
  auto m = make_attention(json{{"type", kUserModule}, {"causal", true}}, ctx);
  ASSERT_TRUE(m);
  EXPECT_NE(error_of([&] { make_attention(json{{"type", kUserModule}, {"temprature", true}}, ctx); })
                .find("model.attention.temprature"),
            std::string::npos)
      << "its schema validates its keys";
}

TEST(RegistryUser, TakenNamesAreRefused) {
  (void)user_module();
  for (const std::string& name : {std::string(kUserModule), std::string("softmax")}) {
    AttentionEntry e = user_entry();
    e.name = name;
    const std::string msg = error_of([&] { register_attention(e); });
    EXPECT_NE(msg.find("'" + name + "'"), std::string::npos) << "registering '" << name << "' twice: " << msg;
    EXPECT_NE(msg.find("taken"), std::string::npos) << msg;
  }
}

TEST(RegistryUser, CausalCapsMustMatchTheSchema) {
  AttentionEntry claims = user_entry();  // caps.causal without the key
  claims.name = "test_user_causal_claim";
  claims.schema.erase(claims.schema.begin());
  AttentionEntry lacks = user_entry();  // the key without caps.causal
  lacks.name = "test_user_causal_key";
  lacks.caps.causal = false;
  for (const AttentionEntry* e : {&claims, &lacks}) {
    const std::string msg = error_of([&] { register_attention(*e); });
    EXPECT_NE(msg.find(e->name), std::string::npos) << msg;
    EXPECT_NE(msg.find("causal"), std::string::npos) << msg;
    EXPECT_EQ(attention_registry().find(e->name), nullptr) << "a refused entry must not be registered";
  }
}

}  // namespace
