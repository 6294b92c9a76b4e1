// The sequence side: RoPE's properties, the synthetic tasks' formats (each checked against
// what the task promises, from the generated tokens alone), the sequence model (causality,
// rows the head scores, positions), per-length evaluation and the density metrics, and
// end-to-end runs that must learn.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

#include "softlab/attention.hpp"
#include "softlab/autograd.hpp"
#include "softlab/config.hpp"
#include "softlab/error.hpp"
#include "softlab/ops.hpp"
#include "softlab/train.hpp"
#include "train_fixtures.hpp"

using namespace softlab;
namespace fs = std::filesystem;

namespace {

SyntheticOptions recall(int64_t keys = 16, int64_t values = 4) {
  SyntheticOptions o;
  o.task = "recall";
  o.keys = keys;
  o.values = values;
  return o;
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---- RoPE ------------------------------------------------------------------------------

TEST(Rope, IsARotationThatDependsOnRelativePositionOnly) {
  Generator g(7);
  const int64_t N = 9, Dh = 8;
  Tensor q = randn({1, 1, N, Dh}, g), k = randn({1, 1, N, Dh}, g);
  // The same vector at every position, so that only the rotation differs between positions.
  for (int64_t n = 1; n < N; ++n)
    for (int64_t j = 0; j < Dh; ++j) {
      q.mutable_data()[n * Dh + j] = q.data()[j];
      k.mutable_data()[n * Dh + j] = k.data()[j];
    }
  const Tensor rq = rope(q, 100.0f), rk = rope(k, 100.0f);
  auto dot = [&](int64_t a, int64_t b) {
    double s = 0.0;
    for (int64_t j = 0; j < Dh; ++j) s += double{rq.data()[a * Dh + j]} * rk.data()[b * Dh + j];
    return s;
  };
  for (int64_t n = 0; n < N; ++n) {
    double nq = 0.0, nr = 0.0;
    for (int64_t j = 0; j < Dh; ++j) {
      nq += double{q.data()[n * Dh + j]} * q.data()[n * Dh + j];
      nr += double{rq.data()[n * Dh + j]} * rq.data()[n * Dh + j];
    }
    EXPECT_NEAR(nr, nq, 1e-4 * nq) << "rotation must keep the norm at position " << n;
  }
  for (int64_t j = 0; j < Dh; ++j) EXPECT_FLOAT_EQ(rq.data()[j], q.data()[j]) << "position 0 does not turn";
  // q_n . k_m depends on n - m only.
  EXPECT_NEAR(dot(3, 1), dot(7, 5), 1e-4);
  EXPECT_NEAR(dot(2, 6), dot(4, 8), 1e-4);
  EXPECT_GT(std::abs(dot(3, 1) - dot(3, 2)), 1e-3) << "different offsets must differ";
}

TEST(Rope, RejectsOddHeadSize) {
  Generator g(1);
  EXPECT_NE(error_of([&] { rope(randn({2, 3, 5}, g)); }).find("even"), std::string::npos);
}

// ---- synthetic tasks -------------------------------------------------------------------

TEST(SyntheticRecall, PairsThenQueriesWhoseTargetsAreThePairedValues) {
  const SyntheticOptions o = recall(16, 4);
  const Dataset d = make_synthetic_split(o, 20, 200, 3, 0);
  ASSERT_EQ(d.size, 200);
  EXPECT_EQ(d.seq_len, 20);
  EXPECT_EQ(d.vocab, 20);
  EXPECT_EQ(d.num_classes, 4);
  const int64_t P = 20 / 4;
  std::set<int32_t> values_seen;
  for (int64_t s = 0; s < d.size; ++s) {
    const int32_t* t = d.tokens.data() + s * 20;
    const int32_t* y = d.targets.data() + s * 20;
    std::map<int32_t, int32_t> value_of;
    for (int64_t i = 0; i < P; ++i) {
      ASSERT_LT(t[2 * i], 16) << "keys are tokens [0, K)";
      ASSERT_GE(t[2 * i + 1], 16) << "values are tokens [K, K+V)";
      ASSERT_TRUE(value_of.emplace(t[2 * i], t[2 * i + 1] - 16).second) << "keys within a sequence are distinct";
      EXPECT_EQ(y[2 * i], -1);
      EXPECT_EQ(y[2 * i + 1], -1);
    }
    for (int64_t q = 2 * P; q < 20; ++q) {
      ASSERT_TRUE(value_of.count(t[q])) << "a query asks for a key of this sequence";
      EXPECT_EQ(y[q], value_of[t[q]]);
      values_seen.insert(y[q]);
    }
  }
  EXPECT_EQ(values_seen.size(), 4u);
  // Deterministic from the seed; another seed or split gives other data.
  EXPECT_EQ(make_synthetic_split(o, 20, 200, 3, 0).tokens, d.tokens);
  EXPECT_NE(make_synthetic_split(o, 20, 200, 4, 0).tokens, d.tokens);
  EXPECT_NE(make_synthetic_split(o, 20, 200, 3, 1).tokens, d.tokens);
}

TEST(SyntheticRecall, LengthsTheKeysCannotFillAreErrorsNamingTheKeys) {
  SyntheticOptions o = recall(16, 4);
  o.eval_lengths = {128};  // needs 32 distinct keys
  const std::string e = error_of([&] { make_synthetic(o, 0); });
  EXPECT_NE(e.find("data.keys"), std::string::npos) << e;
  EXPECT_NE(e.find("128"), std::string::npos) << e;
  o.eval_lengths = {2};
  EXPECT_NE(error_of([&] { make_synthetic(o, 0); }).find("at least 4"), std::string::npos);
}

TEST(SyntheticRecall, SplitHoldsTestSetsPerEvaluationLength) {
  SyntheticOptions o = recall(32, 4);
  o.train_length = 16;
  o.train_size = 50;
  o.test_size = 20;
  o.eval_lengths = {16, 32, 64};
  const DataSplit d = make_synthetic(o, 5);
  EXPECT_EQ(d.train.size, 50);
  EXPECT_EQ(d.test.size, 20);
  EXPECT_EQ(d.test.seq_len, 16);
  ASSERT_EQ(d.test_at_length.size(), 2u) << "the training length is the main test set, not repeated";
  EXPECT_EQ(d.test_at_length[0].first, 32);
  EXPECT_EQ(d.test_at_length[1].second.seq_len, 64);
  EXPECT_NE(d.train.tokens, std::vector<int32_t>(d.train.tokens.size(), 0));
}

TEST(SyntheticBins, LabelsAreSamplesOfTheStoredDensity) {
  SyntheticOptions o;
  o.task = "bins";
  o.bins = 10;
  const Dataset d = make_synthetic_split(o, 6, 4000, 1, 0);
  ASSERT_EQ(d.target_density.size(), static_cast<size_t>(4000 * 10));
  EXPECT_TRUE(d.class_position.size() == 10u);
  // Each density sums to 1, only the last position has a target, and the empirical label
  // frequencies match the mean density (a sampling check with a 4000-sample tolerance).
  std::vector<double> mean(10, 0.0), freq(10, 0.0);
  for (int64_t s = 0; s < d.size; ++s) {
    double sum = 0.0;
    for (int64_t k = 0; k < 10; ++k) {
      sum += d.target_density[static_cast<size_t>(s * 10 + k)];
      mean[static_cast<size_t>(k)] += d.target_density[static_cast<size_t>(s * 10 + k)] / 4000.0;
    }
    ASSERT_NEAR(sum, 1.0, 1e-5);
    for (int64_t t = 0; t + 1 < 6; ++t) ASSERT_EQ(d.targets[static_cast<size_t>(s * 6 + t)], -1);
    const int32_t y = d.targets[static_cast<size_t>(s * 6 + 5)];
    ASSERT_TRUE(y >= 0 && y < 10);
    freq[static_cast<size_t>(y)] += 1.0 / 4000.0;
  }
  for (int k = 0; k < 10; ++k) EXPECT_NEAR(freq[static_cast<size_t>(k)], mean[static_cast<size_t>(k)], 0.025) << k;
  // The two conditioning tokens determine the density: equal tokens, equal densities.
  for (int64_t s = 1; s < d.size; ++s)
    if (d.tokens[static_cast<size_t>(s * 6)] == d.tokens[0] && d.tokens[static_cast<size_t>(s * 6 + 1)] == d.tokens[1]) {
      for (int64_t k = 0; k < 10; ++k)
        EXPECT_EQ(d.target_density[static_cast<size_t>(s * 10 + k)], d.target_density[static_cast<size_t>(k)]);
      break;
    }
}

TEST(SyntheticBins, PermutedLabelsPermuteTheDensityConsistently) {
  SyntheticOptions o;
  o.task = "bins";
  o.bins = 12;
  const Dataset plain = make_synthetic_split(o, 4, 300, 9, 1);
  o.permute_labels = true;
  const Dataset perm = make_synthetic_split(o, 4, 300, 9, 1);
  EXPECT_EQ(plain.tokens, perm.tokens);
  // class c of the permuted set is bin class_position[c] of the plain one.
  std::vector<int32_t> sorted = perm.class_position;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int32_t> iota(12);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_NE(perm.class_position, iota);
  for (int64_t s = 0; s < 300; ++s) {
    const int32_t y = perm.targets[static_cast<size_t>(s * 4 + 3)];
    EXPECT_EQ(perm.class_position[static_cast<size_t>(y)], plain.targets[static_cast<size_t>(s * 4 + 3)]);
    for (int64_t c = 0; c < 12; ++c)
      EXPECT_EQ(perm.target_density[static_cast<size_t>(s * 12 + c)],
                plain.target_density[static_cast<size_t>(s * 12 + perm.class_position[static_cast<size_t>(c)])]);
  }
  // The same permutation for train and test (it belongs to the task, not the split).
  EXPECT_EQ(make_synthetic_split(o, 4, 10, 9, 0).class_position, perm.class_position);
}

TEST(SyntheticModadd, TrainAndTestPartitionAllPairs) {
  SyntheticOptions o;
  o.task = "modadd";
  o.modulus = 11;
  o.train_fraction = 0.3;
  const DataSplit d = make_synthetic(o, 2);
  EXPECT_EQ(d.train.size + d.test.size, 121);
  EXPECT_EQ(d.train.size, 36);
  std::set<std::pair<int, int>> pairs;
  for (const Dataset* ds : {&d.train, &d.test})
    for (int64_t s = 0; s < ds->size; ++s) {
      const int32_t* t = ds->tokens.data() + 3 * s;
      EXPECT_EQ(t[2], 11) << "the '=' token";
      EXPECT_EQ(ds->targets[static_cast<size_t>(3 * s + 2)], (t[0] + t[1]) % 11);
      EXPECT_EQ(ds->targets[static_cast<size_t>(3 * s)], -1);
      EXPECT_TRUE(pairs.insert({t[0], t[1]}).second) << "a pair in both splits";
    }
  EXPECT_EQ(pairs.size(), 121u);
  o.eval_lengths = {6};
  EXPECT_NE(error_of([&] { make_synthetic(o, 2); }).find("length 3"), std::string::npos);
}

// ---- the sequence model ----------------------------------------------------------------

Config seq_config(const std::string& attention, bool causal, const std::string& positions = "rope") {
  json j = {{"data", {{"dataset", "synthetic:recall"}, {"train_length", 12}, {"keys", 8}, {"values", 4}}},
            {"model", {{"type", "seq"}, {"dim", 16}, {"depth", 2}, {"heads", 2}, {"causal", causal},
                       {"positions", positions}, {"attention", {{"type", attention}}}}}};
  return parse_config(resolve_config(j));
}

Tensor token_batch(int64_t B, int64_t N, int64_t vocab, uint64_t seed) {
  Generator g(seed);
  Tensor t = empty({B, N});
  for (int64_t i = 0; i < B * N; ++i) t.mutable_data()[i] = static_cast<float>(g.below(static_cast<uint64_t>(vocab)));
  return t;
}

// Changing token j must not change any output before j, for every registered attention
// module with a causal form that a sequence model can use (caps.causal without needs_grid).
TEST(SeqModel, CausalModelsDoNotSeeTheFuture) {
  int checked = 0;
  for (const AttentionEntry& entry : attention_registry().entries()) {
    if (!entry.caps.causal || entry.caps.needs_grid) continue;
    ++checked;
    const std::string& attn = entry.name;
    SCOPED_TRACE(attn);
    const Config cfg = seq_config(attn, true);
    auto m = build_model(cfg, 4, 100);
    auto* seq = dynamic_cast<nn::SeqModel*>(m.get());
    ASSERT_TRUE(seq);
    m->eval();
    NoGradGuard ng;
    Tensor a = token_batch(2, 12, 12, 1), b = a.clone();
    b.mutable_data()[7] = static_cast<float>((static_cast<int>(a.data()[7]) + 1) % 12);  // sequence 0, position 7
    const Tensor fa = seq->features(a), fb = seq->features(b);
    const int64_t D = 16;
    double before = 0.0, after = 0.0;
    for (int64_t n = 0; n < 12; ++n)
      for (int64_t j = 0; j < D; ++j) {
        const double d = std::abs(fa.data()[n * D + j] - fb.data()[n * D + j]);
        (n < 7 ? before : after) += d;
      }
    EXPECT_EQ(before, 0.0);
    EXPECT_GT(after, 1e-4) << "the change must reach position 7 and later";
  }
  EXPECT_GE(checked, 2) << "the registry lists fewer causal modules than the built-in softmax and linear";
  // Bidirectional: an early position sees a later change.
  const Config cfg = seq_config("softmax", false);
  auto m = build_model(cfg, 4, 100);
  NoGradGuard ng;
  Tensor a = token_batch(1, 12, 12, 1), b = a.clone();
  b.mutable_data()[7] = static_cast<float>((static_cast<int>(a.data()[7]) + 1) % 12);
  auto* seq = dynamic_cast<nn::SeqModel*>(m.get());
  EXPECT_NE(seq->features(a).data()[0], seq->features(b).data()[0]);
}

// ---- padded batches ------------------------------------------------------------------------

// Variable-length recall: lengths in [min_length, n], each sequence a well-formed recall
// sequence of its length followed by padding tokens with no target.
TEST(SyntheticRecall, VariableLengthsArePaddedOnTheRight) {
  SyntheticOptions o = recall(16, 4);
  o.train_length = 32;
  o.min_length = 8;
  o.train_size = 400;
  o.test_size = 100;
  o.eval_lengths = {48};
  const int32_t pad = synthetic_pad_token(o);
  EXPECT_EQ(pad, 20);
  EXPECT_EQ(synthetic_vocab(o), 21);
  const DataSplit d = make_synthetic(o, 3);
  std::set<int64_t> seen;
  for (const Dataset* ds : {&d.train, &d.test}) {
    ASSERT_EQ(ds->seq_len, 32);
    EXPECT_EQ(ds->vocab, 21);
    for (int64_t s = 0; s < ds->size; ++s) {
      const int32_t* tok = ds->tokens.data() + s * 32;
      const int32_t* tgt = ds->targets.data() + s * 32;
      int64_t len = 0;
      while (len < 32 && tok[len] != pad) ++len;
      ASSERT_GE(len, 8);
      seen.insert(len);
      for (int64_t i = len; i < 32; ++i) {
        ASSERT_EQ(tok[i], pad) << "padding must come last";
        ASSERT_EQ(tgt[i], -1) << "padding has no target";
      }
      // The valid part is a recall sequence of length len: len/4 pairs, then queries of
      // those keys whose targets are the paired values.
      const int64_t P = len / 4;
      std::map<int32_t, int32_t> value_of;
      for (int64_t i = 0; i < P; ++i) value_of[tok[2 * i]] = tok[2 * i + 1] - 16;
      for (int64_t i = 2 * P; i < len; ++i) ASSERT_EQ(tgt[i], value_of.at(tok[i]));
    }
  }
  EXPECT_GE(seen.size(), 20u) << "lengths should spread over [8, 32]";
  ASSERT_EQ(d.test_at_length.size(), 1u);  // other evaluation lengths stay fixed-length
  for (int32_t t : d.test_at_length[0].second.tokens) ASSERT_NE(t, pad);
  // The fixed-length mode draws exactly what it did before the mode existed.
  SyntheticOptions fixed = recall(16, 4);
  fixed.train_length = 32;
  fixed.train_size = 50;
  EXPECT_EQ(synthetic_pad_token(fixed), -1);
  EXPECT_EQ(synthetic_vocab(fixed), 20);
  o.min_length = 0;
  o.train_size = 50;
  EXPECT_EQ(make_synthetic(fixed, 3).train.tokens, make_synthetic(o, 3).train.tokens);
}

// A padded batch gives, at every valid position, the features of each sequence run alone,
// and the same parameter gradients as the sequences one by one: for every module that
// takes padded batches, bidirectional and (with a causal form) causal, with RoPE and with
// learned positions.
TEST(SeqModel, PaddedBatchMatchesTheSequencesOneByOne) {
  int checked = 0;
  for (const AttentionEntry& entry : attention_registry().entries()) {
    if (!entry.caps.padding) continue;
    for (bool causal : {false, true}) {
      if (causal && !entry.caps.causal) continue;
      for (const char* positions : {"rope", "learned"}) {
        SCOPED_TRACE(entry.name + (causal ? " causal " : " bidirectional ") + positions);
        ++checked;
        json j = {{"data", {{"dataset", "synthetic:recall"}, {"train_length", 12}, {"keys", 8}, {"values", 4},
                            {"min_length", 4}}},
                  {"model", {{"type", "seq"}, {"dim", 16}, {"depth", 2}, {"heads", 2}, {"causal", causal},
                             {"positions", positions}, {"attention", {{"type", entry.name}}}}}};
        const Config cfg = parse_config(resolve_config(j));
        auto m = build_model(cfg, 4, 100);
        auto* seq = dynamic_cast<nn::SeqModel*>(m.get());
        ASSERT_TRUE(seq);
        m->eval();
        const int32_t pad = synthetic_pad_token(cfg.data.synthetic);
        const std::vector<int64_t> lens = {12, 7, 4, 9};
        const int64_t B = 4, N = 12, D = 16;
        Tensor tokens = token_batch(B, N, 12, 5 + static_cast<uint64_t>(checked));
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = lens[static_cast<size_t>(b)]; i < N; ++i) tokens.mutable_data()[b * N + i] = pad;
        // Loss weights: random at valid positions, zero on the padding.
        Generator g(11);
        Tensor w = uniform({B, N, D}, g, -1.0f, 1.0f);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = lens[static_cast<size_t>(b)] * D; i < N * D; ++i) w.mutable_data()[b * N * D + i] = 0.0f;
        const auto params = m->parameters();
        for (auto p : params) p.tensor.zero_grad();
        const Tensor f = seq->features(tokens);
        sum(mul(f, w)).backward();
        std::vector<std::vector<float>> padded_grads;
        for (const auto& p : params) padded_grads.push_back(p.tensor.grad().defined() ? p.tensor.grad().to_vector()
                                                                                      : std::vector<float>());
        for (auto p : params) p.tensor.zero_grad();
        for (int64_t b = 0; b < B; ++b) {
          const int64_t len = lens[static_cast<size_t>(b)];
          Tensor tb = reshape(slice(slice(tokens, 0, b, b + 1), 1, 0, len), {1, len});
          const Tensor fb = seq->features(tb);
          const Tensor wb = reshape(slice(slice(w, 0, b, b + 1), 1, 0, len), {1, len, D});
          sum(mul(fb, wb)).backward();  // accumulates over the sequences
          const std::vector<float> alone = fb.to_vector(), batch = f.to_vector();
          for (int64_t i = 0; i < len * D; ++i)
            ASSERT_NEAR(batch[static_cast<size_t>(b * N * D + i)], alone[static_cast<size_t>(i)],
                        1e-5 + 1e-4 * std::fabs(alone[static_cast<size_t>(i)]))
                << "sequence " << b << " position " << i / D;
        }
        for (size_t p = 0; p < params.size(); ++p) {
          const Tensor gr = params[p].tensor.grad();
          const std::vector<float> one = gr.defined() ? gr.to_vector() : std::vector<float>();
          ASSERT_EQ(one.size(), padded_grads[p].size()) << params[p].name;
          for (size_t i = 0; i < one.size(); ++i)
            ASSERT_NEAR(padded_grads[p][i], one[i], 1e-5 + 1e-4 * std::fabs(one[i])) << params[p].name << "[" << i << "]";
        }
      }
    }
  }
  EXPECT_GE(checked, 20) << "fewer modules take padded batches than the built-in ones";
}

