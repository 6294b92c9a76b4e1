// Normalisation statistics and the batch loader.
//
// Determinism: the order of epoch e is a Fisher-Yates shuffle driven by a Generator seeded
// from (seed, e), and the augmentation of batch b of epoch e by one seeded from
// (seed, e, b). Nothing carries over from one batch to the next, so a run resumed with
// start_epoch(e, b) sees bit for bit the batches an uninterrupted run sees, and the
// background thread prepares exactly what the caller's thread would.
//
// Augmentation (docs/training.md, "Augmentation and mixing"): per image, in this order,
// random-resized crop, shift (random_crop or translate), TrivialAugment and flip on the uint8
// pixels, then normalisation, then random erasing on the floats; then mixup or CutMix over the
// batch. The per-image draws come from the batch's augmentation generator in that same order,
// each only when its key is on, so with the recipe keys off the draws, and the batches, are
// exactly those of the loader before they existed (crop y, crop x, flip). The batch mixing
// draws from its own generator, seeded from (seed, epoch, batch) and a tag, so turning mixing
// on or off leaves every image's augmentation as it was.
//
// Prefetch: one worker thread and a one-slot handoff. The caller asks for batch b, the
// worker prepares it; when the caller takes it, it asks for b + 1, which the worker prepares
// while the caller trains on b. start_epoch bumps a generation counter, so a batch still
// being prepared for an abandoned epoch is dropped when it is done, never handed out.
#include <algorithm>
#include <array>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "data/augment.hpp"
#include "data/mix.hpp"
#include "data/trivial_augment.hpp"
#include "softlab/data.hpp"
#include "softlab/error.hpp"
#include "softlab/random.hpp"

namespace softlab {

Normalization compute_normalization(const Dataset& ds) {
  const int64_t C = ds.channels, HW = ds.height * ds.width;
  SOFTLAB_CHECK(ds.size > 0 && C > 0 && HW > 0, "compute_normalization: data set '", ds.name,
                "' is empty (", ds.size, " images of ", C, "x", ds.height, "x", ds.width, ")");
  SOFTLAB_CHECK(ds.images.size() == static_cast<size_t>(ds.size * C * HW),
                "compute_normalization: data set '", ds.name, "' holds ", ds.images.size(),
                " image bytes, expected ", ds.size * C * HW);
  // Sums of bytes and of their squares are exact in 64-bit integers (< 2^31 * 255^2), so the
  // statistics do not depend on summation order; only the final division is in double.
  std::vector<uint64_t> sum(C, 0), sum_sq(C, 0);
  for (int64_t i = 0; i < ds.size; ++i) {
    const uint8_t* img = ds.images.data() + i * C * HW;
    for (int64_t c = 0; c < C; ++c) {
      uint64_t s = 0, q = 0;
      for (int64_t p = 0; p < HW; ++p) {
        const uint64_t v = img[c * HW + p];
        s += v;
        q += v * v;
      }
      sum[c] += s;
      sum_sq[c] += q;
    }
  }
  Normalization n;
  const double count = static_cast<double>(ds.size) * static_cast<double>(HW);
  for (int64_t c = 0; c < C; ++c) {
    const double mean = static_cast<double>(sum[c]) / count / 255.0;
    const double var = std::max(0.0, static_cast<double>(sum_sq[c]) / count / (255.0 * 255.0) - mean * mean);
    const double sd = std::sqrt(var);
    n.mean.push_back(static_cast<float>(mean));
    // A constant channel has std 0; 1 keeps it finite (its values are all 0 after centring).
    n.std.push_back(sd > 0.0 ? static_cast<float>(sd) : 1.0f);
  }
  return n;
}

namespace {

uint64_t mix64(uint64_t z) {  // splitmix64's finaliser: a bijection that scrambles every bit
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t order_seed(uint64_t seed, int64_t epoch) {
  return seed * 0x9E3779B97F4A7C15ULL ^ static_cast<uint64_t>(epoch + 1);
}

// Its own stream, distinct from the order's: changing augmentation never shifts the order.
uint64_t augment_seed(uint64_t seed, int64_t epoch, int64_t batch) {
  uint64_t h = mix64(seed ^ 0x6175676d656e7421ULL);  // "augment!"
  h = mix64(h ^ static_cast<uint64_t>(epoch));
  return mix64(h ^ static_cast<uint64_t>(batch));
}

// The batch mixing's stream: derived from the batch's augmentation seed with a tag of its own.
uint64_t mixing_seed(uint64_t seed, int64_t epoch, int64_t batch) {
  return mix64(augment_seed(seed, epoch, batch) ^ 0x6d6978696e672121ULL);  // "mixing!!"
}

// Copies one uint8 CHW image into floats through the per-channel lookup table, shifted by
// (dy, dx) (padding reads pixel value 0) and, when `flip`, mirrored left-right after the
// crop, as torchvision's RandomCrop(padding) followed by RandomHorizontalFlip does.
void augment_image(const uint8_t* src, float* dst, int64_t C, int64_t H, int64_t W, int64_t dy,
                   int64_t dx, bool flip, const std::vector<std::array<float, 256>>& lut) {
  for (int64_t c = 0; c < C; ++c) {
    const auto& t = lut[c];
    const uint8_t* s = src + c * H * W;
    float* d = dst + c * H * W;
    for (int64_t y = 0; y < H; ++y) {
      const int64_t sy = y + dy;
      float* drow = d + y * W;
      if (sy < 0 || sy >= H) {
        for (int64_t x = 0; x < W; ++x) drow[x] = t[0];
        continue;
      }
      const uint8_t* srow = s + sy * W;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sx = (flip ? W - 1 - x : x) + dx;
        drow[x] = (sx >= 0 && sx < W) ? t[srow[sx]] : t[0];
      }
    }
  }
}

}  // namespace

struct BatchLoader::Impl {
  using Order = std::shared_ptr<const std::vector<int64_t>>;
  struct Request {
    uint64_t gen;
    int64_t epoch, batch;
    Order order;
  };

