// Matmul precision: the process-wide setting, the CPU's bf16 support, and the float ->
// bfloat16 rounding used when a GEMM takes bf16 inputs.
#include "softlab/precision.hpp"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <fstream>

#include <oneapi/dnnl/dnnl.hpp>

#include "ops/bf16_bits.hpp"
#include "softlab/error.hpp"

namespace softlab {

namespace {
std::atomic<Precision> g_precision{Precision::fp32};

// oneDNN's view of the CPU, capped by ONEDNN_MAX_CPU_ISA: the ISA its kernels will use.
dnnl::cpu_isa effective_isa() { return dnnl::get_effective_cpu_isa(); }

bool has_flag(const std::string& flag) {  // from /proc/cpuinfo, for the messages only
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) return (line + " ").find(" " + flag + " ") != std::string::npos;
  return false;
}
}  // namespace

Precision parse_precision(const std::string& name, const std::string& key) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  throw Error(detail::cat(key, ": expected fp32 or bf16, got '", name, "'"));
}

const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

bool cpu_has_bf16() {
  const dnnl::cpu_isa isa = effective_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

std::string bf16_support() {
  const dnnl::cpu_isa isa = effective_isa();
  if (isa == dnnl::cpu_isa::avx512_core_amx) return "AMX-BF16";
  if (isa == dnnl::cpu_isa::avx512_core_bf16) return "AVX512-BF16";
  const bool hw = has_flag("avx512_bf16") || has_flag("amx_bf16");
  if (hw) return "none usable (the CPU has bf16 instructions, but ONEDNN_MAX_CPU_ISA caps oneDNN below them)";
  return has_flag("avx512f") ? "none (the CPU has AVX-512 but neither AVX512-BF16 nor AMX-BF16)"
                             : "none (the CPU has neither AVX512-BF16 nor AMX-BF16)";
}

void check_precision_supported(Precision p, const std::string& key) {
  if (p == Precision::bf16 && !cpu_has_bf16())
    throw Error(detail::cat(key, " = \"bf16\": this CPU cannot run bf16 matrix products, which need AVX512-BF16 or ",
                            "AMX-BF16; found ", bf16_support(), ". Use \"fp32\" (softlab does not emulate bf16)"));
}

void set_matmul_precision(Precision p) {
  check_precision_supported(p);
  g_precision.store(p, std::memory_order_relaxed);
}

Precision matmul_precision() { return g_precision.load(std::memory_order_relaxed); }

namespace detail {
void store_matmul_precision(Precision p) noexcept { g_precision.store(p, std::memory_order_relaxed); }
}  // namespace detail

using detail::bf16_bits;

float round_to_bf16(float x) {
  const uint32_t out = static_cast<uint32_t>(bf16_bits(x)) << 16;
  float y;
  std::memcpy(&y, &out, 4);
  return y;
}

void to_bf16(const float* src, unsigned short* dst, long n) {
  for (long i = 0; i < n; ++i) dst[i] = bf16_bits(src[i]);
}

}  // namespace softlab
