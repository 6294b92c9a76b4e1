#pragma once
// The precision of matrix products: fp32, or bf16 inputs with f32 accumulation and output
// (mixed precision, the CPU analogue of torch.autocast(dtype=bfloat16)).
//
// In bf16 every product that goes through softlab's GEMM (linear layers, matmul, and so
// the heads' linear layers and every product of backward), and the q·k and p·v products
// of the fused attention kernel (forward and backward), round their two operands to
// bfloat16 and accumulate and write in f32. Everything else stays f32: master weights,
// gradients, optimizer state, layer norm, the attention maps and their row statistics,
// the losses and every reduction. docs/performance.md lists what runs in which precision.
//
// bf16 needs hardware for it (AVX512-BF16 or AMX-BF16, as oneDNN sees it); there is no
// slow emulation: asking for bf16 where the CPU lacks it is an error (exit 2).
#include <string>

namespace softlab {

enum class Precision { fp32, bf16 };

// "fp32" | "bf16"; anything else is an Error naming `key`.
Precision parse_precision(const std::string& name, const std::string& key = "train.precision");
const char* precision_name(Precision p);

// True when oneDNN can run bf16 products on this CPU's own instructions. The environment
// variable ONEDNN_MAX_CPU_ISA (oneDNN's own cap) is honoured, so a test can pretend a
// CPU without bf16.
bool cpu_has_bf16();
// One line on the CPU's bf16 support: "AMX-BF16", "AVX512-BF16", or what is missing.
std::string bf16_support();
// Throws softlab::Error (exit 2) naming `key` and what the CPU lacks when p is bf16 and
// the CPU cannot run it. fp32 always passes.
void check_precision_supported(Precision p, const std::string& key = "train.precision");

// The process-wide precision of GEMMs. set_matmul_precision checks support first.
void set_matmul_precision(Precision p);
Precision matmul_precision();

namespace detail {
void store_matmul_precision(Precision p) noexcept;  // no support check
}

// Sets the precision for a scope and restores the previous one.
class PrecisionGuard {
 public:
  explicit PrecisionGuard(Precision p) : saved_(matmul_precision()) { set_matmul_precision(p); }
  ~PrecisionGuard() { detail::store_matmul_precision(saved_); }  // was valid when saved
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
  Precision saved_;
};

// Round-to-nearest-even float -> bfloat16 (the upper 16 bits), NaN kept a quiet NaN;
// the same rounding oneDNN and PyTorch use. For tests and the kernels' conversions.
void to_bf16(const float* src, unsigned short* dst, long n);
float round_to_bf16(float x);

}  // namespace softlab