  // Read-only after construction: shared by the caller's thread and the worker.
  const Dataset& ds;
  Options opt;
  std::vector<std::array<float, 256>> lut;  // per channel: (v / 255 - mean) / std
  int64_t num_batches = 0;

  // The caller's thread only.
  bool started = false;
  int64_t epoch = 0, next_batch = 0;
  Order order;

  // Handoff, guarded by mu.
  std::mutex mu;
  std::condition_variable cv;
  uint64_t gen = 0;                 // bumped by start_epoch; older work is stale
  std::optional<Request> request;   // what the worker should prepare next
  bool ready = false;               // slot holds the batch asked for in this generation
  Batch slot;
  std::exception_ptr error;         // preparing the slot's batch failed
  bool stop = false;
  std::thread worker;

  Impl(const Dataset& d, Options o) : ds(d), opt(std::move(o)) {}
  void check_images();  // sizes, normalisation, and the lookup table it becomes
  void check_augment() const;  // the recipe keys' ranges, and what they need of the data set

  Order make_order(int64_t e) const {
    auto v = std::make_shared<std::vector<int64_t>>(ds.size);
    for (int64_t i = 0; i < ds.size; ++i) (*v)[i] = i;
    if (opt.shuffle) {
      Generator g(order_seed(opt.seed, e));
      for (int64_t i = ds.size - 1; i > 0; --i) std::swap((*v)[i], (*v)[g.below(i + 1)]);
    }
    return v;
  }

  // Sequences: token ids as floats [B, N], targets flattened [B*N]; no augmentation.
  void prepare_sequences(int64_t b, const std::vector<int64_t>& ord, Batch& out) const {
    const int64_t N = ds.seq_len;
    const int64_t begin = b * opt.batch_size;
    const int64_t count = std::min(opt.batch_size, ds.size - begin);
    out.index = b;
    out.images = empty(Shape{count, N});
    out.labels.resize(static_cast<size_t>(count * N));
    float* dst = out.images.mutable_data();
    for (int64_t i = 0; i < count; ++i) {
      const int64_t k = ord[begin + i];
      for (int64_t t = 0; t < N; ++t) {
        dst[i * N + t] = static_cast<float>(ds.tokens[k * N + t]);
        out.labels[i * N + t] = ds.targets[k * N + t];
      }
    }
  }