TEST(SeqModel, PaddingMustComeLast) {
  json j = {{"data", {{"dataset", "synthetic:recall"}, {"train_length", 12}, {"keys", 8}, {"values", 4},
                      {"min_length", 4}}},
            {"model", {{"type", "seq"}, {"dim", 16}, {"depth", 1}, {"heads", 2}}}};
  auto m = build_model(parse_config(resolve_config(j)), 4, 100);
  auto* seq = dynamic_cast<nn::SeqModel*>(m.get());
  NoGradGuard ng;
  Tensor t = token_batch(1, 12, 12, 2);
  t.mutable_data()[5] = 12.0f;  // padding in the middle
  EXPECT_NE(error_of([&] { seq->features(t); }).find("padding must come last"), std::string::npos);
  for (int i = 0; i < 12; ++i) t.mutable_data()[i] = 12.0f;
  EXPECT_NE(error_of([&] { seq->features(t); }).find("all padding"), std::string::npos);
}

TEST(SeqModel, TheHeadScoresEveryTargetOrTheLastPosition) {
  Config cfg = seq_config("softmax", true);
  auto m = build_model(cfg, 4, 100);
  const Tensor x = token_batch(2, 5, 12, 3);
  const std::vector<int32_t> labels = {-1, 2, -1, 0, 1, 3, -1, -1, -1, -1};
  HeadOutput o = m->forward(x, labels);
  EXPECT_EQ(o.scores.shape(), Shape({4, 4}));
  EXPECT_EQ(m->scored_labels(x, labels), (std::vector<int32_t>{2, 0, 1, 3}));
  // The loss is the mean over the scored rows: it equals the cross-entropy of those rows.
  {
    NoGradGuard ng;
    EXPECT_NEAR(o.loss.item(), cross_entropy(o.scores, std::vector<int32_t>{2, 0, 1, 3}).item(), 1e-6);
  }
  cfg.model.target = "last";
  auto last = build_model(cfg, 4, 100);
  EXPECT_EQ(last->scored_labels(x, labels), (std::vector<int32_t>{1}));
  EXPECT_EQ(last->forward(x, labels).scores.shape(), Shape({1, 4}));
  // Without labels (prediction): one row per sequence, its last position.
  EXPECT_EQ(m->forward(x).scores.shape(), Shape({2, 4}));
  // Bad input is named.
  Tensor bad = x.clone();
  bad.mutable_data()[3] = 99.0f;
  EXPECT_NE(error_of([&] { m->forward(bad, labels); }).find("not an id in [0, 12)"), std::string::npos);
}

