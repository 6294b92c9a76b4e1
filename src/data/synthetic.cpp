// Synthetic sequence tasks, generated from the seed alone (no files). docs/synthetic.md has
// the formats; in short:
//
//   recall  (multi-query associative recall, as in Zoology's MQAR): a sequence of length n is
//           n/4 pairs "key value" with distinct keys, then n - n/2 query keys drawn from those
//           pairs; at every query position the target is the value paired with that key.
//           Keys are tokens [0, K), values [K, K+V); the classes are the V values. Longer
//           sequences hold more pairs, i.e. more distractors for each query. With
//           min_length, a sequence of the training length is a recall sequence of a length
//           drawn from [min_length, n], right-padded with token K+V (target -1).
//   bins    an ordered, continuous target quantised into C bins over [-1, 1]: tokens are
//           uniform in [0, 32); x = 2 t_0/31 - 1 and w = t_1/31 set a two-component Gaussian
//           mixture over y, the other tokens are distractors; the label (at the last
//           position) is a sample of the binned mixture, whose exact bin probabilities are
//           kept for the KL metric. permute_labels relabels the bins by a fixed permutation.
//   modadd  "a b =" -> (a + b) mod p, all p*p pairs split into train and test (the grokking
//           setting of Power et al. and Prieto et al.); the length is always 3.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "softlab/data.hpp"
#include "softlab/error.hpp"
#include "softlab/random.hpp"

