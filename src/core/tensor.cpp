// Shape, Storage and Tensor: storage management, element access, factories, printing.
#include "softlab/tensor.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>

#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/random.hpp"

namespace softlab {

// ---- Shape -------------------------------------------------------------------------------

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) {
  for (int64_t d : dims_)
    SOFTLAB_CHECK(d >= 0, "shape ", str(), " has a negative dimension");
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int64_t d : dims_) n *= d;
  return n;
}

int64_t Shape::axis(int64_t i) const {
  const int64_t r = rank();
  const int64_t a = i < 0 ? i + r : i;
  SOFTLAB_CHECK(a >= 0 && a < r, "axis ", i, " is out of range for shape ", str());
  return a;
}

int64_t Shape::operator[](int64_t i) const { return dims_[static_cast<size_t>(axis(i))]; }

std::string Shape::str() const {
  std::string s = "[";
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  return s + "]";
}

std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

// ---- Storage -----------------------------------------------------------------------------

namespace {
// Live and peak bytes of all Storage. Relaxed atomics: the counters are statistics, not
// synchronisation; the peak is a CAS-max so concurrent allocations cannot lower it.
std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};
void note_alloc(int64_t bytes) {
  const int64_t now = g_live_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int64_t peak = g_peak_bytes.load(std::memory_order_relaxed);
  while (now > peak && !g_peak_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}
}  // namespace

TensorMemory tensor_memory() {
  return {g_live_bytes.load(std::memory_order_relaxed), g_peak_bytes.load(std::memory_order_relaxed)};
}
void reset_peak_tensor_memory() { g_peak_bytes.store(g_live_bytes.load(std::memory_order_relaxed)); }

Storage::Storage(int64_t n) : n_(n) {
  SOFTLAB_CHECK(n >= 0, "storage of negative size ", n);
  // 64-byte alignment for AVX loads; std::aligned_alloc needs a multiple of the alignment.
  size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  ptr_ = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!ptr_) throw Error(detail::cat("out of memory allocating ", n, " floats"), Error::Kind::Internal);
  note_alloc(n_ * static_cast<int64_t>(sizeof(float)));
}

Storage::~Storage() {
  std::free(ptr_);
  g_live_bytes.fetch_sub(n_ * static_cast<int64_t>(sizeof(float)), std::memory_order_relaxed);
}

// ---- Tensor ------------------------------------------------------------------------------

namespace {
const TensorImpl& checked(const std::shared_ptr<TensorImpl>& impl) {
  SOFTLAB_CHECK(impl != nullptr, "use of an undefined tensor");
  return *impl;
}

std::shared_ptr<TensorImpl> make_impl(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape.numel());
  impl->shape = shape;
  return impl;
}

int64_t flat_index(const Shape& shape, std::initializer_list<int64_t> index) {
  SOFTLAB_CHECK(static_cast<int64_t>(index.size()) == shape.rank(), "index of ", index.size(),
                " coordinates for a tensor of shape ", shape);
  int64_t flat = 0, i = 0;
  for (int64_t c : index) {
    const int64_t d = shape.dims()[static_cast<size_t>(i)];
    SOFTLAB_CHECK(c >= 0 && c < d, "index ", c, " out of range for axis ", i, " of shape ", shape);
    flat = flat * d + c;
    ++i;
  }
  return flat;
}
}  // namespace

const Shape& Tensor::shape() const { return checked(impl_).shape; }

const float* Tensor::data() const {
  const TensorImpl& t = checked(impl_);
  return t.storage->data() + t.offset;
}

float* Tensor::mutable_data() {
  const TensorImpl& t = checked(impl_);
  t.storage->bump_version();
  return t.storage->data() + t.offset;
}

std::vector<float> Tensor::to_vector() const { return {data(), data() + numel()}; }

float Tensor::item() const {
  SOFTLAB_CHECK(numel() == 1, "item() needs a one-element tensor, got shape ", shape());
  return data()[0];
}

float Tensor::at(std::initializer_list<int64_t> index) const {
  return data()[flat_index(shape(), index)];
}

void Tensor::set(std::initializer_list<int64_t> index, float v) {
  const int64_t i = flat_index(shape(), index);
  mutable_data()[i] = v;
}

bool Tensor::requires_grad() const { return checked(impl_).requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  checked(impl_);
  SOFTLAB_CHECK(impl_->grad_fn == nullptr,
                "set_requires_grad: only leaf tensors can change requires_grad (this one came from '",
                impl_->grad_fn->name(), "'); use detach()");
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return checked(impl_).grad_fn == nullptr && !impl_->graph_freed; }