TEST(SeqModel, PositionsAndCausalityConfigErrors) {
  // A learned table as long as the longest evaluation length, and no longer.
  Config cfg = seq_config("softmax", true, "learned");
  cfg.data.synthetic.eval_lengths = {20};
  auto m = build_model(cfg, 4, 100);
  EXPECT_EQ(m->forward(token_batch(1, 20, 12, 1)).scores.shape(), Shape({1, 4}));
  EXPECT_NE(error_of([&] { m->forward(token_batch(1, 21, 12, 1)); }).find("learned position table"), std::string::npos);
  // SOFT has no causal form (and needs an image grid): both are named.
  const std::string e = error_of([&] { build_model(seq_config("soft", true), 4, 100); });
  EXPECT_NE(e.find("model.causal"), std::string::npos) << e;
  // No positions at all still runs (a causal model can infer order from the mask).
  auto none = build_model(seq_config("softmax", true, "none"), 4, 100);
  EXPECT_EQ(none->forward(token_batch(2, 12, 12, 1)).scores.shape(), Shape({2, 4}));
  // 'seq' needs a synthetic task, 'vit' images.
  json j = {{"data", {{"dataset", "fashion-mnist"}}}, {"model", {{"type", "seq"}}}};
  EXPECT_NE(error_of([&] { resolve_config(j); }).find("synthetic"), std::string::npos);
}

