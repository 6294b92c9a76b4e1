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

// What a non-strict load_state did: the names it copied, the model's tensors the state does
// not have (they keep their values) and the state's tensors the model does not have (ignored).
// Each list is in order: the model's order for loaded and missing, the state's for unexpected.
struct LoadReport {
  std::vector<std::string> loaded, missing, unexpected;
  bool complete() const { return missing.empty() && unexpected.empty(); }
  // "2 missing (a, b); 1 unexpected (c)", or "complete" (long lists are cut after 10 names).
  std::string summary() const;
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  std::vector<Parameter> parameters() const;  // recursive, with the weight-decay flag
  NamedTensors named_parameters() const;      // the same as (name, tensor) pairs
  NamedTensors buffers() const;               // recursive: fixed tensors saved with the state
  NamedTensors state() const;                 // parameters, then buffers

  // One learnable parameter by its dotted name. The handle shares storage and gradient with
  // the model's tensor, so a copy of it reads and writes the parameter; it is const so that
  // assigning to it cannot replace the parameter behind the layer's back. An unknown name is
  // an Error that names it and the closest valid name (or says it is a buffer).
  const Tensor& parameter(const std::string& name) const;
  // Copies `value` into the parameter in place, so the handles held by layers and optimisers
  // stay valid; a shape mismatch is an Error naming the parameter and both shapes.
  void set_parameter(const std::string& name, const Tensor& value);

  // Copies values into this module's tensors (the handles stay valid). Every name must
  // match in both directions and every shape must agree; errors name the tensors.
  void load_state(const NamedTensors& state);
  // strict: as above. Not strict: copies the tensors whose names the model has and reports
  // the rest. A shape mismatch is an Error either way, and nothing is copied when it throws.
  LoadReport load_state(const NamedTensors& state, bool strict);
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
  // The stored tensor of a parameter (buffer = false) or buffer by dotted name, or nullptr.
  const Tensor* find(const std::string& name, bool buffer) const;
  std::vector<Parameter> params_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace softlab::nn
