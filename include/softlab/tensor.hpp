#pragma once
// Shape, Storage, Tensor. float32, row-major, contiguous. A Storage is a shared,
// 64-byte-aligned buffer with a version counter; a Tensor is a handle to a TensorImpl,
// which is a view (shape, offset) on a Storage plus its autograd state.
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace softlab {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::vector<int64_t> dims);

  int64_t rank() const { return static_cast<int64_t>(dims_.size()); }
  int64_t numel() const;
  // i may be negative (counts from the end); out of range throws.
  int64_t operator[](int64_t i) const;
  int64_t axis(int64_t i) const;  // normalised axis index in [0, rank)
  const std::vector<int64_t>& dims() const { return dims_; }
  bool operator==(const Shape& o) const { return dims_ == o.dims_; }
  bool operator!=(const Shape& o) const { return dims_ != o.dims_; }
  std::string str() const;  // "[2, 3]"

 private:
  std::vector<int64_t> dims_;
};
std::ostream& operator<<(std::ostream& os, const Shape& s);

class Storage {
 public:
  explicit Storage(int64_t n);  // uninitialised
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  float* data() { return ptr_; }
  const float* data() const { return ptr_; }
  int64_t size() const { return n_; }
  // Bumped by every mutable access; a saved tensor whose storage changed version
  // since it was saved is rejected in backward.
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  float* ptr_ = nullptr;
  int64_t n_ = 0;
  uint64_t version_ = 0;
};

struct Node;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  int64_t offset = 0;
  bool requires_grad = false;
  bool retain_grad = false;            // keep .grad on a non-leaf after backward
  bool graph_freed = false;            // a non-leaf whose graph a backward already consumed
  std::shared_ptr<TensorImpl> grad;    // accumulated gradient, same shape
  std::shared_ptr<Node> grad_fn;       // the op that produced this tensor (non-leaf)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t rank() const { return shape().rank(); }
  int64_t numel() const { return shape().numel(); }
  int64_t dim(int64_t i) const { return shape()[i]; }

  const float* data() const;
  float* mutable_data();  // bumps the storage version
  std::span<const float> values() const { return {data(), static_cast<size_t>(numel())}; }
  std::vector<float> to_vector() const;
  float item() const;  // the single element of a one-element tensor
  float at(std::initializer_list<int64_t> index) const;
  void set(std::initializer_list<int64_t> index, float v);

  // Autograd state.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);  // leaves only
  bool is_leaf() const;
  Tensor grad() const;  // undefined until a backward reached this tensor
  void zero_grad();     // drops the gradient (set to none)
  void retain_grad();   // keep the gradient of a non-leaf after backward
  void backward() const;                          // scalar tensors
  void backward(const Tensor& grad_output) const; // any shape, explicit upstream gradient
  Tensor detach() const;  // same storage, no autograd history
  Tensor clone() const;   // a copy of the values, no autograd history

  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  bool same_storage(const Tensor& o) const;
  std::string to_string(int64_t max_per_dim = 6) const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};
std::ostream& operator<<(std::ostream& os, const Tensor& t);

class Generator;

// Bytes held by live tensor storage (the requested sizes), now and at the peak since the
// last reset. The attention kernels allocate their scratch as tensors, so it is counted too.
struct TensorMemory {
  int64_t live_bytes = 0, peak_bytes = 0;
};
TensorMemory tensor_memory();
void reset_peak_tensor_memory();  // peak := live

// Factories. All return contiguous tensors on fresh storage.
Tensor empty(const Shape& shape);  // uninitialised
Tensor zeros(const Shape& shape);
Tensor ones(const Shape& shape);
Tensor full(const Shape& shape, float value);
Tensor scalar(float value);  // shape []
Tensor from_data(const Shape& shape, std::span<const float> values);
Tensor from_vector(const Shape& shape, const std::vector<float>& values);
Tensor arange(int64_t n);  // 0, 1, ..., n-1 as float, shape [n]
Tensor randn(const Shape& shape, Generator& gen, float mean = 0.0f, float stddev = 1.0f);
Tensor uniform(const Shape& shape, Generator& gen, float low = 0.0f, float high = 1.0f);
// Normal(0, stddev) truncated to [lo, hi] by redrawing (timm's trunc_normal_ with a = -2, b = 2
// in absolute units, which for stddev 0.02 is no truncation in practice).
Tensor trunc_normal(const Shape& shape, Generator& gen, float stddev, float lo = -2.0f, float hi = 2.0f);

}  // namespace softlab
