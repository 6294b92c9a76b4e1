#pragma once
// Image data sets held in memory as uint8 (CHW per image), their readers (IDX for MNIST
// and Fashion-MNIST, plain or gzip; the CIFAR-10 and CIFAR-100 binary versions), the
// lookup of where a data set lives, and a batch loader that normalises, augments and
// prepares the next batch on a background thread.
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "softlab/tensor.hpp"

namespace softlab {

struct Dataset {
  std::string name;
  int64_t size = 0, channels = 0, height = 0, width = 0;
  int num_classes = 0;
  std::vector<uint8_t> images;  // size * channels * height * width, CHW per image
  std::vector<int32_t> labels;  // size, in [0, num_classes)
  std::vector<std::string> class_names;  // may be empty
  int64_t image_bytes() const { return channels * height * width; }

  // Sequence data sets (synthetic tasks) instead of images: `size` sequences of `seq_len`
  // tokens in [0, vocab); targets are per position, -1 where nothing is predicted (labels
  // stays empty). Batches carry the token ids as floats [B, N] (exact below 2^24) in
  // Batch::images and the targets, flattened [B*N], in Batch::labels.
  int64_t seq_len = 0, vocab = 0;
  std::vector<int32_t> tokens;   // size * seq_len
  std::vector<int32_t> targets;  // size * seq_len
  // Optional, for tasks with one target per sequence drawn from a known distribution over
  // the classes (synthetic:bins): size * num_classes probabilities, for the KL metric.
  std::vector<float> target_density;
  // Optional: where each class lies on the ordered axis (synthetic:bins with permuted labels);
  // empty means class k is at k. For the mean |predicted bin - true bin| metric.
  std::vector<int32_t> class_position;
  bool is_sequence() const { return seq_len > 0; }
};

struct DataSplit {
  Dataset train, test;
  std::string dir;  // where it was found
  // Synthetic tasks: test sets at further lengths (data.eval_lengths), by length.
  std::vector<std::pair<int64_t, Dataset>> test_at_length;
};

// ---- readers: every malformed file is a softlab::Error naming the file and what was expected
Dataset read_idx(const std::string& images_path, const std::string& labels_path);  // .gz or plain
// The official binary records: label byte + 3072 pixel bytes (CIFAR-10), or coarse label,
// fine label + 3072 bytes (CIFAR-100: labels are the fine labels).
Dataset read_cifar(const std::vector<std::string>& files, bool cifar100);
// The same, keeping only the first `max_records_per_file` records of each file (every file
// is still checked whole for its size); for tests and quick looks at the big files.
Dataset read_cifar(const std::vector<std::string>& files, bool cifar100,
                   int64_t max_records_per_file);

// ---- lookup: data.path if given; else $SOFTLAB_DATA_DIR/<dataset>; else datasets/<dataset>
// in the checkout (relative to the current directory and to the executable's source tree);
// else, for Fashion-MNIST, /usr/share/datasets/fashion-mnist. Names: mnist, fashion-mnist,
// cifar10, cifar100. A missing data set is an error that lists where it looked and how to
// get the files.
std::string find_dataset_dir(const std::string& dataset, const std::optional<std::string>& path);
DataSplit load_dataset(const std::string& dataset, const std::optional<std::string>& path);
std::vector<std::string> known_datasets();

// ---- synthetic sequence tasks (src/data/synthetic.cpp, docs/synthetic.md), generated from
// `seed` alone: "synthetic:recall" (multi-query associative recall), "synthetic:bins" (an
// ordered, continuous target quantised into bins), "synthetic:modadd" ((a + b) mod p).
// Parameters come from the config's data section; bad ones are errors naming the key.
struct SyntheticOptions {
  std::string task;  // recall | bins | modadd
  int64_t train_length = 0, train_size = 0, test_size = 0;  // 0: the task's default
  std::vector<int64_t> eval_lengths;
  // recall: > 0 draws each sequence's length from [min_length, train_length] (the splits at
  // the training length) and right-pads it with synthetic_pad_token(); 0: fixed length.
  int64_t min_length = 0;
  int64_t keys = 128, values = 16, bins = 50, modulus = 97;
  bool permute_labels = false;
  double train_fraction = 0.4;
};
bool is_synthetic(const std::string& dataset);  // "synthetic:..."
DataSplit make_synthetic(const SyntheticOptions& opt, uint64_t seed);
// What a model for the task needs to know before seeing data: tokens in the vocabulary, the
// training length (0 resolved to the task's default) and the longest length evaluated.
int64_t synthetic_vocab(const SyntheticOptions& opt);
int64_t synthetic_classes(const SyntheticOptions& opt);
int64_t synthetic_train_length(const SyntheticOptions& opt);
int64_t synthetic_max_length(const SyntheticOptions& opt);
// The padding token of the variable-length mode (the last id of the vocabulary), or -1.
int32_t synthetic_pad_token(const SyntheticOptions& opt);
// One split of a task at one length (`split` 0 = train, 1.. = test sets; each its own stream).
Dataset make_synthetic_split(const SyntheticOptions& opt, int64_t length, int64_t count, uint64_t seed, int split);

// ---- batches
struct Normalization {
  std::vector<float> mean, std;  // per channel, on the [0, 1] scale
};
// BatchLoader with an empty Normalization uses mean 0, std 1 (pixel / 255): a test split
// must be normalised with the training split's statistics, so the loader never guesses.
Normalization compute_normalization(const Dataset& ds);  // from the data set itself

// Training-time augmentation and mixing (docs/training.md, "Augmentation and mixing"). Every
// field's default is off, and with all of them off a batch is bit for bit what it was before
// the recipe keys existed. Per image, in this order: random-resized crop, shift (random_crop or
// translate), TrivialAugment, flip (all on the uint8 image), normalisation, random erasing (on
// the normalised floats); then per batch mixup or CutMix.
struct Augment {
  int random_crop = 0;  // pad by this many pixels (zeros), then crop back at a random offset
  bool hflip = false;   // horizontal flip with probability 1/2
  // Shift by (dy, dx), each uniform in [-translate, translate], with pixel value 0 filling
  // what comes in: the same shifts as random_crop (a padded crop is a shift), kept under the
  // name timm-style recipes use. At most one of the two may be set.
  int translate = 0;
  // torchvision's RandomResizedCrop back to the image size (bilinear): a box whose area is a
  // fraction in rrc_scale of the image and whose width / height is log-uniform in rrc_ratio.
  bool random_resized_crop = false;
  std::array<double, 2> rrc_scale = {0.35, 1.0};
  std::array<double, 2> rrc_ratio = {3.0 / 4.0, 4.0 / 3.0};
  bool trivial_augment = false;  // TrivialAugment (wide op list, ranges for 28-32 px images)
  double random_erasing = 0.0;   // probability of erasing one rectangle (timm's defaults)
  // Batch mixing as timm's Mixup in "batch" mode: Beta(alpha, alpha) parameters, 0 = off.
  double mixup = 0.0, cutmix = 0.0;
  double mix_prob = 1.0;     // probability that a batch is mixed at all
  double switch_prob = 0.5;  // with both on: probability of CutMix rather than mixup
  bool mixes() const { return mixup > 0.0 || cutmix > 0.0; }
};

struct Batch {
  Tensor images;                 // [B, C, H, W], normalised float
  std::vector<int32_t> labels;   // B
  // [B, classes] soft targets whenever mixup or CutMix is configured (rows sum to 1): a mixed
  // batch's rows hold lambda on the image's own class and 1 - lambda on its partner's (labels
  // then hold each row's larger share, its own class at lambda >= 1/2), a batch that was not
  // mixed (mix_prob) one-hot rows. Undefined when no mixing is configured.
  Tensor targets;
  int64_t index = 0;             // batch index within the epoch
};

// Deterministic: the order of epoch e and the augmentation of batch b depend only on
// (seed, e, b), so a run resumed at (e, b) sees exactly the batches an uninterrupted run would.
class BatchLoader {
 public:
  struct Options {
    int64_t batch_size = 128;
    bool shuffle = true;
    bool drop_last = false;
    Augment augment;
    Normalization norm;
    uint64_t seed = 0;
    bool prefetch = true;  // prepare the next batch on a background thread
    // Classes of the soft targets; needed (> 0, above every label) when augment.mixes().
    int64_t num_classes = 0;
  };
  // Keeps a reference to `ds`: the data set must outlive the loader.
  BatchLoader(const Dataset& ds, Options opt);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t batches_per_epoch() const;
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  bool next(Batch& out);  // false when the epoch is done; starts epoch 0 if none was started

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A deterministic, class-balanced subset of `size` images of an image data set (data.subset):
// size / K images of each of the K classes, the remainder one more each to the lowest class
// indices; within a class, which images is drawn by a generator seeded from `seed` (the run
// seed) and a fixed tag, so it never depends on the epoch. The kept images stay in the data
// set's order. A size of 0 or more than the data set holds, or a class with fewer images than
// its share, is a softlab::Error naming data.subset, the numbers and the class.
Dataset class_balanced_subset(const Dataset& ds, int64_t size, uint64_t seed);

// Writes a data set as IDX files (images-idx3-ubyte, labels-idx1-ubyte; gzip when `gz`),
// named as the MNIST files are: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
// Used by tests and tools to make small data sets.
void write_idx(const Dataset& ds, const std::string& dir, const std::string& prefix, bool gz);

}  // namespace softlab
