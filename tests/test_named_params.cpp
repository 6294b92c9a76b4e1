// Parameters by name for embedding programs: named_parameters(), parameter(), set_parameter(),
// strict and non-strict load_state, weights read back from a checkpoint of a real run, and
// the umbrella header covering the whole public API.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "softlab/softlab.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

// The tiny ViT of the training tests (dim 32, depth 2, 10 classes), built without data.
Config tiny(const std::vector<std::string>& sets = {}) {
  json j = test::tiny_config("/nonexistent-data", "/nonexistent-run");
  for (const auto& s : sets) apply_override(j, s);
  return parse_config(resolve_config(j));
}

std::unique_ptr<nn::Model> tiny_model(const std::vector<std::string>& sets = {}, uint64_t seed = 3) {
  Config cfg = tiny(sets);
  cfg.seed = seed;
  return build_model(cfg, 10, 1000);
}

// The message of the softlab::Error that f throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

}  // namespace

TEST(NamedParams, DottedNamesInRegistrationOrder) {
  auto m = tiny_model();
  const nn::NamedTensors named = m->named_parameters();
  const std::vector<nn::Parameter> params = m->parameters();
  ASSERT_EQ(named.size(), params.size());
  for (size_t i = 0; i < named.size(); ++i) {
    EXPECT_EQ(named[i].first, params[i].name);
    EXPECT_TRUE(named[i].second.same_storage(params[i].tensor)) << named[i].first;
  }
  // The ViT registers the class token, the positions, the patch embedding, then the blocks.
  ASSERT_GE(named.size(), 4u);
  EXPECT_EQ(named[0].first, "cls_token");
  EXPECT_EQ(named[1].first, "pos_embed");
  EXPECT_EQ(named[2].first, "patch_embed.proj.weight");
  EXPECT_EQ(named.back().first, "head.bias");
  std::map<std::string, Shape> shape;
  for (const auto& [n, t] : named) shape[n] = t.shape();
  EXPECT_EQ(shape.at("blocks.0.attn.qkv.weight"), Shape({96, 32}));
  EXPECT_EQ(shape.at("blocks.1.mlp.fc1.weight"), Shape({64, 32}));
  EXPECT_EQ(shape.at("head.weight"), Shape({10, 32}));
  // state() is the parameters, then the buffers, under the same names.
  const nn::NamedTensors st = m->state();
  ASSERT_EQ(st.size(), named.size() + m->buffers().size());
  for (size_t i = 0; i < named.size(); ++i) EXPECT_EQ(st[i].first, named[i].first);
}

