#include "softlab/version.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include "softlab/error.hpp"

#include "softlab/distributed.hpp"

namespace softlab {
std::string version() { return SOFTLAB_VERSION; }

std::string build_info() {
  const dnnl_version_t* v = dnnl_version();
  return detail::cat("softlab ", SOFTLAB_VERSION, "; compiler ",
#if defined(__clang__)
                     "clang ", __clang_version__,
#elif defined(__GNUC__)
                     "g++ ", __VERSION__,
#endif
                     "; oneDNN ", v->major, ".", v->minor, ".", v->patch, "; flags",
#if defined(__AVX512F__)
                     " avx512f",
#endif
#if defined(__AVX2__)
                     " avx2",
#endif
#if defined(__FMA__)
                     " fma",
#endif
#if !defined(NDEBUG)
                     " assertions",
#endif
                     dist::built_with_mpi() ? "; MPI " + dist::mpi_library_version() : std::string());
}
}  // namespace softlab