  void prepare(int64_t e, int64_t b, const std::vector<int64_t>& ord, Batch& out) const {
    if (ds.is_sequence()) return prepare_sequences(b, ord, out);
    const int64_t C = ds.channels, H = ds.height, W = ds.width, img = ds.image_bytes();
    const int64_t begin = b * opt.batch_size;
    const int64_t count = std::min(opt.batch_size, ds.size - begin);
    const Augment& a = opt.augment;
    // random_crop and translate are the same shift (the constructor allows one of them).
    const int64_t p = a.random_crop > 0 ? a.random_crop : a.translate;
    out.index = b;
    out.labels.resize(count);
    out.images = empty(Shape{count, C, H, W});
    float* dst = out.images.mutable_data();
    Generator g(augment_seed(opt.seed, e, b));
    std::vector<uint8_t> cropped, work, scratch;  // uint8 stages, only for the ops that are on
    if (a.random_resized_crop) cropped.resize(img);
    if (a.trivial_augment) work.resize(img);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t k = ord[begin + i];
      const uint8_t* src = ds.images.data() + k * img;
      // Fixed draw order per image (resized crop, shift y, shift x, TrivialAugment, flip,
      // erasing; each only when on) keeps the stream reproducible.
      if (a.random_resized_crop) {
        const augment::Box box = augment::draw_resized_crop_box(g, H, W, a.rrc_scale, a.rrc_ratio);
        augment::resized_crop(src, cropped.data(), C, H, W, box);
        src = cropped.data();
      }
      int64_t dy = 0, dx = 0;
      if (p > 0) {
        dy = static_cast<int64_t>(g.below(2 * p + 1)) - p;
        dx = static_cast<int64_t>(g.below(2 * p + 1)) - p;
      }
      if (a.trivial_augment) {
        const augment::TaDraw t = augment::draw_trivial_augment(g, C, H, W);
        // TrivialAugment sees the shifted image, so the shift cannot wait for the flip.
        augment::shift(src, work.data(), C, H, W, dy, dx);
        augment::apply_ta_op(work.data(), C, H, W, t.op, t.magnitude, scratch);
        src = work.data();
        dy = dx = 0;
      }
      const bool flip = a.hflip && (g.next_u64() >> 63) != 0;
      float* out_img = dst + i * img;
      augment_image(src, out_img, C, H, W, dy, dx, flip, lut);
      if (a.random_erasing > 0.0) {
        const augment::EraseDraw er = augment::draw_erase_box(g, H, W, a.random_erasing);
        if (er.placed) augment::erase(out_img, C, H, W, er.box, g);
      }
      out.labels[i] = ds.labels[k];
    }
    if (a.mixes()) {
      Generator mg(mixing_seed(opt.seed, e, b));
      const augment::MixDraw m = augment::draw_mix(mg, a, H, W);
      out.targets = empty(Shape{count, opt.num_classes});
      augment::apply_mix(m, dst, count, C, H, W, out.labels, out.targets.mutable_data(), opt.num_classes);
    }
  }

  void run() {
    for (;;) {
      Request req;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop || request.has_value(); });
        if (stop) return;
        req = std::move(*request);
        request.reset();
      }
      Batch b;
      std::exception_ptr err;
      try {
        prepare(req.epoch, req.batch, *req.order, b);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu);
      if (req.gen != gen || stop) continue;  // start_epoch moved on: drop it
      slot = std::move(b);
      error = err;
      ready = true;
      cv.notify_all();
    }
  }
};