Tensor Tensor::grad() const { return Tensor(checked(impl_).grad); }

void Tensor::zero_grad() { checked(impl_), impl_->grad.reset(); }

void Tensor::retain_grad() { checked(impl_), impl_->retain_grad = true; }

void Tensor::backward() const {
  SOFTLAB_CHECK(numel() == 1, "backward() without an upstream gradient needs a one-element tensor, got shape ",
                shape(), "; pass grad_output");
  run_backward(*this, ones(shape()));
}

void Tensor::backward(const Tensor& grad_output) const {
  SOFTLAB_CHECK(grad_output.defined() && grad_output.shape() == shape(), "backward: grad_output shape ",
                grad_output.defined() ? grad_output.shape().str() : "undefined",
                " does not match the tensor's shape ", shape());
  run_backward(*this, grad_output);
}

Tensor Tensor::detach() const {
  const TensorImpl& t = checked(impl_);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage;
  impl->shape = t.shape;
  impl->offset = t.offset;
  return Tensor(impl);
}

Tensor Tensor::clone() const { return from_data(shape(), values()); }

bool Tensor::same_storage(const Tensor& o) const {
  return defined() && o.defined() && impl_->storage == o.impl_->storage;
}

std::string Tensor::to_string(int64_t max_per_dim) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << std::setprecision(6);
  const Shape& s = shape();
  const float* p = data();
  // Recursive printer over dimensions, eliding the middle of long dimensions.
  std::vector<int64_t> strides(static_cast<size_t>(s.rank()), 1);
  for (int64_t i = s.rank() - 2; i >= 0; --i)
    strides[static_cast<size_t>(i)] = strides[static_cast<size_t>(i + 1)] * s.dims()[static_cast<size_t>(i + 1)];
  auto rec = [&](auto&& self, int64_t dim, int64_t off) -> void {
    if (dim == s.rank()) {
      os << p[off];
      return;
    }
    const int64_t n = s.dims()[static_cast<size_t>(dim)];
    os << "[";
    for (int64_t i = 0; i < n; ++i) {
      if (n > max_per_dim && i == max_per_dim / 2) {
        os << "...";
        i = n - max_per_dim / 2 - 1;
        if (i + 1 < n) os << ", ";
        continue;
      }
      self(self, dim + 1, off + i * strides[static_cast<size_t>(dim)]);
      if (i + 1 < n) os << ", ";
    }
    os << "]";
  };
  os << "Tensor(shape=" << s << ", ";
  rec(rec, 0, 0);
  if (requires_grad()) os << ", requires_grad";
  if (impl_->grad_fn) os << ", grad_fn=" << impl_->grad_fn->name();
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

// ---- factories ---------------------------------------------------------------------------

Tensor empty(const Shape& shape) { return Tensor(make_impl(shape)); }

Tensor full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  float* p = t.mutable_data();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) p[i] = value;
  return t;
}

Tensor zeros(const Shape& shape) {
  Tensor t = empty(shape);
  std::memset(t.mutable_data(), 0, static_cast<size_t>(t.numel()) * sizeof(float));
  return t;
}

Tensor ones(const Shape& shape) { return full(shape, 1.0f); }

Tensor scalar(float value) { return full(Shape{}, value); }

Tensor from_data(const Shape& shape, std::span<const float> values) {
  SOFTLAB_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_data: ", values.size(),
                " values for shape ", shape, " (which holds ", shape.numel(), ")");
  Tensor t = empty(shape);
  if (!values.empty()) std::memcpy(t.mutable_data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor from_vector(const Shape& shape, const std::vector<float>& values) {
  return from_data(shape, std::span<const float>(values));
}

Tensor arange(int64_t n) {
  Tensor t = empty(Shape{n});
  float* p = t.mutable_data();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(i);
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, float mean, float stddev) {
  Tensor t = empty(shape);
  float* p = t.mutable_data();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) p[i] = mean + stddev * gen.normal();
  return t;
}

Tensor uniform(const Shape& shape, Generator& gen, float low, float high) {
  Tensor t = empty(shape);
  float* p = t.mutable_data();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) p[i] = gen.uniform(low, high);
  return t;
}

Tensor trunc_normal(const Shape& shape, Generator& gen, float stddev, float lo, float hi) {
  SOFTLAB_CHECK(lo < hi, "trunc_normal: empty interval [", lo, ", ", hi, "]");
  Tensor t = empty(shape);
  float* p = t.mutable_data();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    float v;
    do v = stddev * gen.normal();
    while (v < lo || v > hi);
    p[i] = v;
  }
  return t;
}

}  // namespace softlab