TEST(NamedParams, GetterSharesTheParameterAndSetterCopiesInPlace) {
  auto m = tiny_model();
  auto* vit = dynamic_cast<nn::ViT*>(m.get());
  ASSERT_NE(vit, nullptr);
  const std::string name = "blocks.1.mlp.fc1.weight";
  const Tensor& p = m->parameter(name);
  // The layer's own member, the parameters() list and the getter are one tensor.
  EXPECT_TRUE(p.same_storage(vit->blocks[1]->mlp->fc1->weight));
  EXPECT_TRUE(p.requires_grad());
  const Tensor held = vit->blocks[1]->mlp->fc1->weight;  // what an optimiser holds
  const float* before = held.data();

  Generator g(11);
  const Tensor value = randn(p.shape(), g);
  m->set_parameter(name, value);
  EXPECT_EQ(held.data(), before) << "set_parameter must copy into the existing storage";
  EXPECT_EQ(held.to_vector(), value.to_vector());
  EXPECT_EQ(m->parameter(name).to_vector(), value.to_vector());
  EXPECT_FALSE(held.same_storage(value));  // a copy, not the caller's tensor

  // Round trip through named_parameters: read every parameter, write them into a second
  // model, and the two agree value for value.
  auto other = tiny_model({}, 99);
  ASSERT_NE(other->parameter("pos_embed").to_vector(), m->parameter("pos_embed").to_vector());
  for (const auto& [n, t] : m->named_parameters()) other->set_parameter(n, t);
  for (const auto& [n, t] : m->named_parameters()) EXPECT_EQ(other->parameter(n).to_vector(), t.to_vector()) << n;

  // A forward pass uses what was set: zeroing the head makes every score its bias.
  m->eval();
  m->set_parameter("head.weight", zeros(m->parameter("head.weight").shape()));
  m->set_parameter("head.bias", from_vector({10}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  NoGradGuard no_grad;
  const HeadOutput out = m->forward(randn({2, 1, 28, 28}, g));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t k = 0; k < 10; ++k) EXPECT_FLOAT_EQ(out.scores.at({i, k}), static_cast<float>(k));
}

TEST(NamedParams, UnknownNameNamesItAndTheClosestValidOne) {
  auto m = tiny_model();
  std::string e = error_of([&] { (void)m->parameter("blocks.0.attn.qkv.weigth"); });
  EXPECT_TRUE(has(e, "'blocks.0.attn.qkv.weigth'")) << e;
  EXPECT_TRUE(has(e, "did you mean 'blocks.0.attn.qkv.weight'")) << e;
  e = error_of([&] { m->set_parameter("blocks.1.norm2.wieght", zeros({32})); });
  EXPECT_TRUE(has(e, "did you mean 'blocks.1.norm2.weight'")) << e;
  // Nothing close: no suggestion, but the message still names what was asked for.
  e = error_of([&] { (void)m->parameter("zzzzzzzzzzzzzzzzzzzzzzzz"); });
  EXPECT_TRUE(has(e, "unknown parameter 'zzzzzzzzzzzzzzzzzzzzzzzz'")) << e;
  EXPECT_FALSE(has(e, "did you mean")) << e;
  // A child's name alone is not a parameter.
  EXPECT_FALSE(error_of([&] { (void)m->parameter("blocks.0"); }).empty());
  EXPECT_FALSE(error_of([&] { (void)m->parameter(""); }).empty());
}

TEST(NamedParams, BuffersAreListedButAreNotParameters) {
  auto m = tiny_model({"model.head.type=ebv"});
  const nn::NamedTensors bufs = m->buffers();
  ASSERT_EQ(bufs.size(), 1u);
  EXPECT_EQ(bufs[0].first, "head.basis");
  for (const auto& [n, t] : m->named_parameters()) EXPECT_NE(n, "head.basis");
  const std::string e = error_of([&] { (void)m->parameter("head.basis"); });
  EXPECT_TRUE(has(e, "'head.basis'") && has(e, "buffer")) << e;
  // The buffer is part of the state, so load_state restores it.
  EXPECT_EQ(m->state().back().first, "head.basis");
}

TEST(NamedParams, ShapeMismatchNamesTheParameterAndBothShapes) {
  auto m = tiny_model();
  const std::vector<float> before = m->parameter("norm.weight").to_vector();
  const std::string e = error_of([&] { m->set_parameter("norm.weight", zeros({31})); });
  EXPECT_TRUE(has(e, "'norm.weight'")) << e;
  EXPECT_TRUE(has(e, "[32]")) << e;
  EXPECT_TRUE(has(e, "[31]")) << e;
  EXPECT_EQ(m->parameter("norm.weight").to_vector(), before);
  EXPECT_FALSE(error_of([&] { m->set_parameter("norm.weight", Tensor()); }).empty());
}

TEST(NamedParams, StrictLoadListsMissingAndUnexpectedNames) {
  auto a = tiny_model(), b = tiny_model({}, 99);
  nn::NamedTensors st = b->state();
  std::erase_if(st, [](const auto& p) { return p.first == "blocks.0.norm1.bias" || p.first == "head.weight"; });
  st.emplace_back("extra.weight", zeros({3}));
  const std::vector<float> before = a->parameter("pos_embed").to_vector();
  for (auto load : {+[](nn::Module& m, const nn::NamedTensors& s) { m.load_state(s); },
                    +[](nn::Module& m, const nn::NamedTensors& s) { (void)m.load_state(s, true); }}) {
    const std::string e = error_of([&] { load(*a, st); });
    EXPECT_TRUE(has(e, "2 missing (blocks.0.norm1.bias, head.weight)")) << e;
    EXPECT_TRUE(has(e, "1 unexpected (extra.weight)")) << e;
    // Nothing was copied: a failed load leaves the model as it was.
    EXPECT_EQ(a->parameter("pos_embed").to_vector(), before);
  }
  // A complete state loads under strict, and the report says so.
  const nn::LoadReport full = a->load_state(b->state(), true);
  EXPECT_TRUE(full.complete());
  EXPECT_EQ(full.loaded.size(), b->state().size());
  EXPECT_EQ(full.summary(), "complete");
  EXPECT_EQ(a->parameter("pos_embed").to_vector(), b->parameter("pos_embed").to_vector());
}

TEST(NamedParams, NonStrictLoadCopiesTheIntersectionAndReports) {
  auto a = tiny_model(), b = tiny_model({}, 99);
  const std::vector<float> kept = a->parameter("head.weight").to_vector();
  nn::NamedTensors st = b->state();
  std::erase_if(st, [](const auto& p) { return p.first == "head.weight"; });
  st.emplace_back("extra.weight", zeros({3}));
  st.emplace_back("another", zeros({1}));
  const nn::LoadReport r = a->load_state(st, false);
  EXPECT_FALSE(r.complete());
  EXPECT_EQ(r.missing, std::vector<std::string>{"head.weight"});
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra.weight", "another"}));
  EXPECT_EQ(r.loaded.size(), a->state().size() - 1);
  EXPECT_EQ(r.summary(), "1 missing (head.weight); 2 unexpected (extra.weight, another)");
  EXPECT_EQ(a->parameter("head.weight").to_vector(), kept);  // missing: untouched
  for (const auto& n : r.loaded) EXPECT_EQ(a->parameter(n).to_vector(), b->parameter(n).to_vector()) << n;

  // A shape mismatch is an error even when not strict, and nothing is copied.
  auto c = tiny_model({}, 5);
  const std::vector<float> pos = c->parameter("pos_embed").to_vector();
  nn::NamedTensors bad = b->state();
  for (auto& [n, t] : bad)
    if (n == "blocks.1.attn.proj.weight") t = zeros({32, 31});
  const std::string e = error_of([&] { (void)c->load_state(bad, false); });
  EXPECT_TRUE(has(e, "'blocks.1.attn.proj.weight'") && has(e, "[32, 31]") && has(e, "[32, 32]")) << e;
  EXPECT_EQ(c->parameter("pos_embed").to_vector(), pos);

  // A sub-module loads its share of a model's state: the names under its prefix.
  auto d = tiny_model({}, 7);
  const nn::LoadReport hr = d->head->load_state(with_prefix(b->state(), "head."), true);
  EXPECT_TRUE(hr.complete());
  EXPECT_EQ(d->parameter("head.weight").to_vector(), b->parameter("head.weight").to_vector());
  EXPECT_NE(d->parameter("pos_embed").to_vector(), b->parameter("pos_embed").to_vector());

  // Long lists are cut in the summary, with the count of the rest.
  nn::LoadReport many;
  for (int i = 0; i < 13; ++i) many.missing.push_back("t" + std::to_string(i));
  EXPECT_EQ(many.summary(), "13 missing (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, ... (3 more))");
}

using NamedParamsRun = test::RunTest;

TEST_F(NamedParamsRun, LoadsTheWeightsOfARealCheckpoint) {
  const Config cfg = config("run", {"train.epochs=1"});
  const TrainResult tr = train(cfg, test::quiet());
  ASSERT_EQ(tr.status, TrainStatus::Finished);
  const std::string path = tr.run_dir + "/last.ckpt";
  ASSERT_TRUE(fs::exists(path));

  // An embedding program builds the model itself and loads the file's weights into it.
  auto model = build_model(cfg, 10, 1000);
  const Checkpoint ck = load_checkpoint(path);
  const nn::NamedTensors saved = with_prefix(ck.tensors, "model.");
  ASSERT_FALSE(saved.empty());
  ASSERT_NE(model->parameter("blocks.0.attn.qkv.weight").to_vector(),
            std::find_if(saved.begin(), saved.end(), [](const auto& p) {
              return p.first == "blocks.0.attn.qkv.weight";
            })->second.to_vector())
      << "training should have moved the weights away from the initialisation";
  const nn::LoadReport r = model->load_state(load_model_state(path), false);
  EXPECT_TRUE(r.complete()) << r.summary();
  EXPECT_EQ(r.loaded.size(), model->state().size());
  for (const auto& [n, t] : saved) EXPECT_EQ(model->parameter(n).to_vector(), t.to_vector()) << n;
  // The same weights as the library's own loader.
  const LoadedModel lm = load_model(path);
  for (const auto& [n, t] : lm.model->named_parameters()) EXPECT_EQ(model->parameter(n).to_vector(), t.to_vector()) << n;

  // The file's raw names carry the "model." / "optim." prefixes: nothing matches them.
  auto fresh = build_model(cfg, 10, 1000);
  const nn::LoadReport raw = fresh->load_state(ck.tensors, false);
  EXPECT_TRUE(raw.loaded.empty());
  EXPECT_EQ(raw.missing.size(), fresh->state().size());
  EXPECT_EQ(raw.unexpected.size(), ck.tensors.size());

  // No weight EMA in this run: asking for it names the file.
  const std::string e = error_of([&] { (void)load_model_state(path, true); });
  EXPECT_TRUE(has(e, path) && has(e, "EMA")) << e;
}

// softlab.hpp is the whole public API: it includes every header under include/softlab/, and
// no public header includes anything of softlab's but other public headers (an installed
// program has no src/).
TEST(PublicHeaders, UmbrellaIncludesEveryHeaderAndNoneIncludesAPrivateOne) {
  const fs::path inc = fs::path(SOFTLAB_SOURCE_DIR) / "include";
  auto read = [](const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const std::string umbrella = read(inc / "softlab/softlab.hpp");
  const std::regex quoted("#include\\s+\"([^\"]+)\"");
  std::set<std::string> included;
  for (std::sregex_iterator it(umbrella.begin(), umbrella.end(), quoted), end; it != end; ++it)
    included.insert((*it)[1].str());
  int headers = 0;
  for (const auto& entry : fs::recursive_directory_iterator(inc / "softlab")) {
    if (entry.path().extension() != ".hpp") continue;
    const std::string rel = entry.path().lexically_relative(inc).generic_string();
    ++headers;
    if (rel != "softlab/softlab.hpp") {
      EXPECT_TRUE(included.count(rel)) << "softlab.hpp does not include " << rel;
    }
    const std::string text = read(entry.path());
    for (std::sregex_iterator it(text.begin(), text.end(), quoted), end; it != end; ++it) {
      const std::string target = (*it)[1].str();
      EXPECT_EQ(target.rfind("softlab/", 0), 0u) << rel << " includes \"" << target << "\", which is not public";
      EXPECT_TRUE(fs::exists(inc / target)) << rel << " includes \"" << target << "\", which is not under include/";
    }
  }
  EXPECT_GE(headers, 20);
}
