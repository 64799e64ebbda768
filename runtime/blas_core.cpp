#include "runtime/blas_core.h"

#ifdef BFM_WITH_BLAS
#include <cblas.h>
#endif
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace bfm::runtime {

std::string blas_core_name() {
#ifdef OPENBLAS_VERSION
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
#else
  return "unknown";
#endif
}

void select_blas_core(char** argv) {
#if defined(OPENBLAS_VERSION) && defined(__x86_64__)
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || std::getenv("BFM_KEEP_BLAS_CORE") != nullptr) return;
  const std::string core = blas_core_name();
  if (strcasecmp(core.c_str(), "prescott") != 0) return;
  const char* better = __builtin_cpu_supports("avx512f") ? "SkylakeX" : __builtin_cpu_supports("avx2") ? "Haswell"
                                                                                                       : nullptr;
  if (better == nullptr) return;
  setenv("OPENBLAS_CORETYPE", better, 1);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the slow kernels
#else
  (void)argv;
#endif
}

}  // namespace bfm::runtime
