// The memory estimate of memory_estimate.hpp. It counts what grows with the config's sizes
// (parameters with their gradients and optimiser state, the activations a step keeps for
// backward, generated data sets) and leaves out what does not (code, thread stacks, oneDNN's
// scratch, image data sets of at most a few hundred MB). It errs low: a config is refused only
// when it cannot fit, never because the estimate was generous.
#include "config/memory_estimate.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "softlab/data.hpp"
#include "softlab/error.hpp"
#include "softlab/nn/layers.hpp"

namespace softlab::config_detail {

namespace {

constexpr double kFloat = 4.0;  // bytes of a float32

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A cgroup memory limit: a byte count, or "max" / a huge v1 value when there is none.
uint64_t limit_from(const std::string& text) {
  if (text.empty() || text.rfind("max", 0) == 0) return 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  return end == text.c_str() ? 0 : static_cast<uint64_t>(v);
}

// The tightest memory limit on this process's cgroup and its ancestors (v2, then v1), or 0.
uint64_t cgroup_memory_limit() {
  uint64_t best = 0;
  std::istringstream lines(read_text("/proc/self/cgroup"));
  std::string line;
  while (std::getline(lines, line)) {
    // "0::/path" (v2) or "4:memory:/path" (v1)
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const bool v2 = controllers.empty();
    if (!v2 && (',' + controllers + ',').find(",memory,") == std::string::npos) continue;
    for (std::string path = line.substr(b + 1);;) {  // a limit anywhere above applies too
      const uint64_t limit = limit_from(read_text(v2 ? "/sys/fs/cgroup" + path + "/memory.max"
                                                     : "/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"));
      if (limit > 0 && (best == 0 || limit < best)) best = limit;
      if (path.empty() || path == "/") break;
      const auto slash = path.find_last_of('/');
      path = slash == 0 ? "/" : path.substr(0, slash);
    }
  }
  return best;
}

double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

std::string gib_text(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, bytes >= 10.0 * 1024 * 1024 * 1024 ? "%.0f GiB" : "%.1f GiB", gib(bytes));
  return buf;
}

SyntheticOptions synthetic_from(const json& r) {
  const json& d = r["data"];
  SyntheticOptions o;
  o.task = d["dataset"].get<std::string>().substr(std::string("synthetic:").size());
  o.train_length = d["train_length"].get<int64_t>();
  o.eval_lengths = d["eval_lengths"].get<std::vector<int64_t>>();
  o.keys = d["keys"].get<int64_t>();
  o.values = d["values"].get<int64_t>();
  o.bins = d["bins"].get<int64_t>();
  o.modulus = d["modulus"].get<int64_t>();
  o.train_size = d["train_size"].get<int64_t>();
  o.test_size = d["test_size"].get<int64_t>();
  return o;
}

}  // namespace