BatchLoader::BatchLoader(const Dataset& ds, Options opt) : impl_(std::make_unique<Impl>(ds, std::move(opt))) {
  Impl& im = *impl_;
  const Options& o = im.opt;
  SOFTLAB_CHECK(o.batch_size > 0, "BatchLoader: batch_size is ", o.batch_size, ", expected > 0");
  SOFTLAB_CHECK(o.augment.random_crop >= 0, "BatchLoader: augment.random_crop is ",
                o.augment.random_crop, ", expected >= 0");
  im.check_augment();
  if (ds.is_sequence())
    SOFTLAB_CHECK(ds.tokens.size() == static_cast<size_t>(ds.size * ds.seq_len) &&
                      ds.targets.size() == ds.tokens.size(),
                  "BatchLoader: sequence data set '", ds.name, "' is inconsistent: ", ds.size, " sequences of ",
                  ds.seq_len, " tokens but ", ds.tokens.size(), " tokens and ", ds.targets.size(), " targets");
  else
    im.check_images();
  im.num_batches = o.drop_last ? ds.size / o.batch_size : (ds.size + o.batch_size - 1) / o.batch_size;
  if (o.prefetch) im.worker = std::thread([&im] { im.run(); });
}

void BatchLoader::Impl::check_images() {
  const Options& o = opt;
  Impl& im = *this;
  SOFTLAB_CHECK(ds.size >= 0 && ds.channels > 0 && ds.height > 0 && ds.width > 0 &&
                    ds.images.size() == static_cast<size_t>(ds.size * ds.image_bytes()) &&
                    ds.labels.size() == static_cast<size_t>(ds.size),
                "BatchLoader: data set '", ds.name, "' is inconsistent: ", ds.size, " images of ",
                ds.channels, "x", ds.height, "x", ds.width, " but ", ds.images.size(),
                " image bytes and ", ds.labels.size(), " labels");
  const bool identity = o.norm.mean.empty() && o.norm.std.empty();
  SOFTLAB_CHECK(identity || (static_cast<int64_t>(o.norm.mean.size()) == ds.channels &&
                             static_cast<int64_t>(o.norm.std.size()) == ds.channels),
                "BatchLoader: normalisation has ", o.norm.mean.size(), " means and ", o.norm.std.size(),
                " stds, data set '", ds.name, "' has ", ds.channels, " channels");
  im.lut.resize(ds.channels);
  for (int64_t c = 0; c < ds.channels; ++c) {
    const float mean = identity ? 0.0f : o.norm.mean[c];
    const float sd = identity ? 1.0f : o.norm.std[c];
    SOFTLAB_CHECK(std::isfinite(mean) && std::isfinite(sd) && sd > 0.0f, "BatchLoader: channel ", c,
                  " has mean ", mean, " and std ", sd, "; expected finite values and std > 0");
    for (int v = 0; v < 256; ++v) im.lut[c][v] = (static_cast<float>(v) / 255.0f - mean) / sd;
  }
}