// ---- training end to end -----------------------------------------------------------------

class SeqTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    root = test::temp_dir(std::string("seq_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { fs::remove_all(root); }
  json run(json cfg) {
    cfg["output"] = {{"dir", root + "/run"}};
    TrainOptions to;
    to.quiet = true;
    return train(parse_config(resolve_config(cfg)), to).summary;
  }
  std::string root;
};

// Recall with 3 pairs and 2 queries at length 8: chance is 1/4; a 2-layer model learns it.
TEST_F(SeqTrain, RecallLearnsAndReportsEveryLength) {
  const json s = run({{"data", {{"dataset", "synthetic:recall"}, {"train_length", 8}, {"eval_lengths", {16}},
                                {"train_size", 4000}, {"test_size", 200}, {"keys", 8}, {"values", 4}}},
                      {"model", {{"type", "seq"}, {"dim", 32}, {"depth", 2}, {"heads", 2}}},
                      {"train", {{"epochs", 6}, {"batch_size", 32}, {"threads", 1},
                                 {"optimizer", {{"lr", 0.003}}}}}});
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.6) << s.dump(2);
  ASSERT_TRUE(s.contains("test_by_length")) << s.dump(2);
  EXPECT_DOUBLE_EQ(s["test_by_length"]["8"]["accuracy"].get<double>(), s["test_accuracy"].get<double>());
  EXPECT_TRUE(s["test_by_length"].contains("16"));
  EXPECT_EQ(s["tokens"].get<int64_t>(), 8);
  EXPECT_GT(s["peak_rss_mb"].get<double>(), 1.0);
  // The metrics log has the lengths for every evaluation.
  std::ifstream in(root + "/run/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    EXPECT_TRUE(json::parse(line).contains("by_length"));
  }
  EXPECT_EQ(lines, 6);
  // softlab eval regenerates the same test set from the config and seed.
  LoadedModel lm = load_model(root + "/run/last.ckpt");
  const DataSplit d = make_synthetic(synthetic_options(lm.config), lm.config.seed);
  EXPECT_DOUBLE_EQ(evaluate(*lm.model, d.test, lm.norm, 64).accuracy, s["test_accuracy"].get<double>());
  // train.max_eval_batches: the first batches only (64 sequences of 4 queries each).
  EXPECT_EQ(evaluate(*lm.model, d.test, lm.norm, 64, 1).count, 64 * 4);
  EXPECT_EQ(evaluate(*lm.model, d.test, lm.norm, 64).count, 200 * 4);
}