MemoryEstimate estimate_memory(const json& r) {
  const json& m = r["model"];
  const json& t = r["train"];
  const double D = static_cast<double>(m["dim"].get<int64_t>());
  const double L = static_cast<double>(m["depth"].get<int64_t>());
  const double H = std::round(m["mlp_ratio"].get<double>() * D);  // the MLP's hidden width
  const double B = static_cast<double>(t["batch_size"].get<int64_t>());
  const double eval_B = static_cast<double>(t["eval_batch_size"].get<int64_t>());
  const std::string dataset = r["data"]["dataset"].get<std::string>();
  const bool seq = is_synthetic(dataset);

  double tokens = 0, eval_tokens = 0, classes = 0, embed = 0, data = 0, stem_acts = 0;
  if (seq) {
    const SyntheticOptions o = synthetic_from(r);
    tokens = static_cast<double>(synthetic_train_length(o));
    eval_tokens = static_cast<double>(synthetic_max_length(o));
    classes = static_cast<double>(synthetic_classes(o));
    embed = static_cast<double>(synthetic_vocab(o)) * D + (m["positions"] == "learned" ? eval_tokens * D : 0.0);
    // Tokens and targets, int32 each; a size of 0 is the task's default (at most 20000
    // training and 1000 test sequences; modadd: its p*p pairs).
    const double p = static_cast<double>(o.modulus);
    const double train = o.task == "modadd" ? p * p : o.train_size > 0 ? static_cast<double>(o.train_size) : 20000.0;
    const double test = o.test_size > 0 ? static_cast<double>(o.test_size) : 1000.0;
    data = 8.0 * (train * tokens + test * (eval_tokens * (1.0 + static_cast<double>(o.eval_lengths.size()))));
  } else {
    const double side = static_cast<double>(m["image_size"].get<int64_t>() / m["patch_size"].get<int64_t>());
    const double patch = static_cast<double>(m["patch_size"].get<int64_t>());
    tokens = eval_tokens = side * side + (m["pool"] == "cls" ? 1.0 : 0.0);
    classes = 100.0;  // the most of the image data sets
    embed = static_cast<double>(m["channels"].get<int64_t>()) * patch * patch * D + D + tokens * D + D;
    if (m["stem"] == "conv") {
      // The convolutional stem instead of the patch projection: per stage a 3x3 conv and a
      // LayerNorm; kept for backward per image, the windows and three maps of the stage's
      // output (conv, norm, GELU).
      int64_t in = m["channels"].get<int64_t>(), out = m["stem_width"].get<int64_t>(), size = m["image_size"].get<int64_t>();
      embed = tokens * D + D;
      for (int64_t s = nn::ConvStem::stages(size, static_cast<int64_t>(side)); s > 0; --s) {
        size = (size + 1) / 2;
        embed += 9.0 * static_cast<double>(in * out) + 3.0 * static_cast<double>(out);
        stem_acts += static_cast<double>(size * size) * (9.0 * static_cast<double>(in) + 3.0 * static_cast<double>(out));
        in = out;
        out *= 2;
      }
      embed += static_cast<double>(in) * D + D;
    }
  }
  if (m["num_classes"].get<int64_t>() > 0) classes = static_cast<double>(m["num_classes"].get<int64_t>());

  MemoryEstimate e;
  // A block: qkv and output projections, the MLP, two LayerNorms (biases included).
  double block = 4.0 * D * D + 4.0 * D + 2.0 * D * H + H + D + 4.0 * D;
  // The extras: the gate's linear map, the hybrid norm's affine, the value conv's kernels (at
  // most one per channel) and bias.
  if (m["attn_gate"].get<bool>()) block += D * D + D;
  if (m["attn_out_norm"].get<bool>()) block += 2.0 * D;
  if (!m["value_conv"].is_null()) block += static_cast<double>(m["value_conv"].get<int64_t>() * m["value_conv"].get<int64_t>()) * D + D;
  e.parameters = L * block + embed + 2.0 * D + D * classes + classes;
  // Weights and gradients, AdamW's two moments (SGD's one), and the EMA copy when on.
  const double copies = 2.0 + (t["optimizer"]["type"] == "sgd" ? 1.0 : 2.0) + (t["ema"].get<double>() > 0 ? 1.0 : 0.0);
  e.parameter_bytes = copies * e.parameters * kFloat;
  // Kept for backward, per token and block: the LayerNorm outputs, q, k, v, the attention
  // output and projection, the residual sums (about 8 x dim), the MLP's hidden layer before
  // and after GELU (2 x hidden). The fused attention kernels keep no N x N scores.
  const double train_acts = B * (tokens * (L * (8.0 * D + 2.0 * H) + classes) + stem_acts);
  // Evaluation keeps nothing for backward: about one block's worth at a time.
  const double eval_acts = eval_B * eval_tokens * (4.0 * D + 2.0 * H + classes);
  e.activation_bytes = std::max(train_acts, eval_acts) * kFloat;
  e.data_bytes = data;
  return e;
}

uint64_t machine_memory_bytes() {
  // Read once: every resolve checks, and a sweep resolves each of its runs.
  static const uint64_t machine = [] {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    uint64_t bytes = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
    const uint64_t limit = cgroup_memory_limit();
    if (limit > 0 && (bytes == 0 || limit < bytes)) bytes = limit;
    return bytes;
  }();
  return machine;
}

void check_memory(const json& r) {
  const uint64_t machine = machine_memory_bytes();
  if (machine == 0) return;  // nothing to compare with
  const MemoryEstimate e = estimate_memory(r);
  if (e.total() <= static_cast<double>(machine)) return;
  const json& m = r["model"];
  const json& t = r["train"];
  char params[32];
  std::snprintf(params, sizeof params, "%.3g", e.parameters);
  throw Error(detail::cat(
      "model.dim = ", m["dim"].dump(), ", model.depth = ", m["depth"].dump(), ", model.mlp_ratio = ",
      m["mlp_ratio"].dump(), ", train.batch_size = ", t["batch_size"].dump(), ": the run needs about ",
      gib_text(e.total()), " of memory (", params, " parameters with gradients and optimiser state: ",
      gib_text(e.parameter_bytes), "; activations: ", gib_text(e.activation_bytes),
      e.data_bytes > 0 ? "; generated data: " + gib_text(e.data_bytes) : std::string(), "), more than this machine's ",
      gib_text(static_cast<double>(machine)),
      " (physical memory, or the cgroup limit if lower); make the model or the batch smaller"));
}

}  // namespace softlab::config_detail
