#pragma once
// Reverse-mode automatic differentiation on a dynamic tape.
//
// Every differentiable op computes its result and, when grad mode is on and an input
// requires grad, attaches a Node to the result that holds what its backward needs.
// Nodes carry a global sequence number, so creation order is a topological order:
// backward() gathers the nodes reachable from the root, runs them from the newest to the
// oldest, accumulates into .grad() of the leaves, and then frees the graph.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "softlab/tensor.hpp"

namespace softlab {

struct Node {
  Node();
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  virtual const char* name() const = 0;
  // Given the gradient of this node's output, returns one gradient per entry of
  // `inputs` (an undefined Tensor where that input needs none). Runs with grad mode off.
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;

  std::vector<std::shared_ptr<TensorImpl>> inputs;  // null where the input needs no grad
  uint64_t sequence = 0;

  static int64_t live_count();  // nodes alive in this process (tests: no leaked graphs)
};

bool grad_enabled();

// While alive, ops record nothing: inference allocates no graph nodes.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// A tensor saved for backward: a detached view plus the storage version at save time.
// get() throws if the storage was modified in place since.
class Saved {
 public:
  Saved() = default;
  explicit Saved(const Tensor& t);
  const Tensor& get() const;
  bool defined() const { return t_.defined(); }

 private:
  Tensor t_;
  uint64_t version_ = 0;
};

// For op implementers: true if grad mode is on and any of the inputs requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);
// Connects `node` to `out` and to the inputs that require grad; marks `out` as requiring grad.
void attach(Tensor& out, std::shared_ptr<Node> node, std::initializer_list<const Tensor*> inputs);
void attach(Tensor& out, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs);

// Runs backward from `root` with upstream gradient `grad_output` (same shape as root).
void run_backward(const Tensor& root, const Tensor& grad_output);

// What a backward pass tells an observer while it runs, so that work on finished gradients
// (data parallelism's allreduce, dist::GradientReducer) overlaps the rest of the pass.
struct BackwardHooks {
  // A leaf's .grad is complete: no node left in this pass adds to it. Called once per leaf
  // that the pass reaches, in the order the pass finishes them.
  std::function<void(TensorImpl& leaf)> leaf_done;
  // After every node's backward (e.g. to let communication progress).
  std::function<void()> after_node;
};

// Installs `hooks` for the backward passes run on this thread while the guard is alive.
class BackwardHookGuard {
 public:
  explicit BackwardHookGuard(BackwardHooks hooks);
  ~BackwardHookGuard();
  BackwardHookGuard(const BackwardHookGuard&) = delete;
  BackwardHookGuard& operator=(const BackwardHookGuard&) = delete;

 private:
  BackwardHooks hooks_;
  const BackwardHooks* previous_;
};

}  // namespace softlab