void BatchLoader::Impl::check_augment() const {
  const Augment& a = opt.augment;
  auto in01 = [](double v) { return v >= 0.0 && v <= 1.0; };
  SOFTLAB_CHECK(a.translate >= 0, "BatchLoader: augment.translate is ", a.translate, ", expected >= 0");
  SOFTLAB_CHECK(a.translate == 0 || a.random_crop == 0, "BatchLoader: augment.translate (", a.translate,
                ") and augment.random_crop (", a.random_crop, ") are the same shift; set one of them");
  SOFTLAB_CHECK(a.rrc_scale[0] > 0.0 && a.rrc_scale[0] <= a.rrc_scale[1] && a.rrc_scale[1] <= 1.0,
                "BatchLoader: augment.rrc_scale is [", a.rrc_scale[0], ", ", a.rrc_scale[1],
                "], expected 0 < min <= max <= 1");
  SOFTLAB_CHECK(a.rrc_ratio[0] > 0.0 && a.rrc_ratio[0] <= a.rrc_ratio[1] && std::isfinite(a.rrc_ratio[1]),
                "BatchLoader: augment.rrc_ratio is [", a.rrc_ratio[0], ", ", a.rrc_ratio[1],
                "], expected 0 < min <= max");
  SOFTLAB_CHECK(in01(a.random_erasing), "BatchLoader: augment.random_erasing is ", a.random_erasing,
                ", expected a probability in [0, 1]");
  SOFTLAB_CHECK(a.mixup >= 0.0 && a.cutmix >= 0.0 && std::isfinite(a.mixup) && std::isfinite(a.cutmix),
                "BatchLoader: augment.mixup is ", a.mixup, " and augment.cutmix ", a.cutmix,
                ", expected Beta alphas >= 0 (0: off)");
  SOFTLAB_CHECK(in01(a.mix_prob) && in01(a.switch_prob), "BatchLoader: augment.mix_prob is ", a.mix_prob,
                " and augment.switch_prob ", a.switch_prob, ", expected probabilities in [0, 1]");
  const Augment off;
  const bool image_ops = a.random_crop != off.random_crop || a.hflip != off.hflip || a.translate != off.translate ||
                         a.random_resized_crop || a.trivial_augment || a.random_erasing > 0.0 || a.mixes();
  SOFTLAB_CHECK(!ds.is_sequence() || !image_ops, "BatchLoader: data set '", ds.name,
                "' holds token sequences; image augmentation and mixing do not apply to it");
  if (!a.mixes()) return;
  SOFTLAB_CHECK(opt.num_classes > 0, "BatchLoader: mixup / CutMix need Options::num_classes (the classes of "
                "the soft targets), got ", opt.num_classes);
  for (size_t i = 0; i < ds.labels.size(); ++i)
    SOFTLAB_CHECK(ds.labels[i] >= 0 && ds.labels[i] < opt.num_classes, "BatchLoader: data set '", ds.name,
                  "' has label ", ds.labels[i], " at image ", i, ", outside the ", opt.num_classes,
                  " classes of Options::num_classes");
}

BatchLoader::~BatchLoader() {
  if (!impl_->worker.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  impl_->worker.join();
}

int64_t BatchLoader::batches_per_epoch() const { return impl_->num_batches; }

void BatchLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  Impl& im = *impl_;
  SOFTLAB_CHECK(epoch >= 0, "BatchLoader::start_epoch: epoch is ", epoch, ", expected >= 0");
  SOFTLAB_CHECK(first_batch >= 0 && first_batch <= im.num_batches, "BatchLoader::start_epoch: first_batch is ",
                first_batch, ", expected 0..", im.num_batches, " (batches per epoch)");
  im.order = im.make_order(epoch);
  im.epoch = epoch;
  im.next_batch = first_batch;
  im.started = true;
  if (!im.opt.prefetch) return;
  std::lock_guard<std::mutex> lk(im.mu);
  ++im.gen;
  im.ready = false;
  im.slot = Batch{};
  im.error = nullptr;
  im.request.reset();
  if (first_batch < im.num_batches) im.request = Impl::Request{im.gen, epoch, first_batch, im.order};
  im.cv.notify_all();
}

bool BatchLoader::next(Batch& out) {
  Impl& im = *impl_;
  if (!im.started) start_epoch(0);
  if (im.next_batch >= im.num_batches) return false;
  if (!im.opt.prefetch) {
    im.prepare(im.epoch, im.next_batch, *im.order, out);
    ++im.next_batch;
    return true;
  }
  std::unique_lock<std::mutex> lk(im.mu);
  im.cv.wait(lk, [&] { return im.ready; });
  im.ready = false;
  if (im.error) {
    // Ask again for the same batch, so a caller that catches this can retry.
    std::exception_ptr err = im.error;
    im.error = nullptr;
    im.request = Impl::Request{im.gen, im.epoch, im.next_batch, im.order};
    im.cv.notify_all();
    std::rethrow_exception(err);
  }
  SOFTLAB_ASSERT(im.slot.index == im.next_batch, "BatchLoader: prefetched batch ", im.slot.index,
                 ", expected ", im.next_batch);
  out = std::move(im.slot);
  im.slot = Batch{};
  ++im.next_batch;
  if (im.next_batch < im.num_batches)
    im.request = Impl::Request{im.gen, im.epoch, im.next_batch, im.order};
  im.cv.notify_all();
  return true;
}

}  // namespace softlab