namespace softlab {

namespace {

uint64_t stream_seed(uint64_t seed, uint64_t a, uint64_t b) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ULL ^ (a * 0xbf58476d1ce4e5b9ULL) ^ (b + 0x94d049bb133111ebULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr int64_t kBinTokens = 32;

int64_t default_length(const std::string& task) { return task == "recall" ? 64 : task == "bins" ? 16 : 3; }

Dataset empty_sequences(const std::string& name, int64_t count, int64_t n, int64_t vocab, int classes) {
  Dataset d;
  d.name = name;
  d.size = count;
  d.seq_len = n;
  d.vocab = vocab;
  d.num_classes = classes;
  d.tokens.assign(static_cast<size_t>(count * n), 0);
  d.targets.assign(static_cast<size_t>(count * n), -1);
  return d;
}

void check_length(const SyntheticOptions& o, int64_t n) {
  SOFTLAB_CHECK(o.min_length == 0 || o.task == "recall", "data.min_length: variable lengths are a mode of "
                "synthetic:recall only, not of synthetic:", o.task, "; set it to null");
  SOFTLAB_CHECK(o.min_length == 0 || o.min_length <= synthetic_train_length(o), "data.min_length (", o.min_length,
                ") must be <= the training length (", synthetic_train_length(o), ", data.train_length)");
  if (o.task == "recall") {
    SOFTLAB_CHECK(n >= 4, "data: synthetic:recall needs sequences of at least 4 tokens (a pair and a query), got "
                  "length ", n, " (data.train_length / data.eval_lengths)");
    SOFTLAB_CHECK(n / 4 <= o.keys, "data.keys (", o.keys, ") is below the ", n / 4, " distinct keys a recall "
                  "sequence of length ", n, " holds (n/4): raise data.keys or shorten data.train_length / "
                  "data.eval_lengths");
  } else if (o.task == "bins") {
    SOFTLAB_CHECK(n >= 2, "data: synthetic:bins needs sequences of at least 2 tokens, got length ", n,
                  " (data.train_length / data.eval_lengths)");
  } else {
    SOFTLAB_CHECK(n == 3, "data: synthetic:modadd sequences are always 'a b =' (length 3), got length ", n,
                  " (data.train_length / data.eval_lengths)");
  }
}

// min_len > 0: sequence lengths uniform in [min_len, n], right-padded to n (fixed length
// draws no length, so its stream is what it always was).
Dataset make_recall(const SyntheticOptions& o, int64_t n, int64_t count, Generator& g, int64_t min_len) {
  const int64_t K = o.keys, V = o.values;
  Dataset d = empty_sequences("synthetic:recall", count, n, K + V + (o.min_length > 0 ? 1 : 0), static_cast<int>(V));
  std::vector<int32_t> keys(static_cast<size_t>(K)), value_of(static_cast<size_t>(K));
  std::iota(keys.begin(), keys.end(), 0);
  for (int64_t s = 0; s < count; ++s) {
    int32_t* tok = d.tokens.data() + s * n;
    int32_t* tgt = d.targets.data() + s * n;
    const int64_t len = min_len > 0 ? min_len + static_cast<int64_t>(g.below(static_cast<uint64_t>(n - min_len + 1))) : n;
    const int64_t P = len / 4, Q = len - 2 * P;
    std::fill(tok + len, tok + n, static_cast<int32_t>(K + V));  // padding; its targets stay -1
    for (int64_t i = 0; i < P; ++i) {  // partial Fisher-Yates: P distinct keys
      std::swap(keys[static_cast<size_t>(i)], keys[static_cast<size_t>(i + static_cast<int64_t>(g.below(K - i)))]);
      const int32_t k = keys[static_cast<size_t>(i)];
      value_of[static_cast<size_t>(k)] = static_cast<int32_t>(g.below(V));
      tok[2 * i] = k;
      tok[2 * i + 1] = static_cast<int32_t>(K) + value_of[static_cast<size_t>(k)];
    }
    for (int64_t q = 0; q < Q; ++q) {
      const int32_t k = keys[static_cast<size_t>(g.below(P))];
      tok[2 * P + q] = k;
      tgt[2 * P + q] = value_of[static_cast<size_t>(k)];
    }
  }
  return d;
}

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// The mixture behind synthetic:bins, from the two conditioning tokens.
void bin_density(int64_t t0, int64_t t1, int64_t C, std::vector<double>& p) {
  const double x = 2.0 * static_cast<double>(t0) / (kBinTokens - 1) - 1.0;
  const double w = static_cast<double>(t1) / (kBinTokens - 1);
  const double mu1 = 0.6 * std::sin(M_PI * x), mu2 = -0.5 * x * (0.5 + w);
  const double s1 = 0.06 + 0.08 * w, s2 = 0.12;
  const double pi1 = 0.3 + 0.4 * w;
  p.assign(static_cast<size_t>(C), 0.0);
  double total = 0.0;
  for (int64_t k = 0; k < C; ++k) {
    const double lo = -1.0 + 2.0 * static_cast<double>(k) / static_cast<double>(C);
    const double hi = -1.0 + 2.0 * static_cast<double>(k + 1) / static_cast<double>(C);
    const double m = pi1 * (normal_cdf((hi - mu1) / s1) - normal_cdf((lo - mu1) / s1)) +
                     (1.0 - pi1) * (normal_cdf((hi - mu2) / s2) - normal_cdf((lo - mu2) / s2));
    p[static_cast<size_t>(k)] = m;
    total += m;
  }
  for (double& v : p) v /= total;  // truncated to [-1, 1]
}

std::vector<int32_t> bin_permutation(const SyntheticOptions& o, uint64_t seed) {
  std::vector<int32_t> perm(static_cast<size_t>(o.bins));
  std::iota(perm.begin(), perm.end(), 0);
  if (o.permute_labels) {
    Generator g(stream_seed(seed, 0x7065726dULL, 0));  // the same for every split
    for (int64_t i = o.bins - 1; i > 0; --i) std::swap(perm[static_cast<size_t>(i)], perm[g.below(i + 1)]);
  }
  return perm;
}

Dataset make_bins(const SyntheticOptions& o, int64_t n, int64_t count, Generator& g, uint64_t seed) {
  const int64_t C = o.bins;
  Dataset d = empty_sequences("synthetic:bins", count, n, kBinTokens, static_cast<int>(C));
  d.target_density.assign(static_cast<size_t>(count * C), 0.0f);
  const std::vector<int32_t> perm = bin_permutation(o, seed);
  d.class_position.assign(static_cast<size_t>(C), 0);
  for (int64_t k = 0; k < C; ++k) d.class_position[static_cast<size_t>(perm[static_cast<size_t>(k)])] = static_cast<int32_t>(k);
  std::vector<double> p;
  for (int64_t s = 0; s < count; ++s) {
    int32_t* tok = d.tokens.data() + s * n;
    for (int64_t t = 0; t < n; ++t) tok[t] = static_cast<int32_t>(g.below(kBinTokens));
    bin_density(tok[0], tok[1], C, p);
    double u = static_cast<double>(g.uniform()), acc = 0.0;
    int64_t label = C - 1;
    for (int64_t k = 0; k < C; ++k) {
      acc += p[static_cast<size_t>(k)];
      if (u < acc) {
        label = k;
        break;
      }
    }
    d.targets[static_cast<size_t>(s * n + n - 1)] = perm[static_cast<size_t>(label)];
    for (int64_t k = 0; k < C; ++k)
      d.target_density[static_cast<size_t>(s * C + perm[static_cast<size_t>(k)])] =
          static_cast<float>(p[static_cast<size_t>(k)]);
  }
  return d;
}

// All p*p pairs in one seeded order; the first train_fraction of them train, the rest test.
Dataset make_modadd(const SyntheticOptions& o, bool train, uint64_t seed) {
  const int64_t p = o.modulus, total = p * p;
  std::vector<int64_t> order(static_cast<size_t>(total));
  std::iota(order.begin(), order.end(), 0);
  Generator g(stream_seed(seed, 0x6d6f64ULL, 0));
  for (int64_t i = total - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[g.below(i + 1)]);
  const int64_t n_train = std::clamp<int64_t>(static_cast<int64_t>(o.train_fraction * static_cast<double>(total)), 1,
                                              total - 1);
  const int64_t begin = train ? 0 : n_train, count = train ? n_train : total - n_train;
  Dataset d = empty_sequences("synthetic:modadd", count, 3, p + 1, static_cast<int>(p));
  for (int64_t s = 0; s < count; ++s) {
    const int64_t pair = order[static_cast<size_t>(begin + s)], a = pair / p, b = pair % p;
    d.tokens[static_cast<size_t>(3 * s)] = static_cast<int32_t>(a);
    d.tokens[static_cast<size_t>(3 * s + 1)] = static_cast<int32_t>(b);
    d.tokens[static_cast<size_t>(3 * s + 2)] = static_cast<int32_t>(p);  // "="
    d.targets[static_cast<size_t>(3 * s + 2)] = static_cast<int32_t>((a + b) % p);
  }
  return d;
}

}  // namespace

int64_t synthetic_vocab(const SyntheticOptions& o) {
  if (o.task == "recall") return o.keys + o.values + (o.min_length > 0 ? 1 : 0);
  return o.task == "bins" ? kBinTokens : o.modulus + 1;
}
int32_t synthetic_pad_token(const SyntheticOptions& o) {
  return o.task == "recall" && o.min_length > 0 ? static_cast<int32_t>(o.keys + o.values) : -1;
}
int64_t synthetic_classes(const SyntheticOptions& o) {
  return o.task == "recall" ? o.values : o.task == "bins" ? o.bins : o.modulus;
}
int64_t synthetic_train_length(const SyntheticOptions& o) {
  return o.train_length > 0 ? o.train_length : default_length(o.task);
}
int64_t synthetic_max_length(const SyntheticOptions& o) {
  int64_t n = synthetic_train_length(o);
  for (int64_t len : o.eval_lengths) n = std::max(n, len);
  return n;
}

bool is_synthetic(const std::string& dataset) { return dataset.rfind("synthetic:", 0) == 0; }

Dataset make_synthetic_split(const SyntheticOptions& o, int64_t length, int64_t count, uint64_t seed, int split) {
  check_length(o, length);
  if (o.task == "modadd") return make_modadd(o, split == 0, seed);
  Generator g(stream_seed(seed, static_cast<uint64_t>(split), static_cast<uint64_t>(length)));
  if (o.task == "recall") return make_recall(o, length, count, g, length == synthetic_train_length(o) ? o.min_length : 0);
  if (o.task == "bins") return make_bins(o, length, count, g, seed);
  throw Error(detail::cat("data.dataset: unknown synthetic task '", o.task, "' (recall, bins, modadd)"));
}

DataSplit make_synthetic(const SyntheticOptions& o, uint64_t seed) {
  SOFTLAB_CHECK(o.task == "recall" || o.task == "bins" || o.task == "modadd", "data.dataset: unknown synthetic task '",
                o.task, "' (synthetic:recall, synthetic:bins, synthetic:modadd)");
  const int64_t n = synthetic_train_length(o);
  const int64_t train_size = o.train_size > 0 ? o.train_size : o.task == "bins" ? 4000 : 20000;
  const int64_t test_size = o.test_size > 0 ? o.test_size : 1000;
  DataSplit d;
  d.dir = "(generated)";
  d.train = make_synthetic_split(o, n, train_size, seed, 0);
  d.test = make_synthetic_split(o, n, test_size, seed, 1);
  for (int64_t len : o.eval_lengths) {
    SOFTLAB_CHECK(len > 0, "data.eval_lengths: lengths must be positive, got ", len);
    if (len == n) continue;
    d.test_at_length.emplace_back(len, make_synthetic_split(o, len, test_size, seed, 1));
  }
  return d;
}

}  // namespace softlab
