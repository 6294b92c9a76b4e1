#pragma once
// Module: a named tree of parameters, buffers and children with a train/eval switch and
// state save/load. Parameter names are dotted paths ("blocks.0.attn.qkv.weight") in
// registration order, which is also the order checkpoints and optimisers use.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "softlab/tensor.hpp"

namespace softlab::nn {

struct Parameter {
  std::string name;
  Tensor tensor;
  bool decay = true;  // weight decay applies (false for biases, norm gains, embeddings' positions, tokens)
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  std::vector<Parameter> parameters() const;  // recursive
  NamedTensors buffers() const;               // recursive: fixed tensors saved with the state
  NamedTensors state() const;                 // parameters, then buffers
  // Copies values into this module's tensors (the handles stay valid). Every name must
  // match in both directions and every shape must agree; errors name the tensor.
  void load_state(const NamedTensors& state);
  int64_t num_parameters() const;
  // Parameter count per direct child (and "(own)" for this module's own parameters).
  std::vector<std::pair<std::string, int64_t>> parameter_counts() const;

 protected:
  Tensor register_parameter(const std::string& name, Tensor t, bool decay = true);
  Tensor register_buffer(const std::string& name, Tensor t);
  template <class M>
  M* register_module(const std::string& name, std::unique_ptr<M> m) {
    M* raw = m.get();
    children_.emplace_back(name, std::move(m));
    return raw;
  }

 private:
  void collect(const std::string& prefix, std::vector<Parameter>* params, NamedTensors* bufs) const;
  std::vector<Parameter> params_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace softlab::nn
