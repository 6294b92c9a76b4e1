// The tape: node bookkeeping, grad mode, saved tensors and the backward walk.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "softlab/autograd.hpp"
#include "softlab/error.hpp"
#include "softlab/parallel.hpp"

namespace softlab {

namespace {
std::atomic<int64_t> g_live_nodes{0};
std::atomic<uint64_t> g_sequence{0};
thread_local bool g_grad_enabled = true;
thread_local const BackwardHooks* g_hooks = nullptr;
}  // namespace

BackwardHookGuard::BackwardHookGuard(BackwardHooks hooks) : hooks_(std::move(hooks)), previous_(g_hooks) {
  g_hooks = &hooks_;
}
BackwardHookGuard::~BackwardHookGuard() { g_hooks = previous_; }

Node::Node() : sequence(g_sequence.fetch_add(1, std::memory_order_relaxed)) {
  g_live_nodes.fetch_add(1, std::memory_order_relaxed);
}
Node::~Node() { g_live_nodes.fetch_sub(1, std::memory_order_relaxed); }
int64_t Node::live_count() { return g_live_nodes.load(std::memory_order_relaxed); }

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

Saved::Saved(const Tensor& t) : t_(t.detach()), version_(t.impl()->storage->version()) {}

const Tensor& Saved::get() const {
  SOFTLAB_CHECK(t_.defined(), "internal: saved tensor is undefined");
  SOFTLAB_CHECK(t_.impl()->storage->version() == version_,
                "a tensor of shape ", t_.shape(), " that backward needs was modified in place after it was "
                "saved (storage version ", version_, " -> ", t_.impl()->storage->version(), ")");
  return t_;
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {
void connect(Tensor& out, const std::shared_ptr<Node>& node) {
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = node;
}
std::shared_ptr<TensorImpl> edge(const Tensor* t) {
  return (t && t->defined() && t->requires_grad()) ? t->impl() : nullptr;
}
}  // namespace

void attach(Tensor& out, std::shared_ptr<Node> node, std::initializer_list<const Tensor*> inputs) {
  node->inputs.clear();
  node->inputs.reserve(inputs.size());
  for (const Tensor* t : inputs) node->inputs.push_back(edge(t));
  connect(out, node);
}

void attach(Tensor& out, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs) {
  node->inputs.clear();
  node->inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) node->inputs.push_back(edge(&t));
  connect(out, node);
}

namespace {
// Adds g into the .grad of `target`. The first gradient is adopted without a copy when
// nobody else holds its storage; later ones are summed in place.
void accumulate(TensorImpl& target, Tensor g, const char* op, size_t input_index) {
  if (!g.defined()) return;
  SOFTLAB_CHECK(g.shape() == target.shape, "backward of '", op, "' produced a gradient of shape ",
                g.shape(), " for input ", input_index, " of shape ", target.shape);
  if (!target.grad) {
    if (g.impl()->storage.use_count() == 1 && g.impl()->grad_fn == nullptr && !g.impl()->requires_grad &&
        g.impl().use_count() == 1) {
      target.grad = g.impl();
    } else {
      target.grad = g.clone().impl();
    }
    return;
  }
  float* dst = target.grad->storage->data() + target.grad->offset;
  target.grad->storage->bump_version();
  const float* src = g.data();
  const int64_t n = g.numel();
  parallel_for(0, n, 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] += src[i];
  });
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_output) {
  SOFTLAB_CHECK(root.defined(), "backward on an undefined tensor");
  SOFTLAB_CHECK(root.requires_grad(), "backward on a tensor that does not require grad (shape ", root.shape(),
                "): no input of the computation had requires_grad set, or it ran under NoGradGuard");
  NoGradGuard no_grad;

  // Gather every non-leaf tensor reachable from the root.
  std::vector<std::shared_ptr<TensorImpl>> order;
  std::unordered_set<TensorImpl*> seen;
  std::vector<std::shared_ptr<TensorImpl>> stack{root.impl()};
  seen.insert(root.impl().get());
  while (!stack.empty()) {
    auto t = std::move(stack.back());
    stack.pop_back();
    SOFTLAB_CHECK(!t->graph_freed, "backward through a graph a second time: the graph behind a tensor of shape ",
                  t->shape, " was freed by an earlier backward(); recompute the forward pass");
    if (!t->grad_fn) continue;
    for (const auto& in : t->grad_fn->inputs)
      if (in && seen.insert(in.get()).second) stack.push_back(in);
    order.push_back(std::move(t));
  }
  // Newest node first: an op's node is always created after its inputs' nodes.
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a->grad_fn->sequence > b->grad_fn->sequence; });

  // With a leaf_done hook: how many nodes of this pass still add to each leaf.
  const BackwardHooks* hooks = g_hooks;
  std::unordered_map<TensorImpl*, int> pending;
  if (hooks && hooks->leaf_done)
    for (const auto& t : order)
      for (const auto& in : t->grad_fn->inputs)
        if (in && !in->grad_fn) ++pending[in.get()];

  // A node done (or skipped): the leaves it fed that no later node adds to are complete.
  auto node_done = [&](const Node& node) {
    if (!hooks) return;
    if (hooks->leaf_done)
      for (const auto& in : node.inputs) {
        if (!in) continue;
        const auto it = pending.find(in.get());
        if (it != pending.end() && --it->second == 0) hooks->leaf_done(*in);
      }
    if (hooks->after_node) hooks->after_node();
  };

  accumulate(*root.impl(), grad_output, "backward()", 0);
  for (auto& t : order) {
    std::shared_ptr<Node> node = std::move(t->grad_fn);  // frees the graph as we go
    t->graph_freed = true;
    Tensor g(t->grad);
    if (!t->retain_grad) t->grad.reset();
    if (!g.defined()) {  // no path from the root reached this output
      node_done(*node);
      continue;
    }
    std::vector<Tensor> grads = node->backward(g);
    g = Tensor();
    SOFTLAB_ASSERT(grads.size() == node->inputs.size(), "backward of '", node->name(), "' returned ",
                   grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!node->inputs[i]) continue;
      accumulate(*node->inputs[i], std::move(grads[i]), node->name(), i);
    }
    node_done(*node);
  }
}

}  // namespace softlab