// Variable-length recall, bidirectional (each padded sequence runs on its own prefix): it
// learns, and the run's evaluation is what a reload evaluates.
TEST_F(SeqTrain, VariableLengthRecallLearns) {
  const json s = run({{"data", {{"dataset", "synthetic:recall"}, {"train_length", 12}, {"min_length", 4},
                                {"train_size", 3000}, {"test_size", 200}, {"keys", 8}, {"values", 4}}},
                      {"model", {{"type", "seq"}, {"dim", 32}, {"depth", 2}, {"heads", 2}, {"causal", false}}},
                      {"train", {{"epochs", 5}, {"batch_size", 32}, {"threads", 1}, {"optimizer", {{"lr", 0.003}}}}}});
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.5) << s.dump(2);  // chance 1/4
  LoadedModel lm = load_model(root + "/run/last.ckpt");
  const DataSplit d = make_synthetic(synthetic_options(lm.config), lm.config.seed);
  EXPECT_DOUBLE_EQ(evaluate(*lm.model, d.test, lm.norm, 64).accuracy, s["test_accuracy"].get<double>());
}

TEST(SeqModel, VariableLengthConfigErrors) {
  auto cfg = [](json data, json model) {
    json j = {{"data", {{"dataset", "synthetic:recall"}, {"train_length", 12}, {"min_length", 4}}},
              {"model", {{"type", "seq"}}}};
    if (data.is_object()) j["data"].update(data);
    if (model.is_object()) j["model"].update(model);
    return j;
  };
  EXPECT_NO_THROW(resolve_config(cfg({}, {})));
  EXPECT_NE(error_of([&] { resolve_config(cfg({{"min_length", 13}}, {})); }).find("data.min_length (13) must be <="),
            std::string::npos);
  EXPECT_NE(error_of([&] { resolve_config(cfg({{"dataset", "synthetic:bins"}}, {})); }).find("synthetic:recall only"),
            std::string::npos);
  EXPECT_NE(error_of([&] { resolve_config(cfg({}, {{"target", "last"}})); }).find("model.target 'last'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { resolve_config(cfg({{"min_length", 2}}, {})); }).find("data.min_length"), std::string::npos);
}

// A whole sequence set as one batch of token ids.
Tensor sequences(const Dataset& d) {
  Tensor t = empty({d.size, d.seq_len});
  for (size_t i = 0; i < d.tokens.size(); ++i) t.mutable_data()[i] = static_cast<float>(d.tokens[i]);
  return t;
}

// The ordered-bin task: density metrics for heads with probabilities, none for the SVM.
TEST_F(SeqTrain, BinsReportDensityMetrics) {
  json cfg = {{"data", {{"dataset", "synthetic:bins"}, {"train_length", 4}, {"train_size", 1000}, {"test_size", 300},
                        {"bins", 10}}},
              {"model", {{"type", "seq"}, {"dim", 16}, {"depth", 1}, {"heads", 2}, {"target", "last"}}},
              {"train", {{"epochs", 3}, {"batch_size", 50}, {"threads", 1}}}};
  for (const std::string head : {"softmax", "fourier"}) {
    cfg["model"]["head"] = {{"type", head}};
    const json s = run(cfg);
    SCOPED_TRACE(head);
    ASSERT_TRUE(s.contains("test_kl")) << s.dump(2);
    // Recompute the metrics here from the checkpoint, the regenerated test set and the
    // head's probabilities, with the definitions written out.
    LoadedModel lm = load_model(root + "/run/last.ckpt");
    const DataSplit d = make_synthetic(synthetic_options(lm.config), lm.config.seed);
    NoGradGuard ng;
    const Tensor probs = lm.model->head->probabilities(lm.model->forward(sequences(d.test)).scores);
    double kl = 0.0, kl_uniform = 0.0, mae = 0.0;
    for (int64_t i = 0; i < d.test.size; ++i) {
      int64_t arg = 0;
      for (int64_t k = 0; k < 10; ++k) {
        const double p = d.test.target_density[static_cast<size_t>(i * 10 + k)], q = probs.data()[i * 10 + k];
        if (p > 0) kl += p * std::log(p / q) / static_cast<double>(d.test.size);
        if (p > 0) kl_uniform += p * std::log(p * 10.0) / static_cast<double>(d.test.size);
        if (q > probs.data()[i * 10 + arg]) arg = k;
      }
      mae += std::abs(static_cast<double>(arg - d.test.targets[static_cast<size_t>(i * 4 + 3)])) / static_cast<double>(d.test.size);
    }
    EXPECT_NEAR(s["test_kl"].get<double>(), kl, 1e-4 * kl);
    EXPECT_NEAR(s["test_bin_mae"].get<double>(), mae, 1e-9);
    EXPECT_LT(kl, kl_uniform) << "the model must beat the uniform density after 3 epochs";
    EXPECT_GT(s["test_tv"].get<double>(), 0.0);
    fs::remove_all(root + "/run");
  }
  cfg["model"]["head"] = {{"type", "svm"}};
  EXPECT_FALSE(run(cfg).contains("test_kl"));
}

}  // namespace
